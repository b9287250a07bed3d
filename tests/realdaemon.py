"""A real ``energyhubd run`` in the router namespace of a ``MiniLab``, for end-to-end tests.

``RealDaemons`` starts daemons from a configuration document written under the test's
``tmp_path`` and stops every one it started in ``close()`` (the ``real_daemons`` fixture in
``tests/conftest.py`` calls it also when the test fails), then deletes the table the daemon
leaves in place (it fails closed), so the next test in the module starts from a clean router.

Every path the daemon writes is under ``tmp_path``: the socket, the state directory, the log,
the pid file (the default, /var/run/energyhubd.pid, would be the host's), the WAN resolv file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from energyhub_lab import internet, netns
from energyhub_lab.internet import MiniLab
from energyhubd.control.client import ControlError, call

# Generous for a loaded 2-core machine: a wait returns as soon as its condition holds.
START_WAIT = 45.0


def wait_for(predicate: Callable[[], Any], timeout: float, message: str | Callable[[], str]) -> Any:
    """The first true value of ``predicate``, asked every 0.2 s; a control call that fails or
    a socket not there yet counts as "not yet". Fails the test with ``message`` at the end (a
    callable is asked then: a log tail taken at the failure, not at the start of the wait)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (ControlError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(message if isinstance(message, str) else message())
        time.sleep(0.2)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class RealDaemon:
    proc: subprocess.Popen[bytes]
    socket: str
    log: Path
    state: Path
    resolv: Path

    def call(self, method: str, args: dict[str, Any] | None = None, timeout: float = 90) -> Any:
        return call(self.socket, method, args, timeout=timeout)

    def status(self, timeout: float = 5) -> dict[str, Any]:
        result: dict[str, Any] = self.call("status", timeout=timeout)
        return result

    def applied(self) -> bool:
        """The policy is applied; a daemon that has exited fails the test at once."""
        if self.proc.poll() is not None:
            pytest.fail(f"energyhubd exited with {self.proc.returncode}; log:\n{tail(self.log)}")
        return bool(self.status()["policy"]["state"] == "applied")

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``energyhubctl`` against this daemon's socket (run from this interpreter)."""
        cmd = [sys.executable, "-m", "energyhubd.ctl", "--socket", self.socket, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class RealDaemons:
    """Starts daemons in ``lab.router``, one after another, all sharing ``tmp_path``: a daemon
    started again finds the state the previous one left."""

    def __init__(self, lab: MiniLab, tmp_path: Path) -> None:
        self.lab = lab
        self.tmp_path = tmp_path
        self.socket = str(tmp_path / "energyhubd.sock")
        self.state = tmp_path / "state"
        self.resolv = tmp_path / "wan-resolv.conf"
        self.log = tmp_path / "energyhubd.log"
        self.started: list[RealDaemon] = []

    def config(self, **sections: Any) -> dict[str, Any]:
        """A linux configuration on the MiniLab's ``wan``/``lan`` with the lab's DNS as the
        fallback; ``sections`` replace whole top-level sections."""
        base: dict[str, Any] = {
            "platform": "linux",
            "state_dir": str(self.state),
            "wan": {"device": "wan"},
            "lan": {"device": "lan"},
            "control": {"socket": self.socket},
            "dns": {"fallback": [internet.DNS_IP]},
        }
        return {**base, **sections}

    def start(
        self,
        config: dict[str, Any],
        *,
        wan_dns: str | None = internet.CUSTOMER_RESOLVER,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> RealDaemon:
        """Start ``energyhubd run`` with ``config``. ``wan_dns``: the server in the resolv
        file the daemon is given, as udhcpc would write it (None: no ``--resolv-file``).
        ``wrap``: turns the daemon's command into the one to run in the router namespace
        (it must exec the daemon in the end). Returns once the daemon has applied its
        policy."""
        path = self.tmp_path / "config.json"
        path.write_text(json.dumps(config))
        cmd = [sys.executable, "-m", "energyhubd.cli", "run", "--config", str(path)]
        cmd += ["--pid-file", str(self.tmp_path / "energyhubd.pid")]
        if wan_dns is not None:
            self.resolv.write_text(f"nameserver {wan_dns}\n")
            cmd += ["--resolv-file", str(self.resolv)]
        if wrap is not None:
            cmd = wrap(cmd)
        with open(self.log, "ab") as out:
            proc = subprocess.Popen(
                netns.ns_cmd(self.lab.router, cmd),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        daemon = RealDaemon(proc, self.socket, self.log, self.state, self.resolv)
        self.started.append(daemon)
        wait_for(
            daemon.applied,
            START_WAIT,
            lambda: f"energyhubd did not apply its policy; log:\n{tail(self.log)}",
        )
        return daemon

    def close(self) -> None:
        for daemon in self.started:
            daemon.stop()
        # The daemon leaves its table in place (fail closed); the next test starts clean.
        netns.ns_run(self.lab.router, ["nft", "delete", "table", "inet", "energyhub"], check=False)

"""Thin wrappers around iproute2 for building lab namespaces.

Every call names the namespace it acts in (``ip -n NS``): nothing here changes the root
namespace's addresses, routes or firewall. Creating a veth with both ends placed directly in
lab namespaces leaves no trace in the root namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


class LabError(Exception):
    pass


def run(cmd: Sequence[str], check: bool = True, timeout: float = 30) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def ns_cmd(ns: str, cmd: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def ns_run(ns: str, cmd: Sequence[str], check: bool = True, timeout: float = 30) -> str:
    return run(ns_cmd(ns, cmd), check=check, timeout=timeout)


def spawn_logged(
    ns: str, cmd: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in ``ns``, detached (own session), output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            ns_cmd(ns, cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )


def ip(ns: str, *args: str, check: bool = True) -> str:
    return run(["ip", "-n", ns, *args], check=check)


def list_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def add_namespace(ns: str) -> None:
    run(["ip", "netns", "add", ns])
    ip(ns, "link", "set", "lo", "up")


def veth(ns_a: str, name_a: str, ns_b: str, name_b: str, mac_b: str | None = None) -> None:
    cmd = ["ip", "-n", ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b]
    if mac_b:
        cmd += ["address", mac_b]
    cmd += ["netns", ns_b]
    run(cmd)
    ip(ns_a, "link", "set", name_a, "up")
    ip(ns_b, "link", "set", name_b, "up")


def bridge(ns: str, name: str, ports: Sequence[str]) -> None:
    ip(ns, "link", "add", name, "type", "bridge")
    for port in ports:
        ip(ns, "link", "set", port, "master", name)
    ip(ns, "link", "set", name, "up")


def pids_in(ns: str) -> list[int]:
    out = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def kill_namespace_processes(ns: str, grace: float = 3.0) -> None:
    """SIGTERM everything running in ``ns``, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = pids_in(ns)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if process_alive(p)]
            time.sleep(0.05)
        if not pids:
            return


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return False


def delete_namespace(ns: str) -> None:
    kill_namespace_processes(ns)
    run(["ip", "netns", "del", ns], check=False)

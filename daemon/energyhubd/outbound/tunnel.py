"""Supervise the reverse ssh tunnel to the service gateway (support and manual updates).

The tunnel is one ``ssh -N -R <remote_port>:127.0.0.1:22`` child (OpenSSH on Linux, dropbear's
``dbclient`` on OpenWrt). The gateway's host key is pinned through a generated known_hosts
file with StrictHostKeyChecking, never trusted on first use. When the child exits the
supervisor restarts it after a capped, jittered backoff; ``on_demand`` tunnels close at their
expiry.

The supervisor is the package's one child-process shape (``energyhubd.supervisor``) plus the
tunnel's expiry deadline: no thread; the owner's event loop (``LoopWatch``) watches
``fileno()`` and calls ``on_exit()``, and calls ``tick()`` when ``next_deadline()`` passed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from energyhubd.backoff import Backoff
from energyhubd.config.sections.outbound import TunnelSettings
from energyhubd.supervisor import ChildProcess

STABLE_AFTER = 30.0  # a child that ran this long resets the backoff
KEEPALIVE = 30  # ServerAliveInterval: a dead path is noticed within ~3 intervals


@dataclass(frozen=True)
class TunnelTarget:
    """Where the tunnel goes and what it exposes; ports configurable for the lab."""

    gateway_address: str
    gateway_port: int = 2443
    local_host: str = "127.0.0.1"
    local_port: int = 22


def known_hosts_line(address: str, port: int, host_key: str) -> str:
    """OpenSSH/dropbear known_hosts entry; non-22 ports use the ``[host]:port`` form."""
    host = address if port == 22 else f"[{address}]:{port}"
    return f"{host} {host_key}\n"


def detect_client() -> str:
    """``openssh`` when ``ssh`` exists, else ``dropbear`` (OpenWrt's ``dbclient``)."""
    if shutil.which("ssh"):
        return "openssh"
    return "dropbear"


def build_argv(
    client: str,
    settings: TunnelSettings,
    target: TunnelTarget,
    known_hosts: str,
    connect_timeout: int = 10,
) -> list[str]:
    """The command line for ``client`` (``openssh`` or ``dropbear``)."""
    forward = f"{settings.remote_port}:{target.local_host}:{target.local_port}"
    destination = f"{settings.user}@{target.gateway_address}"
    if client == "openssh":
        return [
            "ssh",
            "-N",
            "-T",
            "-F",
            "/dev/null",
            "-R",
            forward,
            "-p",
            str(target.gateway_port),
            "-i",
            settings.key_file,
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "UpdateHostKeys=no",
            "-o",
            "CheckHostIP=no",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            f"ServerAliveInterval={KEEPALIVE}",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            f"ConnectTimeout={connect_timeout}",
            destination,
        ]
    if client == "dropbear":
        # dbclient reads $HOME/.ssh/known_hosts (the supervisor points HOME at its own dir)
        # and refuses unknown or changed host keys unless -y is given, which it never is.
        return [
            "dbclient",
            "-N",
            "-T",
            "-R",
            forward,
            "-p",
            str(target.gateway_port),
            "-i",
            settings.key_file,
            "-K",
            str(KEEPALIVE),
            "-o",
            "ExitOnForwardFailure=yes",
            destination,
        ]
    raise ValueError(f"unknown ssh client {client!r}")


class TunnelSupervisor(ChildProcess):
    """One reverse tunnel: start, watch, restart with backoff, expire.

    States: ``disabled`` (mode disabled), ``idle`` (on_demand, not requested), ``running``,
    ``backoff`` (waiting to restart), ``stopped``.
    """

    name = "ssh"

    def __init__(
        self,
        settings: TunnelSettings,
        target: TunnelTarget,
        state_dir: str,
        *,
        client: str | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = lambda _m: None,
        extra_env: dict[str, str] | None = None,
        command_prefix: Sequence[str] = (),
    ) -> None:
        if settings.mode != "disabled" and not settings.host_key:
            raise ValueError("tunnel.host_key is required when the tunnel is enabled")
        super().__init__(
            Backoff(backoff_initial, backoff_max),
            stable_after=STABLE_AFTER,
            clock=clock,
            log=lambda m: log(f"tunnel: {m}"),
        )
        self.settings = settings
        self.target = target
        self.dir = Path(state_dir)
        self.client = client or detect_client()
        self.name = self.client
        self._wall = wall_clock
        self._env = extra_env or {}
        # e.g. ("ip", "netns", "exec", NS) in the lab; it must exec, so the pid stays ssh's.
        self._prefix = list(command_prefix)
        self._expires_at: float | None = None
        self.state = "disabled" if settings.mode == "disabled" else "idle"

    # -- files -------------------------------------------------------------------------
    @property
    def known_hosts(self) -> Path:
        if self.client == "dropbear":
            return self.dir / "home" / ".ssh" / "known_hosts"
        return self.dir / "known_hosts"

    def _write_known_hosts(self) -> None:
        assert self.settings.host_key
        path = self.known_hosts
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        address, key = self.target.gateway_address, self.settings.host_key
        text = known_hosts_line(address, self.target.gateway_port, key)
        if self.client == "dropbear":
            # Older dbclient matches the bare host name whatever the port; the same pinned
            # key under both spellings keeps the check strict with either behaviour.
            text += known_hosts_line(address, 22, key)
        tmp.write_text(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def argv(self) -> list[str]:
        argv = build_argv(self.client, self.settings, self.target, str(self.known_hosts))
        return [*self._prefix, *argv]

    # -- control -----------------------------------------------------------------------
    def start(self) -> None:
        """Begin supervising; ``always`` starts the tunnel now, ``on_demand`` waits."""
        if self.settings.mode == "always":
            super().start()

    def open(self, hours: float | None = None) -> None:
        """On demand: run the tunnel until ``hours`` (default ``expiry_hours``) from now."""
        if self.settings.mode == "disabled":
            raise RuntimeError("the support tunnel is disabled in the configuration")
        if self.settings.mode == "on_demand":
            span = (hours if hours is not None else self.settings.expiry_hours) * 3600.0
            self._expires_at = self._clock() + span
        if self.proc is None:
            self.backoff.reset()
            self.restart_at = None
        super().start()

    def close(self, reason: str = "closed") -> None:
        """Stop the tunnel; an ``always`` tunnel stays down until ``open``/``start``."""
        self._expires_at = None
        self.halt(reason)
        self.state = "idle" if self.settings.mode != "disabled" else "disabled"

    def stop(self) -> None:
        """Daemon shutdown."""
        self.close("daemon stopping")
        self.state = "stopped"

    # -- event interface -----------------------------------------------------------------
    def exited(self, code: int | None, ran: float) -> None:
        self.last_exit = f"ssh exited with status {code} after {ran:.0f} s"
        self._log(self.last_exit)
        self.state = "backoff" if self.wanted else "idle"

    def next_deadline(self) -> float | None:
        """The monotonic time at which ``tick`` must run (restart or expiry), or None."""
        times = [t for t in (self.restart_at, self._expires_at) if t is not None]
        return min(times) if times else None

    def tick(self) -> None:
        if self._expires_at is not None and self._clock() >= self._expires_at:
            self._log("on-demand tunnel expired")
            self.close("expired")
            return
        super().tick()

    # -- status ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self._clock()
        result: dict[str, Any] = {
            "mode": self.settings.mode,
            "state": self.state,
            "gateway": f"{self.target.gateway_address}:{self.target.gateway_port}",
            "remote_port": self.settings.remote_port,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "pid": self.proc.pid if self.proc else None,
        }
        if self._expires_at is not None:
            result["expires_in_s"] = max(0, round(self._expires_at - now))
            result["expires_at"] = round(self._wall() + (self._expires_at - now))
        if self.restart_at is not None:
            result["restart_in_s"] = max(0.0, round(self.restart_at - now, 1))
        if self.started_at is not None and self.proc is not None:
            result["up_for_s"] = round(now - self.started_at)
        return result

    # -- internals ---------------------------------------------------------------------
    def popen(self) -> subprocess.Popen[bytes]:
        self._write_known_hosts()
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **self._env}
        if self.client == "dropbear":
            env["HOME"] = str(self.dir / "home")
        with open(self.dir / "tunnel.log", "ab") as log:
            return subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )

    def spawn(self) -> None:
        super().spawn()
        if self.proc is None:
            self.state = "backoff"
            return
        self.state = "running"
        self._log(f"started {self.client} pid {self.proc.pid}")

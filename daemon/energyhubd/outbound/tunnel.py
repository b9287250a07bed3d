"""Supervise the reverse ssh tunnel to the service gateway (support and manual updates).

The tunnel is one ``ssh -N -R <remote_port>:127.0.0.1:22`` child (OpenSSH on Linux, dropbear's
``dbclient`` on OpenWrt). The gateway's host key is pinned through a generated known_hosts
file with StrictHostKeyChecking, never trusted on first use. When the child exits the
supervisor restarts it after a capped, jittered backoff; ``on_demand`` tunnels close at their
expiry.

Event-driven, no thread: the owner's event loop watches ``fileno()`` (a pidfd, readable when
the child exits) and calls ``on_exit()``; it calls ``tick()`` when ``next_deadline()``
(monotonic seconds) has passed. Every method is quick and never blocks.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from energyhubd.config.sections.outbound import TunnelSettings

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


class TunnelSupervisor:
    """One reverse tunnel: start, watch, restart with backoff, expire.

    States: ``disabled`` (mode disabled), ``idle`` (on_demand, not requested), ``running``,
    ``backoff`` (waiting to restart), ``stopped``.
    """

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
        self.settings = settings
        self.target = target
        self.dir = Path(state_dir)
        self.client = client or detect_client()
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._clock = clock
        self._wall = wall_clock
        self._log = log
        self._env = extra_env or {}
        # e.g. ("ip", "netns", "exec", NS) in the lab; it must exec, so the pid stays ssh's.
        self._prefix = list(command_prefix)
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._started_at: float | None = None
        self._restart_at: float | None = None
        self._expires_at: float | None = None
        self._delay = backoff_initial
        self._wanted = False
        self.restarts = 0
        self.last_exit: str | None = None
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
            self._wanted = True
            self._spawn()

    def open(self, hours: float | None = None) -> None:
        """On demand: run the tunnel until ``hours`` (default ``expiry_hours``) from now."""
        if self.settings.mode == "disabled":
            raise RuntimeError("the support tunnel is disabled in the configuration")
        if self.settings.mode == "on_demand":
            span = (hours if hours is not None else self.settings.expiry_hours) * 3600.0
            self._expires_at = self._clock() + span
        self._wanted = True
        if self._proc is None:
            self._delay = self.backoff_initial
            self._spawn()

    def close(self, reason: str = "closed") -> None:
        """Stop the tunnel; an ``always`` tunnel stays down until ``open``/``start``."""
        self._wanted = False
        self._expires_at = None
        self._restart_at = None
        self._kill()
        self.last_exit = reason
        self.state = "idle" if self.settings.mode != "disabled" else "disabled"

    def stop(self) -> None:
        """Daemon shutdown."""
        self.close("daemon stopping")
        self.state = "stopped"

    # -- event loop interface ------------------------------------------------------------
    def fileno(self) -> int | None:
        """A pidfd that becomes readable when the ssh child exits; None when none runs."""
        return self._pidfd

    def on_exit(self) -> None:
        """The child exited: reap it and schedule a restart with capped backoff."""
        proc = self._proc
        if proc is None or proc.poll() is None:
            return
        code = proc.returncode
        ran = self._clock() - (self._started_at or self._clock())
        self._close_pidfd()
        self._proc = None
        self.last_exit = f"ssh exited with status {code} after {ran:.0f} s"
        self._log(f"tunnel: {self.last_exit}")
        if not self._wanted:
            self.state = "idle"
            return
        if ran >= STABLE_AFTER:
            self._delay = self.backoff_initial
        delay = min(self._delay, self.backoff_max) * random.uniform(0.8, 1.0)
        self._delay = min(self._delay * 2, self.backoff_max)
        self._restart_at = self._clock() + delay
        self.state = "backoff"

    def next_deadline(self) -> float | None:
        """The monotonic time at which ``tick`` must run (restart or expiry), or None."""
        times = [t for t in (self._restart_at, self._expires_at) if t is not None]
        return min(times) if times else None

    def tick(self) -> None:
        now = self._clock()
        if self._expires_at is not None and now >= self._expires_at:
            self._log("tunnel: on-demand tunnel expired")
            self.close("expired")
            return
        if self._restart_at is not None and now >= self._restart_at and self._wanted:
            self._restart_at = None
            self.restarts += 1
            self._spawn()

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
            "pid": self._proc.pid if self._proc else None,
        }
        if self._expires_at is not None:
            result["expires_in_s"] = max(0, round(self._expires_at - now))
            result["expires_at"] = round(self._wall() + (self._expires_at - now))
        if self._restart_at is not None:
            result["restart_in_s"] = max(0.0, round(self._restart_at - now, 1))
        if self._started_at is not None and self._proc is not None:
            result["up_for_s"] = round(now - self._started_at)
        return result

    # -- internals ---------------------------------------------------------------------
    def _spawn(self) -> None:
        self._write_known_hosts()
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **self._env}
        if self.client == "dropbear":
            env["HOME"] = str(self.dir / "home")
        log_path = self.dir / "tunnel.log"
        with open(log_path, "ab") as log:
            try:
                self._proc = subprocess.Popen(
                    self.argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                self._proc = None
                self.last_exit = f"cannot start {self.client}: {exc.strerror or exc}"
                self._restart_at = self._clock() + min(self._delay, self.backoff_max)
                self._delay = min(self._delay * 2, self.backoff_max)
                self.state = "backoff"
                return
        self._pidfd = os.pidfd_open(self._proc.pid)
        self._started_at = self._clock()
        self.state = "running"
        self._log(f"tunnel: started {self.client} pid {self._proc.pid}")

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=2)
        self._proc = None
        self._started_at = None
        self._close_pidfd()

"""One shape for every child process the daemon runs (dnsmasq, the ssh tunnel).

``ChildProcess`` is the supervisor: start, notice the exit, restart after a capped, jittered
backoff (``energyhubd.backoff``), stop. It has no thread and never sleeps or polls: it exposes
``fileno()`` (a pidfd, readable when the child exits) and ``next_deadline()`` (monotonic
seconds), and its owner calls ``on_exit()`` and ``tick()`` when those fire. ``LoopWatch``
is that owner on the daemon's event loop (``add_reader`` + ``call_later``); tests may drive
the same four calls with ``select`` of their own.

Subclasses say how to start the child (``popen``) and may add deadlines of their own (the
tunnel's expiry) by extending ``next_deadline`` and ``tick``. Every method is quick.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable

from energyhubd.backoff import Backoff
from energyhubd.loop import EventLoop, Timer


class ChildProcess:
    """One supervised child. ``wanted``: it should run (and be restarted when it dies)."""

    name = "child"

    def __init__(
        self,
        backoff: Backoff,
        *,
        stable_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.backoff = backoff
        self.stable_after = stable_after  # a child that ran this long resets the backoff
        self._clock = clock
        self._log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self.started_at: float | None = None
        self.restart_at: float | None = None
        self.wanted = False
        self.restarts = 0
        self.last_exit: str | None = None
        self.last_code: int | None = None

    # -- what a subclass provides --------------------------------------------------------
    def popen(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def exited(self, code: int | None, ran: float) -> None:
        """The child exited on its own (``wanted`` says whether it will be restarted)."""

    # -- control -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    def start(self) -> None:
        """Run the child from now on; nothing happens if it already runs."""
        self.wanted = True
        if self.proc is None and self.restart_at is None:
            self.spawn()

    def restart(self) -> None:
        """Stop the running child (if any) and start a new one now (e.g. new configuration)."""
        self.wanted = True
        self.restart_at = None
        self.kill()
        self.spawn()

    def halt(self, reason: str) -> None:
        """Stop the child and do not restart it."""
        self.wanted = False
        self.restart_at = None
        self.kill()
        self.last_exit = reason

    # -- event interface -----------------------------------------------------------------
    def fileno(self) -> int | None:
        """A pidfd that becomes readable when the child exits; None when none runs."""
        return self._pidfd

    def on_exit(self) -> None:
        """The pidfd is readable: reap the child and, if still wanted, schedule a restart."""
        proc = self.proc
        if proc is None or proc.poll() is None:
            return
        ran = self._clock() - (self.started_at if self.started_at is not None else self._clock())
        self._close_pidfd()
        self.proc = None
        self.started_at = None
        self.last_code = proc.returncode
        if self.wanted:
            if ran >= self.stable_after:
                self.backoff.reset()
            self.restart_at = self._clock() + self.backoff.next_delay()
        self.exited(proc.returncode, ran)

    def next_deadline(self) -> float | None:
        return self.restart_at

    def tick(self) -> None:
        if self.restart_at is not None and self._clock() >= self.restart_at:
            self.restart_at = None
            if self.wanted:
                self.restarts += 1
                self.spawn()

    # -- internals -----------------------------------------------------------------------
    def spawn(self) -> None:
        try:
            self.proc = self.popen()
        except OSError as exc:
            self.proc = None
            self.last_exit = f"cannot start {self.name}: {exc.strerror or exc}"
            self._log(self.last_exit)
            self.restart_at = self._clock() + self.backoff.next_delay()
            return
        self._pidfd = os.pidfd_open(self.proc.pid)
        self.started_at = self._clock()

    def kill(self, grace: float = 3.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace)
        self.proc = None
        self.started_at = None
        self._close_pidfd()

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None


class LoopWatch:
    """Drives a ``ChildProcess`` from the event loop: its pidfd as a reader, its deadline as a
    timer. Every operation on the child goes through ``run`` so the registrations follow it."""

    def __init__(
        self, loop: EventLoop, child: ChildProcess, on_change: Callable[[], None] = lambda: None
    ) -> None:
        self.loop = loop
        self.child = child
        self.on_change = on_change
        self._fd: int | None = None
        self._timer: Timer | None = None

    def run(self, operation: Callable[[], object], notify: bool = True) -> None:
        """Run ``operation`` with the pidfd unwatched: it may close the pidfd and a new one
        may get the same number, so the old registration has to go first."""
        self._unwatch()
        try:
            operation()
        finally:
            self._watch()
        if notify:
            self.on_change()

    def _unwatch(self) -> None:
        if self._fd is not None:
            self.loop.remove_reader(self._fd)
            self._fd = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _watch(self) -> None:
        child = self.child
        fd = child.fileno()
        if fd is not None:
            self.loop.add_reader(fd, lambda: self.run(child.on_exit))
            self._fd = fd
        deadline = child.next_deadline()
        if deadline is not None:
            self._timer = self.loop.call_later(
                max(0.0, deadline - time.monotonic()), lambda: self.run(child.tick)
            )

    def close(self) -> None:
        """Stop watching (the owner stops the child itself)."""
        self._unwatch()

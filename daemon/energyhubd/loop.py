"""The daemon's single event loop: the one owner of mutable state.

Everything that changes state runs here: file-descriptor readiness (netlink, nftables monitor,
dnsmasq exit), timers, signals, and work posted by other threads (control socket, MQTT). Other
threads never touch state; they ``post`` a callable. The loop sleeps in ``select`` until
something happens: no polling.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import queue
import selectors
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("energyhubd.loop")

Callback = Callable[[], None]


class Timer:
    def __init__(self, when: float, callback: Callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._posted: queue.SimpleQueue[Callback] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self._signal_handlers: dict[int, Callback] = {}
        self._stopping = False
        self.wakeups = 0

    # -- registration -------------------------------------------------------------------
    def add_reader(self, fileobj: Any, callback: Callback) -> None:
        self._selector.register(fileobj, selectors.EVENT_READ, callback)

    def remove_reader(self, fileobj: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fileobj)

    def call_later(self, delay: float, callback: Callback) -> Timer:
        timer = Timer(time.monotonic() + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def post(self, callback: Callback) -> None:
        """Thread-safe: run ``callback`` on the loop thread soon."""
        self._posted.put(callback)
        # BlockingIOError: a wake-up byte is already pending; OSError: the loop is gone.
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def on_signal(self, signum: int, callback: Callback) -> None:
        """Handle a signal on the loop thread (the Python handler only records it)."""
        self._signal_handlers[signum] = callback
        signal.signal(signum, self._record_signal)

    def _record_signal(self, signum: int, _frame: Any) -> None:
        handler = self._signal_handlers.get(signum)
        if handler is not None:
            self.post(handler)

    # -- running ------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping = True
        self.post(lambda: None)

    def run(self) -> None:
        while not self._stopping:
            timeout = self._next_timeout()
            events = self._selector.select(timeout)
            self.wakeups += 1
            for key, _mask in events:
                self._safely(key.data)
            self._run_due_timers()
            self._run_posted()

    def _next_timeout(self) -> float | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if not self._posted.empty():
            return 0
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - time.monotonic())

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _when, _seq, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._safely(timer.callback)

    def _run_posted(self) -> None:
        while True:
            try:
                callback = self._posted.get_nowait()
            except queue.Empty:
                return
            self._safely(callback)

    def _on_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    @staticmethod
    def _safely(callback: Callback) -> None:
        try:
            callback()
        except Exception:  # one failing handler must not take the daemon down
            log.exception("internal error in event handler")

    def close(self) -> None:
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

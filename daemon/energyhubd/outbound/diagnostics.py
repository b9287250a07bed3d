"""The diagnostics scheduler: when ``diagnose.run_all`` runs inside the daemon.

Threading contract: every method runs on the daemon's event loop except ``wait_for``, which a
control thread calls to block until a run finished. The blocking checks run on one short-lived
worker thread per run (``diagnose-N``) that touches only its own arguments and hands the result
back with ``loop.post``. ``_cond`` guards only what ``wait_for`` reads (``_last``,
``_completed``, ``_closed``); the rest is the loop's alone.

Rules: at most one run in flight; a request during a run is answered by that run; runs are at
least ``MIN_GAP`` apart (a later request is deferred, not dropped). Triggers: on demand
(control method, portal), WAN up, start-up, and a loop timer every
``outbound.diagnose_interval`` counted from the end of the last run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from energyhubd import memory
from energyhubd.config.model import Config
from energyhubd.config.sections.outbound import OutboundSettings
from energyhubd.loop import EventLoop, Timer
from energyhubd.outbound import diagnose
from energyhubd.outbound.diagnose import Row
from energyhubd.outbound.inputs import broker_trust, client_cert, iso, wan_dns_servers

log = logging.getLogger("energyhubd.outbound")

MIN_GAP = 10.0  # seconds between the end of one diagnostics run and the start of the next
STARTUP_DELAY = 5.0  # first run after start: let the WAN lease and the resolv file settle

Runner = Callable[..., list[Row]]


@dataclass(frozen=True)
class RunResult:
    """One finished diagnostics run."""

    number: int
    trigger: str
    started: float
    seconds: float
    dns_servers: tuple[str, ...]
    dns_source: str
    fallback: tuple[str, ...]
    rows: tuple[Row, ...]
    error: str | None = None

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failed

    def as_dict(self) -> dict[str, Any]:
        """The full answer of the ``diagnose`` method."""
        return {
            "run": self.number,
            "trigger": self.trigger,
            "at": iso(self.started),
            "seconds": round(self.seconds, 2),
            "dns_servers": list(self.dns_servers),
            "dns_source": self.dns_source,
            "fallback": list(self.fallback),
            "error": self.error,
            **diagnose.as_dict(self.rows),
            "passed": self.passed,
        }

    def summary(self) -> dict[str, Any]:
        """Compact, for status: per row pass/fail, latency and reason (no details)."""
        return {
            "run": self.number,
            "trigger": self.trigger,
            "at": iso(self.started),
            "seconds": round(self.seconds, 2),
            "passed": self.passed,
            "failed_flows": sorted({r.flow for r in self.failed}),
            "error": self.error,
            "rows": [{k: v for k, v in r.as_dict().items() if k != "detail"} for r in self.rows],
        }


class Diagnostics:
    """Schedules diagnostics runs; see the module docstring for the threading contract."""

    def __init__(
        self,
        loop: EventLoop,
        resolv_file: str | None,
        publish: Callable[[], None],
        after_run: Callable[[], object],
        runner: Runner = diagnose.run_all,
    ) -> None:
        self.loop = loop
        self.resolv_file = resolv_file
        self._publish = publish
        # Called on the loop after a run, before status is published: the allowlist's drop
        # counters are read then, so a failed run and the drops that explain it show together.
        self._after_run = after_run
        self._runner = runner
        self.config: Config | None = None
        self.settings = OutboundSettings()
        self._cond = threading.Condition()
        self._runs_started = 0
        self._completed = 0
        self._running: int | None = None
        self._last: RunResult | None = None
        self._last_end: float | None = None
        self._pending: tuple[Timer, float, int] | None = None
        self._interval_timer: Timer | None = None
        self._next_interval: float | None = None
        self._closed = False

    def configure(self, config: Config) -> None:
        """A configuration was applied: the first one schedules the start-up run; a changed
        interval re-arms the timer from the end of the last run."""
        first = self.config is None
        old_interval = self.settings.diagnose_interval
        self.config, self.settings = config, config.outbound
        if first:
            self.request("start-up", STARTUP_DELAY)
        elif self.settings.diagnose_interval != old_interval and self._last_end is not None:
            self._arm_interval()

    def close(self) -> None:
        """Timers off; waiting control threads are released (with an error)."""
        for timer in (self._interval_timer, self._pending[0] if self._pending else None):
            if timer is not None:
                timer.cancel()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def request(self, trigger: str, delay: float = 0.0) -> int:
        """Ask for a run; returns the number of the run that will answer it."""
        if self.config is None:
            raise RuntimeError("no configuration is applied yet")
        if self._running is not None:
            return self._running
        now = time.monotonic()
        earliest = now + delay
        if self._last_end is not None:
            earliest = max(earliest, self._last_end + MIN_GAP)
        if self._pending is not None:
            timer, when, number = self._pending
            if when <= earliest:
                return number
            timer.cancel()
            self._pending = None
        number = self._runs_started + 1
        if earliest <= now:
            self._start_run(trigger)
        else:
            timer = self.loop.call_later(earliest - now, lambda: self._pending_due(trigger))
            self._pending = (timer, earliest, number)
        return number

    def _pending_due(self, trigger: str) -> None:
        self._pending = None
        if self._running is None and not self._closed:
            self._start_run(trigger)

    def _start_run(self, trigger: str) -> None:
        assert self.config is not None
        if self._pending is not None:
            self._pending[0].cancel()
            self._pending = None
        self._runs_started += 1
        number = self._runs_started
        self._running = number
        # The worker gets the configuration of now: a reload during the run does not mix two.
        thread = threading.Thread(
            target=self._run_worker,
            args=(number, trigger, self.config, self.settings),
            name=f"diagnose-{number}",
            daemon=True,
        )
        thread.start()
        self._publish()

    def _run_worker(
        self, number: int, trigger: str, config: Config, settings: OutboundSettings
    ) -> None:
        """Worker thread: the blocking checks; the result goes back to the loop."""
        started, t0 = time.time(), time.monotonic()
        servers, source = wan_dns_servers(config, self.resolv_file)
        fallback = tuple(str(a) for a in config.dns_fallback)
        rows: list[Row] = []
        error = None
        try:
            rows = self._runner(
                settings,
                servers,
                list(fallback),
                client_cert=client_cert(config),
                broker_trust=broker_trust(config),
            )
        except Exception as exc:  # reported in status, never allowed to kill the daemon
            log.exception("outbound diagnostics failed")
            error = f"diagnostics failed: {exc}"
        result = RunResult(
            number,
            trigger,
            started,
            time.monotonic() - t0,
            tuple(servers),
            source,
            fallback,
            tuple(rows),
            error,
        )
        self.loop.post(lambda: self._run_finished(result))

    def _run_finished(self, result: RunResult) -> None:
        with self._cond:
            self._last = result
            self._running = None
        self._last_end = time.monotonic()
        self._arm_interval()
        if result.passed:
            log.info(
                "outbound diagnostics (%s): all %d checks pass in %.2f s",
                result.trigger,
                len(result.rows),
                result.seconds,
            )
        else:
            problems = "; ".join(f"{r.flow}: {r.reason}" for r in result.failed)
            log.warning("outbound diagnostics (%s): %s", result.trigger, result.error or problems)
        self._after_run()
        self._publish()
        memory.trim()  # the run's TLS contexts and sockets leave freed heap pages (glibc)
        # Waiters are released only now, so a status read right after sees this run.
        with self._cond:
            self._completed = result.number
            self._cond.notify_all()

    def _arm_interval(self) -> None:
        if self._interval_timer is not None:
            self._interval_timer.cancel()
        interval = self.settings.diagnose_interval
        self._next_interval = time.time() + interval
        self._interval_timer = self.loop.call_later(interval, self._on_interval)

    def _on_interval(self) -> None:
        self._interval_timer = None
        self._next_interval = None
        if self.config is not None:
            self.request("interval")

    def wait_for(self, number: int, timeout: float) -> RunResult | None:
        """From a control thread: block until run ``number`` finished; None on timeout."""
        with self._cond:
            done = self._cond.wait_for(
                lambda: self._closed or self._completed >= number, timeout=timeout
            )
            if self._closed:
                raise RuntimeError("the daemon is stopping")
            return self._last if done else None

    @property
    def last(self) -> RunResult | None:
        return self._last

    def status(self) -> dict[str, Any]:
        state = "running" if self._running else ("scheduled" if self._pending else "idle")
        pending_at = None
        if self._pending is not None:
            pending_at = time.time() + max(0.0, self._pending[1] - time.monotonic())
        return {
            "state": state,
            "runs": self._last.number if self._last else 0,
            "interval_s": self.settings.diagnose_interval,
            "next_run": iso(pending_at or self._next_interval),
            "last": self._last.summary() if self._last else None,
        }

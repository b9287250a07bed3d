"""One event stream that every subsystem publishes into.

Events are the daemon's record of things a person may want to know about (a device joined,
the DHCP pool is nearly full, an address conflict). They are kept in a bounded history for
``status``/``events`` queries and handed synchronously to subscribers (the MQTT link later),
so the order seen by every consumer is the order of publication.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

SEVERITIES = ("info", "warning", "error")
_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

DEFAULT_HISTORY = 200

Subscriber = Callable[["Event"], None]


@dataclass(frozen=True)
class Event:
    """Something that happened: ``kind`` like ``device_joined``, ``time`` in epoch seconds.

    ``seq`` is 0 until the event is published; the stream then numbers events 1, 2, 3... so
    a consumer can tell whether it missed any.
    """

    kind: str
    time: float
    severity: str = "info"
    data: Mapping[str, Any] = field(default_factory=dict)
    seq: int = 0

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy (the data mapping is copied so callers cannot mutate history)."""
        return {
            "seq": self.seq,
            "kind": self.kind,
            "time": self.time,
            "severity": self.severity,
            "data": dict(self.data),
        }

    def log_line(self) -> str:
        """One line, safe for syslog/logd: every untrusted string is JSON-escaped (ASCII only).

        ``json.dumps(ensure_ascii=True)`` turns newlines, control characters, terminal escapes
        and non-ASCII into ``\\n``/``\\u001b`` sequences, so a hostile DHCP hostname cannot
        forge log lines or recolour a technician's terminal.
        """
        payload = json.dumps(dict(self.data), ensure_ascii=True, sort_keys=True, default=str)
        kind = json.dumps(self.kind, ensure_ascii=True)
        return f"event seq={self.seq} kind={kind} severity={self.severity} data={payload}"


class EventStream:
    """Bounded history plus synchronous fan-out.

    ``publish`` is meant to be called from the daemon's event loop; ``history`` may be read
    from other threads (ubus/MQTT) and takes a lock. A subscriber that raises is logged and
    skipped: one broken consumer must not silence the others.
    """

    def __init__(
        self, history: int = DEFAULT_HISTORY, logger: logging.Logger | None = None
    ) -> None:
        if history < 1:
            raise ValueError("history must be at least 1")
        self._history: deque[Event] = deque(maxlen=history)
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._seq = 0
        self._log = logger or logging.getLogger("energyhubd.events")

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Register ``callback``; returns a function that unsubscribes it."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, event: Event) -> Event:
        """Number, store, log and deliver one event; returns the numbered event."""
        with self._lock:
            self._seq += 1
            numbered = replace(event, seq=self._seq)
            self._history.append(numbered)
            subscribers = list(self._subscribers)
        self._log.log(_LOG_LEVELS[numbered.severity], "%s", numbered.log_line())
        for callback in subscribers:
            try:
                callback(numbered)
            except Exception:
                self._log.exception("event subscriber %r failed", callback)
        return numbered

    def publish_all(self, events: list[Event]) -> list[Event]:
        """Publish events in order (what ``DeviceRegistry.apply_*`` return)."""
        return [self.publish(event) for event in events]

    def history(self, kind: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Oldest first; optionally only one kind and only the newest ``limit``."""
        with self._lock:
            events = [e for e in self._history if kind is None or e.kind == kind]
        if limit is not None:
            events = events[-limit:] if limit > 0 else []
        return [e.as_dict() for e in events]

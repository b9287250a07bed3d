"""Bounded FIFO for messages that could not be sent while the portal link was down.

A site can be offline for days; an unbounded queue would eat the router's RAM. The newest
data is the most useful to the portal, so when the queue is full the OLDEST entry is dropped
and counted, and the count is reported after reconnecting.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class OutMessage:
    """One queued publish."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class Outbox:
    """Thread-safe bounded FIFO; the daemon thread puts, the MQTT thread takes."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("outbox size must be at least 1")
        self.size = size
        self._items: deque[OutMessage] = deque()
        self._lock = threading.Lock()
        self._dropped = 0

    def put(self, message: OutMessage) -> bool:
        """Append; returns False when an older message had to be dropped to make room."""
        with self._lock:
            dropped = len(self._items) >= self.size
            if dropped:
                self._items.popleft()
                self._dropped += 1
            self._items.append(message)
            return not dropped

    def requeue(self, messages: list[OutMessage]) -> None:
        """Put unacknowledged messages back at the FRONT (they are older than the rest);
        if that overflows the bound, the oldest are dropped and counted as usual."""
        with self._lock:
            self._items.extendleft(reversed(messages))
            while len(self._items) > self.size:
                self._items.popleft()
                self._dropped += 1

    def pop(self) -> OutMessage | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    def take_dropped(self) -> int:
        """Return the drops since the last call and reset the counter (report once)."""
        with self._lock:
            count, self._dropped = self._dropped, 0
            return count

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._dropped

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

"""Reconnect delays: capped exponential backoff with jitter.

Fleet lesson (obuspa): uncapped backoff makes thousands of sites recover slowly after broker
maintenance, and un-jittered backoff makes them all reconnect in the same second. Formula
("equal jitter"), attempt ``n`` counting from 0 after the last successful connection::

    base  = min(cap, initial * 2**n)
    delay = base / 2 + random() * base / 2        # uniform in [base/2, base]

so a delay is never above ``cap`` and never below half of ``base`` (no hot reconnect loop).
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable


class Backoff:
    """Delay generator; ``rand`` is injectable so tests are deterministic."""

    def __init__(
        self, initial: float, cap: float, rand: Callable[[], float] = _random.random
    ) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError("need 0 < initial <= cap")
        self.initial = initial
        self.cap = cap
        self._rand = rand
        self.attempt = 0

    def base(self) -> float:
        # Cap the exponent too, so 2**n never overflows on a site offline for months.
        return min(self.cap, self.initial * 2 ** min(self.attempt, 62))

    def next_delay(self) -> float:
        """Delay before the next attempt; advances the attempt counter."""
        base = self.base()
        self.attempt += 1
        return base / 2 + self._rand() * base / 2

    def reset(self) -> None:
        """Called after a successful connection: the next failure retries quickly again."""
        self.attempt = 0

"""Retry delays: capped exponential backoff with jitter, one helper for every retry loop
(the portal link, the supervised children, the ubus connection).

Fleet lesson (obuspa): uncapped backoff makes thousands of sites recover slowly after broker
maintenance, and un-jittered backoff makes them all reconnect in the same second. Attempt
``n`` counts from 0 after the last success::

    base  = min(cap, initial * 2**n)
    equal jitter (default): delay = base / 2 + random() * base / 2   # uniform in [base/2, base]
    full jitter:            delay = random() * base                  # uniform in [0, base]

Equal jitter never goes below half of ``base`` (no hot retry loop); full jitter spreads a
fleet widest and suits retries that are cheap when they fail.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

JITTERS = ("equal", "full")


class Backoff:
    """Delay generator; ``rand`` is injectable so tests are deterministic."""

    def __init__(
        self,
        initial: float,
        cap: float,
        rand: Callable[[], float] = _random.random,
        jitter: str = "equal",
    ) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError("need 0 < initial <= cap")
        if jitter not in JITTERS:
            raise ValueError(f"jitter must be one of {', '.join(JITTERS)}")
        self.initial = initial
        self.cap = cap
        self.jitter = jitter
        self._rand = rand
        self.attempt = 0

    def base(self) -> float:
        # Cap the exponent too, so 2**n never overflows on a site offline for months.
        return min(self.cap, self.initial * 2 ** min(self.attempt, 62))

    def next_delay(self) -> float:
        """Delay before the next attempt; advances the attempt counter."""
        base = self.base()
        self.attempt += 1
        if self.jitter == "full":
            return self._rand() * base
        return base / 2 + self._rand() * base / 2

    def reset(self) -> None:
        """Called after a success: the next failure retries quickly again."""
        self.attempt = 0

"""Retry delays: capped exponential backoff with jitter, one helper for every retry loop
(the portal link, the supervised children, the ubus connection).

Fleet lesson (obuspa): uncapped backoff makes thousands of sites recover slowly after broker
maintenance, and un-jittered backoff makes them all reconnect in the same second. Attempt
``n`` counts from 0 after the last success::

    base  = min(cap, initial * 2**n)
    equal jitter (default): delay = base / 2 + random() * base / 2      # in [base/2, base]
    full jitter:            delay = floor + random() * (base - floor)   # in [floor, base]

Equal jitter never goes below half of ``base`` (no hot retry loop). Full jitter spreads a
fleet widest (the portal link: the spread of the very first retry over ``[floor, initial]``
is what keeps a fleet from arriving in one second after a broker blip); its ``floor``
(``FLOOR``, or ``base`` when that is smaller) only prevents a hot loop.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

JITTERS = ("equal", "full")
FLOOR = 0.5


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
            floor = min(FLOOR, base)
            return floor + self._rand() * (base - floor)
        return base / 2 + self._rand() * base / 2

    def reset(self) -> None:
        """Called after a success: the next failure retries quickly again."""
        self.attempt = 0

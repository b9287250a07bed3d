"""Reconnect delays: capped exponential backoff with full jitter, reset only after a held link.

Fleet lessons: uncapped backoff makes thousands of sites recover slowly after broker
maintenance (obuspa); a first retry inside one second makes a whole fleet return in the same
second after a broker blip; and resetting the backoff at CONNACK lets a site that is kicked
right after connecting (two routers with one identity) reconnect every second forever.

Formula ("full jitter"), attempt ``n`` counting from 0 after the last connection that HELD::

    base  = min(cap, initial * 2**n)
    delay = floor + random() * (base - floor)      # uniform in [floor, base]

``floor`` (0.5 s, or ``base`` when that is smaller) only prevents a hot loop; the spread over
``[floor, initial]`` of the very first retry is what keeps a fleet from arriving together.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

FLOOR = 0.5


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
        floor = min(FLOOR, base)
        self.attempt += 1
        return floor + self._rand() * (base - floor)

    def reset(self) -> None:
        """Called once a connection has held (see ``PortalLink``): retry quickly again."""
        self.attempt = 0

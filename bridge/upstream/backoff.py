"""Reconnect delays: exponential, capped, with jitter that never exceeds the cap."""

from __future__ import annotations

import random
from typing import Callable

JITTER_FRACTION = 0.2


class Backoff:
    """Delay before reconnect attempt ``n`` (1 for the first retry).

    ``initial * factor ** (n - 1)``, capped at ``maximum``, then shortened by up
    to :data:`JITTER_FRACTION` of itself so that many bridges restarted together
    do not reconnect in lockstep.  (Twisted's ``backoffPolicy`` starts at
    ``initial * factor`` and adds up to a whole second; we want the first delay
    to be the configured one.)
    """

    def __init__(
        self,
        initial: float,
        factor: float,
        maximum: float,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.factor = factor
        self.maximum = maximum
        self._jitter = jitter

    def base(self, attempt: int) -> float:
        """The delay before jitter."""
        try:
            delay = self.initial * self.factor ** max(0, min(attempt - 1, 1000))
        except OverflowError:
            return self.maximum
        return min(delay, self.maximum)

    def at_once(self) -> float:
        """The first retry after an established connection dropped: at once,
        but spread over up to JITTER_FRACTION of the first delay."""
        return self.initial * JITTER_FRACTION * self._jitter()

    def __call__(self, attempt: int) -> float:
        base = self.base(attempt)
        return base - base * JITTER_FRACTION * self._jitter()

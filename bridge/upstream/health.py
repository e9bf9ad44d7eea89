"""What the bridge knows about one address of an upstream group.

Passive health: a failed connection attempt, a rejected greeting or
handshake, or a connection the bridge closed because it went out of step (or
missed its heartbeat) marks the address failed.  A failed address is skipped
for its own backoff time (one Backoff per address, so that a dead address
neither slows down nor is slowed down by the others).  A success (a member
ready on it, or a probe) clears that.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from bridge.upstream.backoff import Backoff

HEALTHY = 0  # no failure since the last success (or never tried)
RETRYABLE = 1  # failed, but its skip time is over
SKIPPED = 2  # failed, skipped for a while yet


class AddressHealth:
    """The health and the counters of one address."""

    def __init__(self, name: str, backoff: Backoff, clock: IReactorTime) -> None:
        self.name = name
        self._backoff = backoff
        self._clock = clock
        #: Failures since the last success; 0 means healthy (or untried).
        self.failures = 0
        self.skipped_until: float | None = None
        #: Since when the address has been seen healthy without a failure.
        self.healthy_since: float | None = None
        self.last_error: str | None = None
        self._last_failure_at: float | None = None
        self.connects = 0
        self.failures_total = 0
        self.probes = 0

    @property
    def healthy(self) -> bool:
        return self.failures == 0

    def usable(self) -> bool:
        """Worth an attempt now: healthy, or failed with its skip time over."""
        until = self.skipped_until
        return until is None or self._clock.seconds() >= until

    def tier(self) -> int:
        """HEALTHY, RETRYABLE or SKIPPED: the order in which addresses are tried."""
        if self.failures == 0:
            return HEALTHY
        return RETRYABLE if self.usable() else SKIPPED

    def retry_in(self) -> float | None:
        """Seconds until a skipped address is tried again; None when not skipped."""
        if self.skipped_until is None:
            return None
        remaining = self.skipped_until - self._clock.seconds()
        return remaining if remaining > 0 else None

    def failed(self, reason: str, since: float, skip: bool = True) -> bool:
        """Record a failure of something begun at ``since``; True when it
        counts as a new one (and, with ``skip``, extends the skip time).

        Several members (and a probe) may have attempts under way when an
        address dies; failures of attempts begun no later than the last
        recorded failure are the same outage, not reasons to back off further.
        """
        self.last_error = reason
        self.failures_total += 1
        self.healthy_since = None
        if self._last_failure_at is not None and since <= self._last_failure_at:
            return False
        now = self._clock.seconds()
        self.failures += 1
        self._last_failure_at = now
        if skip:
            self.skipped_until = now + self._backoff(self.failures)
        return True

    def succeeded(self) -> None:
        """A member got ready on the address, or a probe passed."""
        if self.healthy_since is None:
            self.healthy_since = self._clock.seconds()
        self.failures = 0
        self.skipped_until = None
        self._last_failure_at = None

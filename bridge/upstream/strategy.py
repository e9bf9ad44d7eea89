"""How the members of a pool use a group's addresses: pure decisions.

The group (:mod:`bridge.upstream.group`) asks its strategy, at each
connection attempt, which address a member should try; after every change of
health, whether the members sit where they should, and which addresses to
probe.  Nothing here is per request.

* :class:`Single`: one configured ``upstream``; everything as before groups.
* :class:`Failover`: ordered and non-preemptive.  Every member uses the
  *active* address, the first healthy one; when it fails, the next one
  becomes active.  An earlier address becomes active again only after it has
  been healthy (probed) for ``failback_after`` seconds; with 0, never.
* :class:`RoundRobin`: member ``i`` belongs on the ``i``-th healthy address
  (modulo their number), so neighbours sit on different addresses, and the
  spread follows addresses failing and recovering.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from bridge.upstream.health import HEALTHY, RETRYABLE, AddressHealth


class Book(Protocol):
    """What a strategy reads of the group."""

    def order(self) -> Sequence[str]:
        """The current addresses, in configured order."""

    def health(self, name: str) -> AddressHealth: ...


class Placed(Protocol):
    """What a strategy reads of a member."""

    @property
    def index(self) -> int: ...

    @property
    def address(self) -> str | None: ...

    @property
    def balanced(self) -> bool:
        """False for the events subscriber: it follows failover, but is no
        pool member to spread."""


def best(names: Sequence[str], book: Book) -> str:
    """The first healthy name, else the first whose skip is over, else the
    one whose skip ends soonest."""
    for wanted in (HEALTHY, RETRYABLE):
        for name in names:
            if book.health(name).tier() <= wanted:
                return name
    return min(names, key=lambda name: book.health(name).skipped_until or 0.0)


class Strategy(Protocol):
    name: str
    #: Whether a failed address is skipped (not with a single upstream: its
    #: members keep their own backoff, as before groups existed).
    skips: bool

    @property
    def active(self) -> str | None: ...

    def settle(self, book: Book) -> tuple[str | None, str] | None:
        """Re-decide after a change of health; (old, new) when the active address changed."""

    def failback(self, book: Book, now: float) -> tuple[str, str] | None:
        """(old, new) when an earlier address has earned its place back."""

    def pick(self, book: Book, member: Placed) -> str:
        """The address for a member's next connection attempt."""

    def place(self, book: Book, member: Placed) -> str | None:
        """Where a connected member should move to; None to stay."""

    def probe_delay(self, book: Book, name: str, now: float, interval: float) -> float | None:
        """Seconds until ``name`` should be probed; None for no probe."""


class Single:
    """One configured upstream: always that address, no skipping, no probes."""

    name = "single"
    skips = False
    active = None

    def settle(self, book: Book) -> tuple[str | None, str] | None:
        return None

    def failback(self, book: Book, now: float) -> tuple[str, str] | None:
        return None

    def pick(self, book: Book, member: Placed) -> str:
        return book.order()[0]

    def place(self, book: Book, member: Placed) -> str | None:
        return None

    def probe_delay(self, book: Book, name: str, now: float, interval: float) -> float | None:
        return None


class Failover:
    """All members on the active address; see the module docstring."""

    name = "failover"
    skips = True

    def __init__(self, failback_after: float) -> None:
        self.failback_after = failback_after
        self.active: str | None = None

    def settle(self, book: Book) -> tuple[str | None, str] | None:
        order = list(book.order())
        current = self.active
        if not order or (current in order and book.health(current).usable()):
            return None
        start = 0
        if current in order and not self.failback_after:
            # Never failing back: go on down the list (and round to its top).
            start = order.index(current) + 1
        self.active = best(order[start:] + order[:start], book)
        return (current, self.active) if self.active != current else None

    def failback(self, book: Book, now: float) -> tuple[str, str] | None:
        order = list(book.order())
        current = self.active
        if not self.failback_after or current not in order:
            return None
        for name in order[:order.index(current)]:
            health = book.health(name)
            since = health.healthy_since
            if health.healthy and since is not None and now - since >= self.failback_after:
                self.active = name
                return current, name
        return None

    def pick(self, book: Book, member: Placed) -> str:
        self.settle(book)
        assert self.active is not None
        return self.active

    def place(self, book: Book, member: Placed) -> str | None:
        self.settle(book)
        active = self.active
        if active is None or member.address == active or not book.health(active).healthy:
            return None
        return active

    def probe_delay(self, book: Book, name: str, now: float, interval: float) -> float | None:
        order = list(book.order())
        if not self.failback_after or self.active not in order or name not in order:
            return None
        if order.index(name) >= order.index(self.active):
            return None  # only earlier addresses can take the members back
        health = book.health(name)
        if not health.healthy:
            return max(0.0, (health.skipped_until or now) - now)
        if health.healthy_since is None:
            return 0.0  # never tried
        due = health.healthy_since + self.failback_after - now
        return min(interval, due) if due > 0 else interval


class RoundRobin:
    """Member ``i`` on the ``i``-th healthy address; see the module docstring."""

    name = "round_robin"
    skips = True
    active = None

    def settle(self, book: Book) -> tuple[str | None, str] | None:
        return None

    def failback(self, book: Book, now: float) -> tuple[str, str] | None:
        return None

    @staticmethod
    def _healthy(book: Book) -> list[str]:
        return [name for name in book.order() if book.health(name).healthy]

    def pick(self, book: Book, member: Placed) -> str:
        candidates = self._healthy(book) or [
            name for name in book.order() if book.health(name).usable()]
        if not candidates:
            return best(book.order(), book)
        return candidates[member.index % len(candidates)]

    def place(self, book: Book, member: Placed) -> str | None:
        healthy = self._healthy(book)
        if not member.balanced or member.address not in healthy:
            return None  # on a failed address: it stays until its connection ends
        wanted = healthy[member.index % len(healthy)]
        return None if wanted == member.address else wanted

    def probe_delay(self, book: Book, name: str, now: float, interval: float) -> float | None:
        health = book.health(name)
        if health.healthy:
            return None  # members connected there (or about to be) are the check
        return max(0.0, (health.skipped_until or now) - now)


def make_strategy(name: str, failback_after: float) -> Strategy:
    if name == "round_robin":
        return RoundRobin()
    return Failover(failback_after)

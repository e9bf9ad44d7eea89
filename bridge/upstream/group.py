"""The addresses behind one upstream, and which member uses which.

A pool's members ask their group for an address at every connection attempt
(never per request: the hot path picks among connected members as before) and
tell it how each attempt and connection went.  The group keeps the health of
each address (:mod:`bridge.upstream.health`), asks its strategy
(:mod:`bridge.upstream.strategy`) where members belong, probes addresses the
members cannot vouch for (:mod:`bridge.upstream.prober`), and moves
misplaced members one at a time: a moved member drains its connection the
way shutdown does (no new work, half-close, replies still delivered) while it
connects anew.

A single configured ``upstream`` is a group too (strategy ``single``): one
fixed address, no skipping, no probes, no moves; its members keep their own
backoff exactly as before groups existed.
"""

from __future__ import annotations

import random
from typing import Callable, Protocol, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IHostnameResolver,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from bridge.config import Config
from bridge.upstream.backoff import JITTER_FRACTION, Backoff
from bridge.upstream.health import AddressHealth
from bridge.upstream.resolution import EndpointFor, Entry, Target, resolve_all
from bridge.upstream.strategy import Single, Strategy, make_strategy

Prober = Callable[[Target], Deferred[None]]


class GroupMember(Protocol):
    """What the group needs of a pool member (:class:`UpstreamMember`)."""

    name: str
    index: int
    #: The address connected to or being tried (None before the first attempt).
    address: str | None
    #: Whether it counts for placement (pool members do; the events
    #: subscriber follows failover but is never moved for balance).
    balanced: bool

    @property
    def connected(self) -> bool: ...

    def retire(self, why: str) -> bool:
        """Drain the connection and connect anew; False when not connected."""


class AddressGroup:
    """Health, placement and probes for the addresses of one upstream."""

    log = Logger()

    def __init__(
        self,
        entries: Sequence[Entry],
        strategy: Strategy,
        clock: IReactorTime,
        *,
        label: str,
        backoff: Callable[[], Backoff],
        resolver: IHostnameResolver | None = None,
        prober: Prober | None = None,
        probe_interval: float = 1.0,
        jitter: Callable[[], float] = random.random,
        upstream: str = "default",
    ) -> None:
        self.entries = list(entries)
        # Logs name the upstream ("upstream cache: failover ..."); the one
        # named default stays "upstream: ...", as its members are "0", "1"...
        self.who = "upstream" if upstream == "default" else f"upstream {upstream}"
        self.strategy = strategy
        self.label = label
        self._clock = clock
        self._new_backoff = backoff
        self._resolver = resolver
        self._prober = prober
        self._probe_interval = probe_interval
        self._jitter = jitter
        self._health: dict[str, AddressHealth] = {}
        self._targets: dict[str, Target] = {}
        self._order: list[str] = []
        self._seen: dict[str, int] = {}
        self._members: list[GroupMember] = []
        self._moving: GroupMember | None = None
        self._rebalance_call: IDelayedCall | None = None
        self._probe_calls: dict[str, IDelayedCall] = {}
        self._probes: dict[str, Deferred[None]] = {}
        self.running = False
        fixed = [entry.fixed for entry in self.entries if entry.fixed is not None]
        if len(fixed) == len(self.entries):
            self._learn(fixed)

    @classmethod
    def single(cls, address: str, endpoint: IStreamClientEndpoint,
               clock: IReactorTime) -> AddressGroup:
        """The group of a configured ``upstream``: that endpoint, as before groups."""
        return cls([Entry(address, 0, lambda spec: endpoint, resolve=False)], Single(), clock,
                   label=address,
                   backoff=lambda: Backoff(1.0, 2.0, 30.0))

    @classmethod
    def from_config(
        cls,
        config: Config,
        clock: IReactorTime,
        endpoint_for: EndpointFor,
        resolver: IHostnameResolver | None,
        jitter: Callable[[], float],
        prober: Prober | None,
    ) -> AddressGroup:
        """The group of ``addresses`` (with ``strategy`` and ``failback_after``)."""
        entries = [Entry(spec, position, endpoint_for)
                   for position, spec in enumerate(config.addresses)]
        return cls(
            entries, make_strategy(config.strategy, config.failback_after), clock,
            label=config.upstream_label,
            backoff=lambda: Backoff(config.backoff_initial, config.backoff_factor,
                                    config.backoff_max, jitter),
            resolver=resolver, prober=prober, probe_interval=config.backoff_initial,
            jitter=jitter, upstream=config.name,
        )

    # -- what strategies read (Book) ------------------------------------------------

    def order(self) -> Sequence[str]:
        return self._order

    def health(self, name: str) -> AddressHealth:
        return self._health[name]

    # -- members ------------------------------------------------------------------

    def add(self, member: GroupMember) -> None:
        self._members.append(member)

    def start(self) -> None:
        self.running = True
        self._plan_probes()

    def stop(self) -> None:
        """No more probes or moves (shutdown, or the pool stops)."""
        self.running = False
        self._moving = None
        if self._rebalance_call is not None and self._rebalance_call.active():
            self._rebalance_call.cancel()
        self._rebalance_call = None
        for call in self._probe_calls.values():
            if call.active():
                call.cancel()
        self._probe_calls.clear()
        probes, self._probes = self._probes, {}
        for probe in probes.values():
            probe.cancel()

    def choose(self, member: GroupMember) -> Deferred[Target]:
        """The address of ``member``'s next connection attempt (host names
        resolved again now)."""
        if isinstance(self.strategy, Single):
            return succeed(self._targets[self._order[0]])
        found = resolve_all(self.entries, self._resolver)

        def pick(targets: list[Target]) -> Target:
            self._learn(targets)
            self._settle()
            return self._targets[self.strategy.pick(self, member)]

        return found.addCallback(pick)

    def retry_delay(self, member: GroupMember, default: float) -> float:
        """Seconds before ``member`` tries again after a failure or a loss.

        ``default`` is the member's own backoff.  A member whose address is
        now skipped goes to another at once when one is usable; when every
        address is skipped it waits for the first to come back.
        """
        if not self.strategy.skips:
            return default
        healths = [self._health[name] for name in self._order]
        if healths and not any(health.usable() for health in healths):
            soonest = min(health.skipped_until or 0.0 for health in healths)
            spread = self._probe_interval * JITTER_FRACTION * self._jitter()
            return max(0.0, soonest - self._clock.seconds()) + spread
        address = member.address
        if address in self._health and not self._health[address].usable():
            return 0.0
        return default

    # -- what members report ------------------------------------------------------

    def attempt_failed(self, member: GroupMember, address: str | None, reason: str,
                       since: float) -> None:
        """A connection attempt (or its greeting or handshake) failed."""
        if self._moving is member:
            self._moving = None
        if address is None:
            return  # the names did not resolve: no address to blame
        self._failed(address, reason, since)

    def connected(self, member: GroupMember, address: str) -> None:
        health = self._health.get(address)
        if health is not None:
            health.succeeded()
            health.connects += 1
        if self._moving is member:
            self._moving = None
        self._changed()

    def lost(self, member: GroupMember, address: str | None, fault: str | None,
             since: float) -> None:
        """A ready connection ended; ``fault`` when the bridge closed it
        because the address misbehaved (out of step, no heartbeat reply)."""
        if self._moving is member:
            self._moving = None
        if fault is not None and address is not None:
            self._failed(address, fault, since)
        else:
            self._changed()

    def connect_note(self, previous: str | None, address: str) -> str:
        """What the member's "connected to" log line adds when it changed address."""
        if previous is None or previous == address or isinstance(self.strategy, Single):
            return ""
        return f" ({self._direction(previous, address)} from {previous})"

    def _direction(self, previous: str | None, address: str) -> str:
        """failover or failback (by the configured order), or moved (round robin)."""
        if self.strategy.name != "failover":
            return "moved"
        order = self._order
        earlier = (previous in order and address in order
                   and order.index(address) < order.index(previous))
        return "failback" if earlier else "failover"

    # -- health, placement, probes ----------------------------------------------------

    def _learn(self, targets: Sequence[Target]) -> None:
        """Take the addresses found now: their order is by entry, then by when
        first seen, so that a DNS answer in another order moves nobody."""
        for target in targets:
            self._targets[target.name] = target
            if target.name not in self._health:
                self._health[target.name] = AddressHealth(
                    target.name, self._new_backoff(), self._clock)
                self._seen[target.name] = len(self._seen)
        self._order = sorted((target.name for target in targets),
                             key=lambda name: (self._targets[name].entry, self._seen[name]))

    def _failed(self, address: str, reason: str, since: float) -> None:
        health = self._health.get(address)
        if health is None:
            return
        if health.failed(reason, since, skip=self.strategy.skips) and self.strategy.skips:
            self.log.info(
                "{who}: {address} failed ({reason}); skipped for {delay:.3g} s",
                who=self.who, address=address, reason=reason, delay=health.retry_in() or 0.0,
            )
        self._changed()

    def _settle(self) -> None:
        change = self.strategy.settle(self)
        if change is not None and change[0] is not None:
            self.log.warn("{who}: failover from {old} to {new}", who=self.who, old=change[0],
                          new=change[1])

    def _changed(self) -> None:
        """After any news: re-decide the active address, probes and moves."""
        if isinstance(self.strategy, Single):
            return  # one address: nothing to decide
        self._settle()
        back = self.strategy.failback(self, self._clock.seconds())
        if back is not None:
            self.log.info(
                "{who}: failing back from {old} to {new} (healthy for {seconds:g} s)",
                who=self.who, old=back[0], new=back[1],
                seconds=self._clock.seconds() - (self._health[back[1]].healthy_since or 0.0),
            )
        self._plan_probes()
        if self.running and self._rebalance_call is None:
            # Not now: the news may come from a member getting ready, which
            # ClientService does not count as connected until it returns.
            self._rebalance_call = self._clock.callLater(0, self._rebalance)

    def _rebalance(self) -> None:
        """Move one misplaced member; the next once that one is connected."""
        self._rebalance_call = None
        if not self.running or self._moving is not None:
            return
        for member in self._members:
            if not member.connected:
                continue
            wanted = self.strategy.place(self, member)
            if wanted is None:
                continue
            why = self._direction(member.address, wanted).replace("moved", "rebalance")
            if member.retire(f"{why} to {wanted}"):
                self._moving = member
                return

    def _plan_probes(self) -> None:
        if not self.running or self._prober is None:
            return
        now = self._clock.seconds()
        for name in self._order:
            delay = self.strategy.probe_delay(self, name, now, self._probe_interval)
            call = self._probe_calls.get(name)
            if delay is None:
                if call is not None:
                    if call.active():
                        call.cancel()
                    del self._probe_calls[name]
                continue
            if name in self._probes:
                continue  # one under way; its result plans the next
            if call is not None and call.active():
                if abs(call.getTime() - (now + delay)) > 1e-9:
                    call.reset(delay)
                continue
            self._probe_calls[name] = self._clock.callLater(delay, self._probe, name)

    def _probe(self, name: str) -> None:
        self._probe_calls.pop(name, None)
        target = self._targets.get(name)
        if target is None or self._prober is None or not self.running:
            return
        since = self._clock.seconds()
        health = self._health[name]
        health.probes += 1
        probe = self._probes[name] = self._prober(target)

        def passed(_: None) -> None:
            self._probes.pop(name, None)
            if not health.healthy:
                self.log.info("{who}: {address} answers again (probe)", who=self.who,
                              address=name)
            health.succeeded()
            self._changed()

        def failed(failure: Failure) -> None:
            if self._probes.pop(name, None) is None:
                return  # cancelled by stop()
            self._failed(name, failure.getErrorMessage(), since)

        probe.addCallbacks(passed, failed)

    # -- what /status and /metrics read ---------------------------------------------

    def status(self) -> list[dict[str, object]]:
        """One entry per address: current ones in order, then any that a
        member is still connected to although the name no longer resolves to it."""
        names = list(self._order)
        for member in self._members:
            if member.connected and member.address not in names and member.address is not None:
                names.append(member.address)
        rows: list[dict[str, object]] = []
        for name in names:
            health = self._health[name]
            retry_in = health.retry_in()
            rows.append({
                "address": name,
                "healthy": health.healthy,
                "active": name == self.strategy.active if self.strategy.active else None,
                "skipped_until": health.skipped_until if retry_in is not None else None,
                "retry_in": None if retry_in is None else round(retry_in, 3),
                "last_error": health.last_error,
                "connected_members": [m.name for m in self._members
                                      if m.connected and m.address == name],
                "connects": health.connects,
                "failures": health.failures_total,
            })
        return rows

"""The pool of upstream connections the HTTP side talks to.

This is the web layer's whole view of the upstream: send lines, request
replies, readiness and status.  It never exposes transports.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IHostnameResolver, IReactorTime, IStreamClientEndpoint

from bridge.config import Config
from bridge.errors import BodyError, BusyError, NotConnectedError
from bridge.upstream.backoff import Backoff
from bridge.upstream.fence import NONCE_PATTERN, Fence, fresh_nonce
from bridge.upstream.group import AddressGroup
from bridge.upstream.handshake import Handshake
from bridge.upstream.judge import ErrorRule
from bridge.upstream.lines import Lines, split_lines
from bridge.upstream.member import POOL, SUBSCRIBER, MemberListener, UpstreamMember
from bridge.upstream.member_states import (
    CONNECTED_SHOWN,
    CONNECTING_SHOWN,
    STOPPED_SHOWN,
    WAITING_SHOWN,
)
from bridge.upstream.prober import Prober
from bridge.upstream.protocol import Counters, UpstreamProtocol
from bridge.upstream.replies import make_framing
from bridge.upstream.replies.frames import Frame, Framing, Plan
from bridge.upstream.resolution import EndpointFor
from bridge.upstream.slots import CHECK, DISCARD, REQUEST


def framing_for(config: Config) -> Framing:
    """The reply framing ``config`` describes (one per pool, shared by its members)."""
    return make_framing(
        config.reply_framing, max_line_bytes=config.max_line_bytes,
        max_reply_bytes=config.max_reply_bytes,
        terminator=config.reply_terminator if config.reply_framing == "terminator" else None,
    )


class UpstreamPool(Service):
    """``pool_size`` members to one upstream, started and stopped as one,
    plus the events_subscribe connection when one is configured.

    The upstream is ``endpoint`` (the configured ``upstream``), or with
    ``addresses`` a group whose endpoints ``endpoint_for`` makes and whose
    host names ``resolver`` resolves (:mod:`bridge.upstream.group`).
    """

    def __init__(
        self,
        config: Config,
        clock: IReactorTime,
        endpoint: IStreamClientEndpoint | None,
        on_frame: MemberListener,
        jitter: Callable[[], float] = random.random,
        on_give_up: Callable[[str], None] | None = None,
        nonce: Callable[[], str] = fresh_nonce,
        nonce_pattern: str = NONCE_PATTERN,
        *,
        endpoint_for: EndpointFor | None = None,
        resolver: IHostnameResolver | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self.framing = framing_for(config)
        # line and terminator plans are one reply per line: no need to split.
        self._plan_by_count = self.framing.name in ("line", "terminator")
        self.fence = (
            Fence(config.fence_line, config.fence_expect, config.delimiter_bytes, nonce,
                  nonce_pattern)
            if config.fence_line is not None and config.fence_expect is not None else None
        )
        self.send_mode = config.send_replies_mode
        self.is_error = ErrorRule(config.reply_error_pattern)
        self.group = self._make_group(endpoint, endpoint_for, resolver, jitter)

        def member(name: str, role: str, index: int) -> UpstreamMember:
            made = UpstreamMember(
                name, config, clock, self.group, on_frame,
                Backoff(config.backoff_initial, config.backoff_factor, config.backoff_max,
                        jitter),
                on_give_up if role == POOL else None,
                framing=self.framing, fence=self.fence if role == POOL else None, role=role,
                is_error=self.is_error, index=index, jitter=jitter,
            )
            self.group.add(made)
            return made

        prefix = self._prefix
        self.members: Sequence[UpstreamMember] = [
            member(f"{prefix}{index}", POOL, index) for index in range(config.pool_size)
        ]
        self.subscriber = (member(f"{prefix}events", SUBSCRIBER, 0) if config.events_subscribe
                           else None)
        self._next = 0
        self.setName(f"upstream-{config.name}-{id(self):x}")  # unique across reloads

    @property
    def _prefix(self) -> str:
        """Logs name members "0", "1"... for the upstream named default, and
        "NAME/0"... for the others."""
        return "" if self.config.name == "default" else f"{self.config.name}/"

    def _make_group(
        self,
        endpoint: IStreamClientEndpoint | None,
        endpoint_for: EndpointFor | None,
        resolver: IHostnameResolver | None,
        jitter: Callable[[], float],
    ) -> AddressGroup:
        config = self.config
        if not config.addresses:
            if endpoint is None:
                assert endpoint_for is not None, "an endpoint or endpoint_for is needed"
                endpoint = endpoint_for(config.upstream)
            return AddressGroup.single(config.upstream, endpoint, self._clock)
        assert endpoint_for is not None, "addresses need endpoint_for"
        prober = Prober(
            self._clock, config.connect_timeout,
            Handshake(config.handshake, config.handshake_expect, config.handshake_timeout,
                      config.delimiter_bytes, config.greeting_expect),
            self._probe_protocol,
        )
        return AddressGroup.from_config(config, self._clock, endpoint_for, resolver, jitter,
                                        prober)

    def _probe_protocol(self) -> UpstreamProtocol:
        """A connection of a probe: the upstream's framing, counted nowhere."""
        config = self.config
        return UpstreamProtocol(
            clock=self._clock, counters=Counters(), stale_timeout=config.stale_timeout,
            on_frame=lambda kind, frame, line: None, framing=self.framing,
            name=self._prefix + "probe",
        )

    @property
    def all_members(self) -> list[UpstreamMember]:
        extra = [self.subscriber] if self.subscriber is not None else []
        return [*self.members, *extra]

    def startService(self) -> None:
        super().startService()
        self.group.start()
        for member in self.all_members:
            member.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.group.stop()
        stopped = DeferredList([member.stop() for member in self.all_members])
        return stopped.addCallback(lambda _: None)

    # -- choosing a member --------------------------------------------------------

    def pick(self, replies: bool = True) -> UpstreamProtocol:
        """The connection of a connected, uncongested member with the fewest
        pending replies (round robin on ties).  With ``replies``, a connection
        waiting for late replies it could not tell from new ones is skipped.

        Per request and member: a member's ``protocol`` is set only while its
        connection takes work, and ``paused`` (set by the transport) comes
        before asking how much is unsent."""
        members = self.members
        count = len(members)
        best: UpstreamProtocol | None = None
        best_pending = 0
        best_index = 0
        congested = suspect = False
        for offset in range(count):
            index = (self._next + offset) % count
            protocol = members[index].protocol
            if protocol is None:
                continue
            if protocol.paused and protocol.is_congested():
                congested = True
                continue
            if replies and protocol.suspect:
                suspect = True
                continue
            pending = protocol.pending
            if best is None or pending < best_pending:
                best, best_pending, best_index = protocol, pending, index
        if best is None:
            if congested:
                raise self._congested()
            raise self._waiting() if suspect else self._unavailable()
        if count > 1:
            self._next = (best_index + 1) % count
        return best

    def _congested(self) -> BusyError:
        return BusyError(
            "upstream_congested",
            "every upstream connection has more than write_high_water "
            f"({self.config.write_high_water}) bytes waiting to be sent; retry later",
        )

    def _unavailable(self) -> NotConnectedError:
        waiting = [(m.retry_in(), index) for index, m in enumerate(self.members)
                   if m.retry_in() is not None]
        soonest = self.members[min(waiting)[1]] if waiting else self.members[0]
        return NotConnectedError(
            f"the upstream {self.group.label} is not connected "
            f"({soonest.why_not_connected()}); nothing was sent",
            soonest.retry_in(),
        )

    def _waiting(self) -> NotConnectedError:
        return NotConnectedError(
            "every upstream connection is waiting for the late replies of a request that "
            f"gave up; with reply_framing {self.framing.name} and no fence they cannot be "
            "told from new replies (the connection is closed if they do not come within "
            f"stale_reply_timeout, {self.config.stale_timeout:g} s); nothing was sent",
            1.0,
        )

    # -- the operations -------------------------------------------------------------

    def plan(self, lines: Lines) -> Plan:
        """How the upstream will answer ``lines``; BodyError (400) for lines it
        would misread, before anything is written."""
        if self._plan_by_count:
            return Plan(lines.count)
        return self.framing.plan(split_lines(lines.payload, self.config.delimiter_bytes))

    @property
    def reply_timeout(self) -> float:
        return self.config.reply_timeout

    @property
    def max_pending(self) -> int:
        return self.config.max_pending

    def expected(self, plan: Plan) -> int | None:
        """Replies a /send slot awaits for ``plan`` (None: until the fence)."""
        return self._expected(plan)

    def _expected(self, plan: Plan) -> int | None:
        if self.fence is not None and not self.framing.counts_known:
            return None  # the fence, not a count, ends the replies
        return plan.replies

    def send(self, lines: Lines) -> None:
        """Write all lines on one connection, contiguously (202: written to a
        live connection); raise if none is live."""
        mode = self.send_mode
        if mode == "none":
            if not self._plan_by_count:
                self.plan(lines)  # refuse what the upstream would misread
            self.pick(replies=False).write_lines(lines.payload, lines.count)
            return
        plan = self.plan(lines)
        protocol = self.pick()
        self._check_pending(protocol.pending)
        protocol.submit(
            lines.payload, lines.count, mode=CHECK if mode == "check" else DISCARD,
            expected=self._expected(plan), timeout=self.config.reply_timeout, plan=plan,
        )

    def send_confirmed(self, lines: Lines, timeout: float) -> tuple[Plan, Deferred[list[Frame]]]:
        """Write the lines and wait until the upstream answered every one."""
        if self.send_mode == "none" and self.fence is None:
            raise BodyError(
                400, "confirm_unavailable",
                "?confirm=true needs an upstream that answers /send lines (send_replies "
                "discard or check) or a fence; with send_replies none nothing answers them",
            )
        plan = self.plan(lines)
        expected = 0 if self.send_mode == "none" else self._expected(plan)
        protocol = self.pick()
        self._check_pending(protocol.pending)
        replies = protocol.submit(
            lines.payload, lines.count, mode=REQUEST, expected=expected, timeout=timeout,
            plan=plan,
        )
        assert replies is not None

        def count_errors(frames: list[Frame]) -> list[Frame]:
            # Counted like unconfirmed /send errors; the caller sees them, so
            # they are neither logged nor published.
            protocol.counters.send_errors += sum(1 for frame in frames if self.is_error(frame))
            return frames

        return plan, replies.addCallback(count_errors)

    def request(
        self, lines: Lines, timeout: float, replies: int | None = None
    ) -> Deferred[list[Frame]]:
        """Write all lines on one connection and wait for their replies:
        as many as the framing's plan says, or exactly ``replies``."""
        plan = self.plan(lines)
        if replies is not None:
            return self._submit(lines, None, replies, timeout)
        return self._submit(lines, plan, self._expected(plan), timeout)

    def _submit(
        self, lines: Lines, plan: Plan | None, expected: int | None, timeout: float
    ) -> Deferred[list[Frame]]:
        protocol = self.pick()
        self._check_pending(protocol.pending)
        replies = protocol.submit(
            lines.payload, lines.count, mode=REQUEST, expected=expected, timeout=timeout,
            plan=plan,
        )
        assert replies is not None
        return replies

    def _check_pending(self, pending: int) -> None:
        if pending >= self.config.max_pending:
            raise BusyError(
                "too_many_pending",
                f"{pending} requests already await replies on the chosen connection "
                f"(max_pending is {self.config.max_pending}); retry later",
            )

    def drain(self, clock: IReactorTime, within: float) -> Deferred[None]:
        """Half-close every connection and wait (at most ``within`` seconds)
        until the upstream has closed its side: lines it received but had not
        yet processed are then processed, not thrown away by a reset."""
        self.group.stop()  # no more probes, and nobody moves now
        drained = DeferredList([member.drain() for member in self.all_members])
        done: Deferred[None] = Deferred()

        def finished(_: object) -> None:
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        def give_up() -> None:
            for member in self.all_members:
                member.abort()
            if not done.called:
                done.callback(None)

        timer = clock.callLater(within, give_up)
        drained.addCallback(finished)
        return done

    def unsent(self) -> int:
        return sum(m.protocol.unsent() for m in self.members if m.protocol is not None)

    def congested(self) -> int:
        """How many connections are congested now (more than write_high_water
        bytes unsent, until they fall to write_low_water): they take no work."""
        return sum(1 for m in self.members if m.protocol is not None and m.protocol.is_congested())

    # -- what probes and /status read ----------------------------------------------

    def connected_count(self) -> int:
        return sum(1 for member in self.members if member.protocol is not None)

    def ready(self) -> bool:
        return self.connected_count() >= self.config.min_ready

    def state(self) -> str:
        """connected when ready; else the most hopeful member state."""
        if self.ready():
            return CONNECTED_SHOWN
        states = {member.state for member in self.members}
        for state in (CONNECTING_SHOWN, WAITING_SHOWN, STOPPED_SHOWN):
            if state in states:
                return state
        return CONNECTING_SHOWN

    def retry_in(self) -> float | None:
        delays = [d for d in (m.retry_in() for m in self.members) if d is not None]
        return min(delays) if delays else None

    def totals(self) -> Counters:
        total = Counters()
        for member in self.members:
            for name, value in vars(member.counters).items():
                setattr(total, name, getattr(total, name) + value)
        return total

    def pending(self) -> int:
        return sum(m.protocol.pending for m in self.members if m.protocol is not None)

    def address_status(self) -> list[dict[str, object]]:
        """Per address: health, skip time, last error, connected members."""
        return self.group.status()

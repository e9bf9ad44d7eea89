"""The pool of upstream connections the HTTP side talks to.

This is the web layer's whole view of the upstream: send lines, request
replies, readiness and status.  It never exposes transports.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint

from bridge.config import Config
from bridge.errors import BusyError, NotConnectedError
from bridge.upstream.backoff import Backoff
from bridge.upstream.lines import Lines
from bridge.upstream.member import CONNECTED, MemberListener, UpstreamMember
from bridge.upstream.protocol import Counters, UpstreamProtocol


class UpstreamPool(Service):
    """``pool_size`` members to one upstream, started and stopped as one."""

    def __init__(
        self,
        config: Config,
        clock: IReactorTime,
        endpoint: IStreamClientEndpoint,
        on_line: MemberListener,
        jitter: Callable[[], float] = random.random,
        on_give_up: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self.members: Sequence[UpstreamMember] = [
            UpstreamMember(
                str(index), config, clock, endpoint, on_line,
                Backoff(config.backoff_initial, config.backoff_factor, config.backoff_max,
                        jitter),
                on_give_up,
            )
            for index in range(config.pool_size)
        ]
        self._next = 0
        self.setName("upstream")

    def startService(self) -> None:
        super().startService()
        for member in self.members:
            member.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        stopped = DeferredList([member.stop() for member in self.members])
        return stopped.addCallback(lambda _: None)

    # -- choosing a member --------------------------------------------------------

    def pick(self) -> UpstreamProtocol:
        """The connection of a connected, uncongested member with the fewest
        pending replies (round robin on ties)."""
        members = self.members
        count = len(members)
        if count == 1:
            protocol = members[0].protocol
            if protocol is None or protocol.aborted:
                raise self._unavailable()
            if protocol.paused and protocol.is_congested():
                raise self._congested()
            return protocol
        best: UpstreamProtocol | None = None
        best_pending = 0
        best_index = 0
        congested = False
        for offset in range(count):
            index = (self._next + offset) % count
            protocol = members[index].protocol
            if protocol is None or protocol.aborted:
                continue
            if protocol.paused and protocol.is_congested():
                congested = True
                continue
            pending = protocol.pending
            if best is None or pending < best_pending:
                best, best_pending, best_index = protocol, pending, index
        if best is None:
            raise self._congested() if congested else self._unavailable()
        self._next = (best_index + 1) % count
        return best

    def _congested(self) -> BusyError:
        return BusyError(
            "upstream_congested",
            "every upstream connection has more than write_high_water "
            f"({self.config.write_high_water}) bytes waiting to be sent; retry later",
        )

    def _unavailable(self) -> NotConnectedError:
        delays = [d for d in (m.retry_in() for m in self.members) if d is not None]
        return NotConnectedError(
            f"the upstream {self.config.upstream} is not connected; nothing was sent",
            min(delays) if delays else None,
        )

    # -- the operations -------------------------------------------------------------

    def send(self, lines: Lines) -> UpstreamProtocol:
        """Write all lines on one connection, contiguously; raise if none is live."""
        protocol = self.pick()
        if self.config.discard_send_replies:
            self._check_pending(protocol.pending)
        protocol.write_lines(lines.payload, lines.count)
        if self.config.discard_send_replies:
            protocol.discard_replies(lines.count)
        return protocol

    def request(self, lines: Lines, timeout: float) -> Deferred[list[bytes]]:
        """Write all lines on one connection and wait for one reply per line."""
        protocol = self.pick()
        self._check_pending(protocol.pending)
        return protocol.request(lines.payload, lines.count, timeout)

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
        drained = DeferredList([member.drain() for member in self.members])
        done: Deferred[None] = Deferred()

        def finished(_: object) -> None:
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        def give_up() -> None:
            for member in self.members:
                member.abort()
            if not done.called:
                done.callback(None)

        timer = clock.callLater(within, give_up)
        drained.addCallback(finished)
        return done

    def unsent(self) -> int:
        return sum(m.protocol.unsent() for m in self.members if m.protocol is not None)

    # -- what probes and /status read ----------------------------------------------

    def connected_count(self) -> int:
        return sum(1 for member in self.members if member.protocol is not None)

    def ready(self) -> bool:
        return self.connected_count() >= self.config.min_ready

    def state(self) -> str:
        """connected when ready; else the most hopeful member state."""
        if self.ready():
            return CONNECTED
        states = {member.state for member in self.members}
        for state in ("connecting", "waiting", "stopped"):
            if state in states:
                return state
        return "connecting"

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

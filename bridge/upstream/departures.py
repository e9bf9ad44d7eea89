"""Connections a member moved away from, draining in the background.

A member that moves (failback, rebalance, ``max_connection_age``) hands its
old connection over here once the new one is ready.  The old connection takes
no new work and is half-closed after what was written, as on shutdown: the
upstream processes every line it received, and the replies still due reach
their callers.  A server that ignores the half-close would keep the
connection open forever: after ``limit`` seconds it is closed.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from bridge.upstream.protocol import UpstreamProtocol


@dataclass
class _Departing:
    address: str | None
    timer: IDelayedCall


class Departures:
    """The draining connections of one member."""

    log = Logger()

    def __init__(self, clock: IReactorTime, limit: float, member: str) -> None:
        self._clock = clock
        self._limit = limit
        self._member = member
        self._departing: dict[UpstreamProtocol, _Departing] = {}

    def add(self, protocol: UpstreamProtocol, address: str | None) -> None:
        """Drain ``protocol``, which no longer takes work."""
        timer = self._clock.callLater(self._limit, self._overdue, protocol)
        self._departing[protocol] = _Departing(address, timer)
        protocol.on_lost(lambda reason: self._gone(protocol))
        self.log.info("upstream {member}: draining the old connection to {address} "
                      "({pending} replies due)", member=self._member, address=address,
                      pending=protocol.pending)
        protocol.drain()

    def _gone(self, protocol: UpstreamProtocol) -> None:
        departing = self._departing.pop(protocol)
        if departing.timer.active():
            departing.timer.cancel()
        protocol.counters.disconnects += 1
        self.log.info("upstream {member}: the old connection to {address} drained and closed",
                      member=self._member, address=departing.address)

    def _overdue(self, protocol: UpstreamProtocol) -> None:
        departing = self._departing.get(protocol)
        if departing is not None:
            protocol.abort(
                f"the old connection to {departing.address} did not close within "
                f"{self._limit:g} s of its half-close (stale_reply_timeout)"
            )

    def wait(self) -> Deferred[None]:
        """Fires once every draining connection has closed."""
        done: Deferred[None] = Deferred()
        DeferredList([protocol.when_closed() for protocol in self._departing]).addCallback(
            lambda _: done.callback(None))
        return done

    def abort_all(self, why: str) -> None:
        for protocol in list(self._departing):
            protocol.abort(why)

    def close_all(self) -> None:
        """The member stops: close them now, without waiting."""
        for protocol, departing in list(self._departing.items()):
            if departing.timer.active():
                departing.timer.cancel()
            protocol.close()

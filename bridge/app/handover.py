"""A changed upstream's new pool takes over from the old one without a gap.

When a reload changes an upstream's settings, its new pool starts connecting
while the old pool keeps taking the work: the registry switches to the new
pool once it is ready (``min_ready`` members connected), or once ``within``
seconds have passed (a new address that never answers does not keep the old
settings forever).  Only then does the old pool stop taking work and drain.
So a reload gives no moment of 503s to an upstream that was working.

A later reload before the switch abandons it: the pending new pool was never
used and is stopped, and that reload starts from the old pool.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from bridge.http.upstreams import Upstream, Upstreams

#: How often the new pool's readiness is looked at, seconds.
CHECK_INTERVAL = 0.05


class Handover:
    """Switches ``registry`` from ``old`` to ``new`` once ``new`` is ready.

    ``retire(old)`` drains and stops the old pool after the switch;
    ``discard(new)`` stops a new pool that was never switched to.
    :attr:`done` fires once it is all over (the old pool drained, or the new
    one discarded).
    """

    log = Logger(namespace="bridge.reload")

    def __init__(
        self,
        clock: IReactorTime,
        registry: Upstreams,
        old: Upstream,
        new: Upstream,
        within: float,
        retire: Callable[[Upstream], Deferred[None]],
        discard: Callable[[Upstream], Deferred[None] | None],
    ) -> None:
        self._clock = clock
        self._registry = registry
        self.old = old
        self.new = new
        self._retire = retire
        self._discard = discard
        self._deadline = clock.seconds() + within
        self.done: Deferred[None] = Deferred()
        self._loop = LoopingCall(self._check)
        self._loop.clock = clock

    def start(self) -> None:
        self._loop.start(CHECK_INTERVAL, now=True)

    def stop(self) -> None:
        """Shutdown: no switch any more (the service stops every pool)."""
        if self._loop.running:
            self._loop.stop()
            self._finish(succeed(None))

    def abandon(self) -> None:
        """A later reload came first: stop the new pool, keep the old one."""
        if self._loop.running:
            self._loop.stop()
            self._finish(self._discard(self.new) or succeed(None))

    def _check(self) -> None:
        ready = self.new.pool.ready()
        if not ready and self._clock.seconds() < self._deadline:
            return
        self._loop.stop()
        self._registry.swap(self.old, self.new)
        if self.new.spool is not None:
            self.new.spool.rebind(self.new.pool)  # the spool is the old one's: kept
        self.log.info(
            "upstream {name}: the new settings take the work ({why}); the old connections "
            "drain", name=self.new.name,
            why="connected" if ready else "not connected yet, but the wait is over")
        self._finish(self._retire(self.old))

    def _finish(self, finished: Deferred[None]) -> None:
        finished.chainDeferred(self.done)

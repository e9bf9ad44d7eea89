"""Work admission and graceful shutdown.

Counts the POST /send and /request calls being handled (``max_inflight``)
and runs the drain a sidecar needs on SIGTERM:

1. /readyz turns 503 at once, so the orchestrator stops routing to us;
2. after ``shutdown_delay`` new work is refused with 503 ``shutting_down``;
3. work in flight may finish until ``shutdown_grace`` runs out;
4. then the upstream side drains (see :meth:`UpstreamPool.drain`).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

RUNNING = "running"
DRAINING = "draining"  # not ready, still taking work (shutdown_delay)
REFUSING = "refusing"  # refusing new work, finishing what is in flight


class Lifecycle:
    """Admission counter and shutdown state machine of one bridge."""

    log = Logger()

    def __init__(self, clock: IReactorTime, max_inflight: int, delay: float, grace: float) -> None:
        self._clock = clock
        self.max_inflight = max_inflight
        self._delay = delay
        self._grace = grace
        self.state = RUNNING
        self.inflight = 0
        self.deadline: float | None = None
        self._idle: list[Deferred[None]] = []

    def configure(self, max_inflight: int, delay: float, grace: float) -> None:
        """New limits from a reload (a drain already running keeps its own)."""
        self.max_inflight = max_inflight
        self._delay = delay
        self._grace = grace

    @property
    def ready(self) -> bool:
        return self.state == RUNNING

    @property
    def refusing(self) -> bool:
        return self.state == REFUSING

    def started(self) -> None:
        self.inflight += 1

    def finished(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self._idle:
            waiting, self._idle = self._idle, []
            for waiter in waiting:
                waiter.callback(None)

    def shutdown(self) -> Deferred[None]:
        """Begin the drain; fires when in-flight work is done or grace ran out."""
        if self.state != RUNNING:
            done: Deferred[None] = Deferred()
            done.callback(None)
            return done
        self.state = DRAINING
        now = self._clock.seconds()
        self.deadline = now + self._delay + self._grace
        self.log.info(
            "shutting down: not ready now, refusing new work in {delay:g} s, "
            "then up to {grace:g} s for work in flight",
            delay=self._delay, grace=self._grace,
        )
        finished: Deferred[None] = Deferred()

        def refuse() -> None:
            self.state = REFUSING
            if self.inflight == 0:
                finished.callback(None)
                return
            self.log.info("waiting for {count} requests in flight", count=self.inflight)
            idle: Deferred[None] = Deferred()
            self._idle.append(idle)
            timer: IDelayedCall = self._clock.callLater(self._grace, give_up)

            def done(_: None) -> None:
                if timer.active():
                    timer.cancel()
                if not finished.called:
                    finished.callback(None)

            idle.addCallback(done)

        def give_up() -> None:
            self.log.warn(
                "shutdown_grace over with {count} requests still in flight", count=self.inflight
            )
            if not finished.called:
                finished.callback(None)

        if self._delay > 0:
            self._clock.callLater(self._delay, refuse)
        else:
            refuse()
        return finished

    def remaining(self) -> float:
        """Seconds left of the grace period (0 when none is running)."""
        if self.deadline is None:
            return 0.0
        return max(0.0, self.deadline - self._clock.seconds())

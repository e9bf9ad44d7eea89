"""Find half-open upstream connections by asking them something when idle."""

from __future__ import annotations

import re

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from bridge.upstream.protocol import UpstreamProtocol
from bridge.upstream.replies.frames import Frame


class Heartbeat:
    """Sends ``line`` once the connection has been idle ``interval`` seconds.

    A reply must arrive within ``timeout`` (and match ``expect`` when given);
    otherwise the connection is closed so that ClientService makes a new one.
    Heartbeats stop once the connection takes no more work (draining or
    closing); what a failure does to a draining connection is the
    connection's rule (:mod:`bridge.upstream.connection_states`).
    """

    log = Logger()

    def __init__(
        self,
        protocol: UpstreamProtocol,
        clock: IReactorTime,
        line: bytes,
        interval: float,
        timeout: float,
        expect: str | None,
    ) -> None:
        self._protocol = protocol
        self._clock = clock
        self._line = line
        self._interval = interval
        self._timeout = timeout
        self._expect = re.compile(expect.encode("utf-8")) if expect else None
        self._call: IDelayedCall | None = None
        self._waiting = False

    def start(self) -> None:
        self._schedule(self._interval)
        self._protocol.on_lost(lambda reason: self.stop())

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self, delay: float) -> None:
        self._call = self._clock.callLater(max(delay, 0.0), self._tick)

    def _tick(self) -> None:
        self._call = None
        if not self._protocol.accepts_work():
            return
        idle = self._clock.seconds() - self._protocol.last_activity
        if idle < self._interval or self._protocol.pending:
            self._schedule(self._interval - idle if idle < self._interval else self._interval)
            return
        reply = self._protocol.ask(self._line, self._timeout)
        reply.addCallbacks(self._answered, self._unanswered)

    def _answered(self, replies: list[Frame]) -> None:
        text = replies[0].text
        if self._expect is not None and not self._expect.search(text):
            self._protocol.heartbeat_failed(
                f"heartbeat reply {text[:200]!r} does not match {self._expect.pattern!r}")
            return
        if self._protocol.accepts_work():
            self._schedule(self._interval)

    def _unanswered(self, failure: Failure) -> None:
        self._protocol.heartbeat_failed(f"no heartbeat reply within {self._timeout:g} s")

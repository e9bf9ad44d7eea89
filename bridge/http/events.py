"""GET /events: lines nobody asked for, as Server-Sent Events.

Each subscriber is a push producer on its HTTP connection.  While the
connection's write buffer is full the subscriber queues events; once it is
``max_backlog`` events behind it is dropped, so a client that does not read
never makes the bridge buffer without bound.
"""

from __future__ import annotations

import json
from collections import deque

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from zope.interface import implementer

from bridge.upstream.replies.frames import Frame


def format_event(kind: str, member: str, sequence: int, line: bytes) -> bytes:
    """One SSE event.  Backslash and CR are escaped (``\\\\``, ``\\r``): a CR
    would otherwise end the ``data:`` field early and let the upstream inject
    fields of its own."""
    text = line.decode("utf-8", "replace").replace("\\", "\\\\").replace("\r", "\\r")
    return f"event: {kind}\nid: {member}.{sequence}\ndata: {text}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"


@implementer(IPushProducer)
class Subscriber:
    """One open GET /events response."""

    def __init__(self, hub: EventHub, request: IRequest, max_backlog: int) -> None:
        self._hub = hub
        self._request = request
        self._max_backlog = max_backlog
        self._paused = False
        self._backlog: deque[bytes] = deque()
        self.closed = False

    def deliver(self, event: bytes) -> None:
        if self.closed:
            return
        if not self._paused:
            self._request.write(event)
            return
        if len(self._backlog) >= self._max_backlog:
            self._hub.drop(self, f"more than {self._max_backlog} events behind")
            return
        self._backlog.append(event)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while self._backlog and not self._paused and not self.closed:
            self._request.write(self._backlog.popleft())

    def stopProducing(self) -> None:
        self._hub.remove(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._backlog.clear()
        transport = getattr(self._request, "channel", None)
        transport = getattr(transport, "transport", None)
        if transport is not None:
            transport.abortConnection()


class EventHub:
    """Fans unsolicited upstream lines out to every subscriber."""

    log = Logger()

    def __init__(self, clock: IReactorTime, max_backlog: int, heartbeat: float) -> None:
        self._clock = clock
        self._max_backlog = max_backlog
        self._heartbeat = heartbeat
        self._subscribers: list[Subscriber] = []
        self._sequence = 0
        self._timer: IDelayedCall | None = None
        self.published = 0
        self.dropped = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, member: str, line: bytes) -> None:
        self._sequence += 1
        self.published += 1
        if not self._subscribers:
            return
        event = format_event(kind, member, self._sequence, line)
        for subscriber in list(self._subscribers):
            subscriber.deliver(event)

    def publish_frame(self, kind: str, member: str, frame: Frame, line: int | None) -> None:
        """One event per upstream frame nobody waits for; a ``send_error``
        carries the number of the /send line it answers."""
        if line is not None:
            lines = [json.dumps({"line": line, "reply": frame.value}, ensure_ascii=False)]
        else:
            lines = frame.event_lines()
        self.publish(kind, member, "\n".join(lines).encode("utf-8"))

    def subscribe(self, request: IRequest) -> Subscriber:
        subscriber = Subscriber(self, request, self._max_backlog)
        self._subscribers.append(subscriber)
        request.registerProducer(subscriber, True)  # type: ignore[attr-defined]
        if self._timer is None:
            self._timer = self._clock.callLater(self._heartbeat, self._keepalive)
        return subscriber

    def remove(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
        subscriber.closed = True
        if not self._subscribers and self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def drop(self, subscriber: Subscriber, why: str) -> None:
        self.dropped += 1
        self.log.info("dropping an /events subscriber: {why}", why=why)
        # close() before remove(): remove() marks the subscriber closed, and
        # close() does nothing for a closed one (the connection stayed open).
        subscriber.close()
        self.remove(subscriber)

    def close_all(self) -> None:
        for subscriber in list(self._subscribers):
            subscriber.close()
            self.remove(subscriber)

    def _keepalive(self) -> None:
        self._timer = None
        for subscriber in list(self._subscribers):
            subscriber.deliver(KEEPALIVE)
        if self._subscribers:
            self._timer = self._clock.callLater(self._heartbeat, self._keepalive)

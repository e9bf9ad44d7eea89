"""GET /events: what the upstream says unasked, as Server-Sent Events.

Each subscriber is a push producer on its HTTP connection.  The transport
pauses it as soon as more than 64 KiB wait to be sent, which within one
reactor iteration happens long before the socket had a chance to take
anything; so events are queued while it is paused and a subscriber is never
judged by how many events one burst brought.  It is dropped only when it
does not read:

* more than ``max_backlog`` events wait *and* the transport has not resumed
  it for ``stall_timeout`` seconds (it took nothing in that time), or
* more than :data:`MAX_QUEUED_BYTES` wait, whatever its pace.

A dropped subscriber gets a last ``event: dropped`` saying why and a proper
end of the chunked response (an EventSource then reconnects by itself with
``Last-Event-ID`` and catches up from the hub's replay, see
:mod:`bridge.http.replay`).  As a client that does not read may never take
those bytes, its connection is aborted if it is still open ``stall_timeout``
seconds later.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from zope.interface import implementer

from bridge.http.replay import EventLog
from bridge.http.sse import KEEPALIVE, format_event
from bridge.upstream.replies.frames import Frame

MiB = 1024 * 1024

#: Hard cap on the bytes queued for one subscriber; past it the subscriber is
#: dropped at once.  One reactor iteration adds far less (the bridge reads at
#: most 64 KiB from each upstream connection per iteration), so only a client
#: slower than the upstream for a long stretch gets here; without the cap it
#: could make the bridge buffer without bound for ``stall_timeout`` seconds.
MAX_QUEUED_BYTES = 64 * MiB

#: Bytes joined into one write while a subscriber catches up.  Twisted's
#: transport pauses its producer past 64 KiB and sends at most 128 KiB per
#: reactor iteration, so each resume refills about one iteration's worth.
FLUSH_BYTES = 64 * 1024


@implementer(IPushProducer)
class Subscriber:
    """One open GET /events response."""

    def __init__(
        self, hub: EventHub, request: IRequest, clock: IReactorTime, max_backlog: int,
        stall_timeout: float,
    ) -> None:
        self._hub = hub
        self._request = request
        self._clock = clock
        self._max_backlog = max_backlog
        self._stall_timeout = stall_timeout
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._paused = False
        self._paused_at = 0.0
        self._stall_timer: IDelayedCall | None = None
        self.closed = False
        #: What the route returns to Klein.  It fires (with None) only once the
        #: response is finished; Klein cancels it when the client goes away.
        self.stream: Deferred[None] = Deferred(lambda _: hub.remove(self))

    # -- from the hub --------------------------------------------------------------

    def deliver(self, event: bytes) -> None:
        """Send ``event`` now if the connection takes it, else queue it."""
        if self.closed:
            return
        if not self._paused and not self._queue:
            self._request.write(event)
            return
        self._queue.append(event)
        self._queued_bytes += len(event)
        if self._queued_bytes > MAX_QUEUED_BYTES:
            self._hub.drop(self, f"more than {MAX_QUEUED_BYTES // MiB} MiB of events "
                                 "waited for the client")
        elif not self._paused:
            self._flush()
        elif len(self._queue) > self._max_backlog and self._stall_timer is None:
            self._watch_stall()

    def keepalive(self) -> None:
        """A comment for proxies, only when nothing is waiting to be sent (a
        connection with bytes still unsent gains nothing from more)."""
        if not self.closed and not self._paused and not self._queue:
            self._request.write(KEEPALIVE)

    def end(self, last: bytes, close_within: float) -> None:
        """Finish the response with ``last`` and a proper end of the chunked
        body, so the client sees a stream that ended, not a reset; then close
        the connection once those bytes are sent, or abort it if they are not
        taken within ``close_within`` seconds."""
        if self.closed:
            return
        self.stop()
        request: Any = self._request
        channel = request.channel
        request.unregisterProducer()
        if last:
            request.write(last)
        request.finish()
        close = getattr(channel, "close_within", None)
        if close is not None:
            close(close_within)
        elif channel.transport is not None and not channel.transport.disconnecting:
            channel.loseConnection()  # a channel of another Site: no abort timer
        self.stream.callback(None)  # Klein sees a finished request: nothing more

    def stop(self) -> None:
        """The connection is gone: forget what waits and stop every timer."""
        self.closed = True
        self._cancel_stall_timer()
        self._queue.clear()
        self._queued_bytes = 0

    # -- IPushProducer (called by the connection) -----------------------------------

    def pauseProducing(self) -> None:
        # Called on every write while the transport's buffer is full: only
        # the first call starts the stall clock.
        if not self._paused:
            self._paused = True
            self._paused_at = self._clock.seconds()

    def resumeProducing(self) -> None:
        if self.closed:
            return
        self._paused = False
        self._cancel_stall_timer()
        self._flush()
        if self._paused and len(self._queue) > self._max_backlog:
            self._watch_stall()

    def stopProducing(self) -> None:
        self._hub.remove(self)

    # -- inside ---------------------------------------------------------------------

    def _flush(self) -> None:
        queue = self._queue
        while queue and not self._paused and not self.closed:
            batch: list[bytes] = []
            size = 0
            while queue and size < FLUSH_BYTES:
                event = queue.popleft()
                batch.append(event)
                size += len(event)
            self._queued_bytes -= size
            self._request.write(b"".join(batch))

    def _watch_stall(self) -> None:
        """Drop when still paused ``stall_timeout`` s after the pause began."""
        left = self._paused_at + self._stall_timeout - self._clock.seconds()
        if left <= 0:
            self._stalled()
        else:
            self._stall_timer = self._clock.callLater(left, self._stalled)

    def _stalled(self) -> None:
        self._stall_timer = None
        if self._paused and not self.closed and len(self._queue) > self._max_backlog:
            self._hub.drop(self, f"the connection took nothing for {self._stall_timeout:g} s "
                                 f"while more than {self._max_backlog} events waited")

    def _cancel_stall_timer(self) -> None:
        if self._stall_timer is not None:
            if self._stall_timer.active():
                self._stall_timer.cancel()
            self._stall_timer = None


class EventHub:
    """Fans events out to every subscriber and keeps recent ones for replay.

    ``boot`` is this process's token in event ids (``<boot>-<sequence>``);
    the service draws a random one, tests pass a fixed one.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        boot: str,
        *,
        max_backlog: int = 1000,
        stall_timeout: float = 10.0,
        heartbeat: float = 15.0,
        replay: int = 1000,
        upstream: str = "default",
    ) -> None:
        self._clock = clock
        self._route = "/events" if upstream == "default" else f"/u/{upstream}/events"
        self._log = EventLog(boot, replay)
        self._max_backlog = max_backlog
        self._stall_timeout = stall_timeout
        self._heartbeat = heartbeat
        self._subscribers: dict[Subscriber, None] = {}  # ordered, O(1) removal
        self._timer: IDelayedCall | None = None
        self.published = 0
        self.dropped = 0

    @property
    def boot(self) -> str:
        return self._log.boot

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, lines: Sequence[str], json_lines: bool = False) -> None:
        """One event of ``kind`` whose data is ``lines`` (one ``data:`` field
        each; EventSource joins them with LF).  ``json_lines`` are sent as they
        are (JSON text holds no raw CR or LF); other lines are escaped."""
        event = self._log.record(kind, lines, json_lines)
        self.published += 1
        for subscriber in tuple(self._subscribers):
            subscriber.deliver(event)

    def publish_frame(self, kind: str, member: str, frame: Frame, line: int | None) -> None:
        """One event per upstream frame nobody waits for (the pool's listener).
        A ``send_error`` is JSON ``{"line": N, "reply": ...}`` naming the /send
        line it answers; RESP values are JSON; other frames are their lines."""
        if line is not None:
            lines = [json.dumps({"line": line, "reply": frame.value}, ensure_ascii=False)]
            self.publish(kind, lines, json_lines=True)
        else:
            self.publish(kind, frame.event_lines(), json_lines=frame.json_events)

    def subscribe(self, request: IRequest, last_event_id: bytes | str | None = None) -> Subscriber:
        """Stream events to ``request``: first what a client that last saw
        ``last_event_id`` missed (see :meth:`EventLog.resume`), then live
        events.  Return the subscriber; its ``stream`` is the route's answer."""
        if isinstance(last_event_id, bytes):
            last_event_id = last_event_id.decode("utf-8", "replace")
        subscriber = Subscriber(self, request, self._clock, self._max_backlog,
                                self._stall_timeout)
        self._subscribers[subscriber] = None
        request.registerProducer(subscriber, True)  # type: ignore[attr-defined]
        finished: Deferred[None] = request.notifyFinish()  # type: ignore[attr-defined]
        finished.addBoth(lambda _: self.remove(subscriber))
        if self._timer is None:
            self._timer = self._clock.callLater(self._heartbeat, self._keepalive)
        resume = self._log.resume(last_event_id)
        if resume.gap is not None:
            subscriber.deliver(resume.gap)
        for event in resume.events:
            subscriber.deliver(event)
        return subscriber

    def remove(self, subscriber: Subscriber) -> None:
        """Forget ``subscriber`` (its connection is gone or its stream ended)."""
        self._detach(subscriber)
        subscriber.stop()

    def _detach(self, subscriber: Subscriber) -> None:
        self._subscribers.pop(subscriber, None)
        if not self._subscribers and self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def drop(self, subscriber: Subscriber, why: str) -> None:
        """End a subscriber that does not read, telling it why."""
        self.dropped += 1
        self.log.info("dropping an {route} subscriber: {why}", route=self._route, why=why)
        self._end(subscriber, format_event("dropped", None, [why]))

    def close_all(self) -> None:
        """End every stream properly (the bridge is stopping)."""
        for subscriber in tuple(self._subscribers):
            self._end(subscriber, b"")

    def _end(self, subscriber: Subscriber, last: bytes) -> None:
        self._detach(subscriber)
        subscriber.end(last, self._stall_timeout)

    def _keepalive(self) -> None:
        self._timer = None
        for subscriber in tuple(self._subscribers):
            subscriber.keepalive()
        if self._subscribers:
            self._timer = self._clock.callLater(self._heartbeat, self._keepalive)

"""The light request object of the hot routes and of refusals.

For a one-line ``POST /send`` the bridge's own work is a few microseconds;
a twisted.web Request (Headers objects, producers, Componentized) costs more
than that.  The hot routes' handlers, the gate and every refusal use only
this small part of ``IRequest``, answered in one write by the channel.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.python.failure import Failure
from twisted.web.http import parse_qs

if TYPE_CHECKING:
    from bridge.http.channel import Channel


class HotRequest:
    """The part of IRequest that the gate and the hot handlers use."""

    __slots__ = ("_body", "_channel", "_finished", "_headers", "_notify", "_query",
                 "args_cache", "code", "content", "method", "path", "quiet", "received_at",
                 "response_headers", "route_label", "sentLength", "uri")

    def __init__(
        self,
        channel: Channel,
        method: bytes,
        path: bytes,
        query: bytes,
        uri: bytes,
        headers: dict[bytes, bytes],
        body: bytes,
        received_at: float,
        route_label: str,
        quiet: bool = False,
    ) -> None:
        self._channel = channel
        self.method = method
        self.uri = uri
        self.path = path
        self._query = query
        self._headers = headers
        self.content = io.BytesIO(body)
        self.received_at = received_at
        self.route_label = route_label
        self.quiet = quiet
        self.code = 200
        self.response_headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._finished = False
        self._notify: list[Deferred[None]] = []
        self.args_cache: dict[bytes, list[bytes]] | None = None
        self.sentLength = 0

    @property
    def args(self) -> dict[bytes, list[bytes]]:
        if self.args_cache is None:
            # twisted.web's own query parser (splits on ; too, keeps blank values).
            self.args_cache = parse_qs(self._query, 1) if self._query else {}
        return self.args_cache

    def getHeader(self, name: bytes) -> bytes | None:
        return self._headers.get(name.lower())

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length":
            return  # the channel writes it from the body
        headers = self.response_headers
        for index, (old, _) in enumerate(headers):
            if old.lower() == lowered:  # set, not add (Connection: close twice)
                headers[index] = (name, value)
                return
        headers.append((name, value))

    def getClientAddress(self) -> IAddress | None:
        return self._channel.peer

    def write(self, data: bytes) -> None:
        self._body.append(data)

    def notifyFinish(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if self._finished:
            waiter.callback(None)
        else:
            self._notify.append(waiter)
        return waiter

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        body, self._body = b"".join(self._body), []
        self._channel.respond(self, body)
        waiting, self._notify = self._notify, []
        for waiter in waiting:
            waiter.callback(None)

    def connectionLost(self, reason: Failure) -> None:
        """The connection went away before the answer."""
        if self._finished:
            return
        self._finished = True
        waiting, self._notify = self._notify, []
        for waiter in waiting:
            waiter.errback(reason)

    def wants_close(self) -> bool:
        for name, value in self.response_headers:
            if name.lower() == b"connection" and value.lower() == b"close":
                return True
        return False

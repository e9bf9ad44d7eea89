"""A real twisted.web Request for the routes Klein renders (/status, /metrics,
/events), fed by our parser instead of twisted.web's.

twisted.web's ``HTTPChannel`` never sees a byte: the request's head and body
come from the channel's llhttp parser, and :class:`WebChannel` is the small
part of ``HTTPChannel`` a Request uses to answer (status line and headers,
body writes, chunked streaming, producers for backpressure, the log and the
end of the request).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IAddress, IProducer, ISSLTransport
from twisted.web.http import parse_qs
from twisted.web.http_headers import Headers
from twisted.web.server import Request

if TYPE_CHECKING:
    from bridge.http.channel import Channel


class WebChannel:
    """What one :class:`WebRequest` needs from its connection."""

    def __init__(self, connection: Channel) -> None:
        self._connection = connection
        self.transport = connection.transport
        self.site = connection.site
        self.factory = connection.site  # Request.finish() calls factory.log(request)

    def getPeer(self) -> IAddress:
        assert self.transport is not None
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        assert self.transport is not None
        return self.transport.getHost()

    def isSecure(self) -> bool:
        return ISSLTransport(self.transport, None) is not None

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Headers) -> None:
        if self._connection.closing_after_answer():
            headers.setRawHeaders(b"Connection", [b"close"])
        lines = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                lines.extend((name, b": ", value, b"\r\n"))
        lines.append(b"\r\n")
        assert self.transport is not None
        self.transport.writeSequence(lines)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        assert self.transport is not None
        self.transport.writeSequence(data)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        # The socket pauses the producer when its buffer fills and resumes it
        # once drained (GET /events' subscribers are push producers).
        transport: Any = self.transport
        transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        transport: Any = self.transport
        transport.unregisterProducer()

    def requestDone(self, request: WebRequest) -> None:
        self._connection.web_request_done(request)

    def loseConnection(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def close_within(self, seconds: float) -> None:
        """Close once what was written is sent, abort after ``seconds``."""
        self._connection.close_within(seconds)


class WebRequest(Request):
    """A twisted.web Request set up from an already parsed request."""

    received_at: float
    route_label: str
    quiet: bool

    def __init__(
        self,
        connection: Channel,
        method: bytes,
        version: bytes,
        path: bytes,
        query: bytes,
        uri: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        received_at: float,
        route_label: str,
        quiet: bool,
    ) -> None:
        super().__init__(WebChannel(connection), parsePOSTFormSubmission=False)
        for name, value in headers:
            self.requestHeaders.addRawHeader(name, value)
        self.content = io.BytesIO(body)
        self.method, self.uri, self.clientproto = method, uri, version
        self.path = path
        self.args = parse_qs(query, 1) if query else {}
        self.received_at = received_at
        self.route_label = route_label
        self.quiet = quiet
        # What Request.process() and Site.getResourceFor() would set up; the
        # route was already decided, so the resource is rendered directly.
        self.site: Any = connection.site
        self.sitepath: list[bytes] = []
        self.prepath: list[bytes] = []
        self.postpath = path[1:].split(b"/")
        self.setHeader(b"Date", connection.site.http_date())
        self.parseCookies()

    def closing(self) -> bool:
        """Whether the answer asks for the connection to close, or has no
        length (HTTP/1.0 without Content-Length: its end is the close)."""
        if self.responseHeaders.getRawHeaders(b"Connection") == [b"close"]:
            return True
        return not self.chunked and not self.responseHeaders.hasHeader(b"Content-Length") \
            and self.method != b"HEAD" and self.code not in (204, 304)

"""A fast lane for the hot routes, in front of twisted.web.

For a one-line ``POST /send`` the bridge's own work is a few microseconds;
twisted.web's per-request machinery (line-by-line header parsing, Headers
objects, Request objects, producers) costs far more.  This protocol serves the
plainest requests to the hot routes itself and hands everything else to
twisted.web, unchanged:

* it serves only ``POST /send``, ``POST /request`` and ``GET /healthz|/readyz``
  over HTTP/1.1 with a ``Content-Length`` (or no body), without
  ``Transfer-Encoding``, ``Expect``, header folding or anything unusual;
* anything else, at a request boundary, makes the connection a twisted.web
  connection for good: the bytes not yet parsed are handed to a real
  ``HTTPChannel``, which handles, or rejects, every corner of HTTP;
* the routes, the token check, admission and shutdown are the same code
  (:class:`bridge.http.gate.Gate` and the API's handlers) through a small request
  object that offers the part of ``IRequest`` they use.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, parse_qs
from twisted.web.server import NOT_DONE_YET

from bridge.http.web import TIMEOUT_MESSAGE, closing_response, error_body, too_large_response

if TYPE_CHECKING:
    from bridge.http.web import BridgeSite

LOG = Logger(namespace="bridge.http.fasthttp")
HOT = frozenset({(b"POST", b"/send"), (b"POST", b"/request"), (b"GET", b"/healthz"),
                 (b"GET", b"/readyz")})
MAX_HEAD = 16384  # twisted.web's totalHeadersSize
_UNSAFE_HEADERS = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"te", b"trailer"})
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_NOT_VCHAR = bytes(range(33)) + bytes(range(127, 256))  # not in a request-target
MAX_HEADERS = 500  # twisted.web's HTTPChannel.maxHeaders
_PLAIN_CONNECTION = frozenset({b"", b"close", b"keep-alive"})


class FastRequest:
    """The part of IRequest that the Gate and the API handlers use."""

    __slots__ = ("_body", "_channel", "_finished", "_headers", "_notify", "_query",
                 "_response_headers", "args_cache", "code", "content", "method", "path",
                 "received_at", "sentLength", "uri")

    def __init__(
        self,
        channel: FastChannel,
        method: bytes,
        uri: bytes,
        headers: dict[bytes, bytes],
        body: bytes,
        received_at: float,
    ) -> None:
        self._channel = channel
        self.method = method
        self.uri = uri
        path, _, self._query = uri.partition(b"?")
        self.path = path
        self._headers = headers
        self.content = io.BytesIO(body)
        self.received_at = received_at
        self.code = 200
        self._response_headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._finished = False
        self._notify: list[Deferred[None]] = []
        self.args_cache: dict[bytes, list[bytes]] | None = None
        self.sentLength = 0

    @property
    def args(self) -> dict[bytes, list[bytes]]:
        if self.args_cache is None:
            # twisted.web's own parser (splits on ; too, keeps blank values).
            self.args_cache = parse_qs(self._query, 1) if self._query else {}
        return self.args_cache

    def getHeader(self, name: bytes) -> bytes | None:
        return self._headers.get(name.lower())

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length":
            return  # computed in finish()
        headers = self._response_headers
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
        self._channel.respond(self, b"".join(self._body))
        self._body = []
        waiting, self._notify = self._notify, []
        for waiter in waiting:
            waiter.callback(None)

    def lost(self, reason: Failure) -> None:
        """The connection went away before the answer."""
        if self._finished:
            return
        self._finished = True
        waiting, self._notify = self._notify, []
        for waiter in waiting:
            waiter.errback(reason)

    def wants_close(self) -> bool:
        for name, value in self._response_headers:
            if name.lower() == b"connection" and value.lower() == b"close":
                return True
        return False


class FastChannel(Protocol):
    """One HTTP connection: fast lane until something unusual arrives."""

    def __init__(self, site: BridgeSite, addr: IAddress | None) -> None:
        self.site = site
        self.peer = addr
        self._buffer = b""
        self._current: FastRequest | None = None
        self._delegate: Any = None
        self._closing = False
        self._waiting_since: float | None = None
        self._deadline: IDelayedCall | None = None
        self._paused = False
        self._serving = False
        self._judged = -1  # the unfinished head is judged up to here (_may_be_plain)

    # -- connection -----------------------------------------------------------

    def connectionMade(self) -> None:
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        self._waiting_since = self.site.reactor.seconds()
        self._deadline = self.site.reactor.callLater(self.site.request_timeout, self._check)

    def dataReceived(self, data: bytes) -> None:
        if self._delegate is not None:
            # After twisted.web closed the connection (say, a 400), a TLS layer
            # may still deliver decrypted bytes; HTTPChannel is not ready for them.
            if not getattr(self.transport, "disconnecting", False):
                self._delegate.dataReceived(data)
            return
        if self._closing:
            return
        self._buffer += data
        if self._current is None:
            self._serve()
        elif len(self._buffer) > MAX_HEAD and not self._paused:
            # A pipelining client is ahead of us: stop reading until we answer.
            self._paused = True
            producer = IPushProducer(self.transport, None)
            if producer is not None:
                producer.pauseProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_deadline()
        if self._delegate is not None:
            self._delegate.connectionLost(reason)
            return
        current, self._current = self._current, None
        if current is not None:
            current.lost(reason)

    # -- parsing ------------------------------------------------------------------

    def _serve(self) -> None:
        """Serve every complete request in the buffer, one at a time."""
        if self._serving:
            return  # an answer finished inside this loop: the loop goes on
        self._serving = True
        try:
            self._serve_buffered()
        finally:
            self._serving = False

    def _serve_buffered(self) -> None:
        while self._current is None and not self._closing and self._delegate is None:
            buffer = self._buffer
            end = buffer.find(b"\r\n\r\n")
            if end < 0 or end > MAX_HEAD:
                if end >= 0 or len(buffer) > MAX_HEAD or not self._may_be_plain(buffer):
                    self._hand_off()
                return
            parsed = self._parse_head(buffer[:end])
            if parsed is None:
                self._hand_off()
                return
            method, uri, headers, length = parsed
            limit = self.site.max_body_bytes
            if length > limit:
                self._too_large(method, uri, length, limit)
                return
            start = end + 4
            if len(buffer) < start + length:
                return
            self._buffer = buffer[start + length:]
            self._judged = -1
            self._waiting_since = None
            request = FastRequest(
                self, method, uri, headers, buffer[start:start + length],
                self.site.reactor.seconds(),
            )
            if headers.get(b"connection", b"").lower() == b"close":
                request.setHeader(b"Connection", b"close")
            self._current = request
            self._render(request)

    def _may_be_plain(self, buffer: bytes) -> bool:
        """Whether an unfinished head may still be one served here.  Its lines
        are judged as they complete, as twisted.web judges them (a bad one gets
        its 400 before the rest of the head comes); each time a line completes,
        so at most MAX_HEADERS + 1 times per head."""
        last = buffer.rfind(b"\r\n")
        if last <= self._judged:
            return True
        self._judged = last
        return self._parse_head(buffer[:last]) is not None

    @staticmethod
    def _parse_head(
        head: bytes,
    ) -> tuple[bytes, bytes, dict[bytes, bytes], int] | None:
        """The request line and headers of a plain hot-route request, or None."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] != b"HTTP/1.1":
            return None
        method, uri = parts[0], parts[1]
        path, _, query = uri.partition(b"?")
        if (method, path) not in HOT or len(lines) > MAX_HEADERS + 1:
            return None
        if query and len(query.translate(None, _NOT_VCHAR)) != len(query):
            return None  # twisted.web answers 400 (or not) for these
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name.translate(None, _TCHAR):  # not a token
                return None
            key = name.lower()
            if key in headers or key in _UNSAFE_HEADERS:
                return None
            if b"\r" in value or b"\n" in value or b"\x00" in value:
                return None
            headers[key] = value.strip(b" \t")
        if headers.get(b"connection", b"").lower() not in _PLAIN_CONNECTION:
            return None  # a list of options, maybe with close: twisted.web decides
        length_text = headers.get(b"content-length", b"0")
        if not length_text.isdigit() or len(length_text) > 12:
            return None
        return method, uri, headers, int(length_text)

    def _hand_off(self) -> None:
        """From now on this connection is twisted.web's."""
        self._stop_deadline()
        channel = self.site.web_channel(self.peer)
        self._delegate = channel
        channel.makeConnection(self.transport)
        if self._waiting_since is not None:
            channel.waiting_since(self._waiting_since)
        self._resume_reading()
        buffered, self._buffer = self._buffer, b""
        if buffered:
            channel.dataReceived(buffered)

    # -- answering ------------------------------------------------------------------

    def _render(self, request: FastRequest) -> None:
        try:
            result = self.site.resource.render(request)
        except Exception:
            LOG.failure("unhandled error answering {path}", path=request.path)
            request.setResponseCode(500)
            request.setHeader(b"Content-Type", b"application/json")
            result = error_body("internal_error", "internal error; see the log")
        if result is NOT_DONE_YET:
            return
        request.write(result)
        request.finish()

    def respond(self, request: FastRequest, body: bytes) -> None:
        """Write one whole answer (called by FastRequest.finish)."""
        if self._current is request:
            self._current = None
        transport = self.transport
        if transport is None or self._delegate is not None:
            return
        code = request.code
        reason = RESPONSES.get(code, b"Unknown")
        close = request.wants_close()
        head = [b"HTTP/1.1 %d %s\r\nDate: %s\r\n" % (code, reason, self.site.http_date())]
        for name, value in request._response_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"Content-Length: %d\r\n\r\n" % len(body))
        transport.write(b"".join(head) + body)
        request.sentLength = len(body)
        self.site.log(request)
        if close:
            self._closing = True
            transport.loseConnection()
            return
        self._waiting_since = self.site.reactor.seconds()
        self._resume_reading()
        if self._buffer:
            self._serve()

    def _resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            producer = IPushProducer(self.transport, None)
            if producer is not None:
                producer.resumeProducing()

    def _too_large(self, method: bytes, uri: bytes, length: int, limit: int) -> None:
        """Refuse before reading the body, and close (the body is never read)."""
        self._closing = True
        self._stop_deadline()
        request = FastRequest(self, method, uri, {}, b"", self.site.reactor.seconds())
        request.code = 413
        assert self.transport is not None
        self.transport.write(
            too_large_response(f"the body is {length} bytes; max_body_bytes is {limit}")
        )
        self.site.count_request(request, 413)
        self.transport.loseConnection()

    # -- request deadline (see bridge.http.web.DeadlineChannel) -----------------------------

    def _stop_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _check(self) -> None:
        self._deadline = None
        if self._delegate is not None or self.transport is None:
            return
        timeout = self.site.request_timeout
        now = self.site.reactor.seconds()
        if self._waiting_since is None or self._current is not None:
            self._deadline = self.site.reactor.callLater(timeout, self._check)
            return
        left = self._waiting_since + timeout - now
        if left > 0:
            self._deadline = self.site.reactor.callLater(left, self._check)
            return
        transport = self.transport
        self._closing = True
        if self._buffer:
            transport.write(
                closing_response(b"408 Request Timeout", "request_timeout", TIMEOUT_MESSAGE))
        transport.loseConnection()
        self._deadline = self.site.reactor.callLater(
            1.0, getattr(transport, "abortConnection", transport.loseConnection)
        )

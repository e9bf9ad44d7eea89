"""The HTTP server side: request body limits, access log, the Site.

twisted.web buffers the whole body before a handler runs and has no size
limit of its own.  :class:`LimitedRequest` refuses a declared
``Content-Length`` over the limit before reading any of the body, and stops
buffering a chunked body as soon as it passes the limit.
"""

from __future__ import annotations

import io
import json
from typing import Any, Callable

from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, datetimeToString
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

PROBE_PATHS = frozenset({b"/healthz", b"/readyz", b"/metrics"})

# Module level on purpose: a Logger reached through a class or an instance is
# rebound (Logger.__get__) to the namespace "bridge.http.web.BridgeSite".
ACCESS_LOG = Logger(namespace="bridge.access")
LOG = Logger(namespace="bridge.http.web")


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode("utf-8")


def too_large_response(message: str) -> bytes:
    """The whole 413 answer sent before the body is read (then we close)."""
    return closing_response(b"413 Content Too Large", "body_too_large", message)


TIMEOUT_MESSAGE = "the request was not received in time"


def closing_response(status: bytes, code: str, message: str) -> bytes:
    """A whole JSON error answer written straight to the transport, outside
    any Request, just before the connection is closed."""
    body = error_body(code, message)
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )


class LimitedRequest(Request):
    """A Request whose body may not exceed ``site.max_body_bytes``."""

    body_too_large = False
    received_at: float | None = None
    _received = 0

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.received_at = self.channel.site.reactor.seconds()  # type: ignore[attr-defined]
        super().requestReceived(command, path, version)

    def gotLength(self, length: int | None) -> None:
        limit: int = self.channel.site.max_body_bytes  # type: ignore[attr-defined]
        if length is not None and length > limit:
            self.body_too_large = True
            self._refuse(
                f"the body is {length} bytes; max_body_bytes is {limit}",
            )
            return
        # Small bodies in memory, large ones in a temporary file (as
        # twisted.web does), so max_inflight large bodies cannot exhaust memory.
        try:
            super().gotLength(length)
        except OSError as error:
            # No writable temporary directory (a read-only container without
            # its /tmp volume): keep the body in memory rather than fail.
            LOG.warn(
                "no temporary file for a request body ({error}); keeping it in memory; "
                "give the bridge a writable TMPDIR", error=error,
            )
            self.content = io.BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        self._received += len(data)
        limit: int = self.channel.site.max_body_bytes  # type: ignore[attr-defined]
        if self._received > limit:
            self.body_too_large = True
            self._refuse(f"the body is over max_body_bytes ({limit} bytes)")
            return
        assert self.content is not None
        self.content.write(data)

    def process(self) -> None:
        if self.body_too_large:
            return  # already answered 413; the connection is closing
        super().process()

    def _refuse(self, message: str) -> None:
        """Answer 413 now and close: the rest of the body is never read."""
        # HTTPChannel answers "Expect: 100-continue" right after gotLength();
        # a "100 Continue" after our final answer would corrupt the stream.
        self.requestHeaders.removeHeader(b"Expect")
        self.content = io.BytesIO()
        channel = self.channel
        transport = channel.transport
        assert transport is not None
        transport.write(too_large_response(message))
        if self.path is None:
            # Refused from gotLength(): requestReceived() has not run, so path
            # is still None, which the request counters cannot take.
            uri: bytes = getattr(channel, "_path", b"")
            self.method = getattr(channel, "_command", self.method)
            self.uri, self.path = uri, uri.split(b"?", 1)[0]
        self.channel.site.count_request(self, 413)  # type: ignore[attr-defined]
        channel.loseConnection()


class DeadlineChannel(HTTPChannel):
    """An HTTP connection that must deliver each request within
    ``site.request_timeout`` seconds of becoming idle (slowloris guard).

    twisted.web's own timeout is an idle timeout, reset by every byte, so a
    client trickling one byte at a time would hold its connection forever.
    It is replaced by this one.  The deadline is checked lazily: one timer per
    connection that re-arms itself, rather than a new timer per request.
    """

    _deadline: IDelayedCall | None = None
    _waiting_since: float | None = None  # None while a request is being handled
    _lost = False

    def _respondToBadRequestAndDisconnect(self) -> None:
        """twisted.web's answer to malformed HTTP, as JSON like every other error."""
        transport = self.transport
        assert transport is not None
        transport.write(closing_response(
            b"400 Bad Request", "bad_request", "the request is not valid HTTP/1.1"))
        self.loseConnection()

    def _timeout(self) -> float:
        timeout: float = self.site.request_timeout  # type: ignore[attr-defined]
        return timeout

    def _now(self) -> float:
        now: float = self.site.reactor.seconds()  # type: ignore[attr-defined]
        return now

    def connectionMade(self) -> None:
        super().connectionMade()
        self._waiting_since = self._now()
        self._deadline = self.callLater(self._timeout(), self._check)

    def allContentReceived(self) -> None:
        self._waiting_since = None
        super().allContentReceived()

    def requestDone(self, request: Request) -> None:
        super().requestDone(request)
        if self._waiting_since is None:
            self._waiting_since = self._now()

    def waiting_since(self, since: float) -> None:
        """The request began before this channel took the connection over
        (bridge.http.fasthttp hands it on): its deadline does not start again."""
        self._waiting_since = since
        if self._deadline is not None and self._deadline.active():
            self._deadline.reset(max(0.0, since + self._timeout() - self._now()))

    def close_within(self, seconds: float) -> None:
        """Close once the bytes written so far are sent (a clean end), but
        abort if the connection is still open ``seconds`` later: a client that
        does not read would otherwise hold it, and those bytes, forever."""
        transport = self.transport
        if transport is None or self._lost:
            return
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        if not transport.disconnecting:  # type: ignore[attr-defined]
            self.loseConnection()
        if not self._lost:  # a transport with nothing unsent may close at once
            self._deadline = self.callLater(
                seconds, getattr(transport, "abortConnection", transport.loseConnection)
            )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        super().connectionLost(reason)

    def _check(self) -> None:
        self._deadline = None
        if self.transport is None or getattr(self.transport, "disconnected", False):
            return
        timeout = self._timeout()
        if self._waiting_since is None:
            self._deadline = self.callLater(timeout, self._check)
            return
        left = self._waiting_since + timeout - self._now()
        if left > 0:
            self._deadline = self.callLater(left, self._check)
            return
        self._expired()

    def _expired(self) -> None:
        transport = self.transport
        if transport is None:
            return
        # _buffer: bytes of a first line not complete yet (LineReceiver's).
        if self._receivedHeaderSize or self.requests or self._buffer:
            transport.write(
                closing_response(b"408 Request Timeout", "request_timeout", TIMEOUT_MESSAGE))
        transport.loseConnection()
        # A client that does not read either must not keep the socket open.
        self._deadline = self.callLater(
            1.0, getattr(transport, "abortConnection", transport.loseConnection)
        )


class BridgeSite(Site):
    """A Site with body limits and an access log through twisted.logger."""

    requestFactory = LimitedRequest
    protocol = DeadlineChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: IResource,
        max_body_bytes: int,
        access_log: bool = False,
        on_request: Callable[[Any, int], None] | None = None,
        request_timeout: float = 30.0,
        fast_lane: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("timeout", None)  # DeadlineChannel replaces the idle timeout
        super().__init__(resource, parsePOSTFormSubmission=False, **kwargs)
        self.fast_lane = fast_lane
        self._date_second = -1
        self._date = b""
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout
        self.access_log = access_log
        self._on_request = on_request
        self.noisy = False

    def buildProtocol(self, addr: IAddress | None) -> Any:
        """The fast lane for the hot routes (bridge.http.fasthttp), which hands
        anything else to a twisted.web channel."""
        if self.fast_lane:
            from bridge.http.fasthttp import FastChannel

            return FastChannel(self, addr)
        return self.web_channel(addr)

    def web_channel(self, addr: IAddress | None) -> Any:
        """A twisted.web HTTP channel (DeadlineChannel) for one connection."""
        return super().buildProtocol(addr)

    def http_date(self) -> bytes:
        """The Date header value, formatted once a second."""
        now = int(self.reactor.seconds())
        if now != self._date_second:
            self._date_second = now
            self._date = datetimeToString(now)
        return self._date

    def count_request(self, request: Any, code: int) -> None:
        if self._on_request is not None:
            self._on_request(request, code)

    def log(self, request: Any) -> None:
        self.count_request(request, request.code)
        if not self.access_log or request.path in PROBE_PATHS:
            return
        self.log_line(request)

    def log_line(self, request: Any) -> None:
        address = request.getClientAddress()
        ACCESS_LOG.info(
            '{client} "{method} {path}" {code} {length}',
            client=getattr(address, "host", "-"),
            method=request.method.decode("latin-1"),
            path=request.uri.decode("latin-1"),
            code=request.code,
            length=request.sentLength,
        )

    def startFactory(self) -> None:
        # No legacy access-log file: we log through twisted.logger.
        self._logFile = None
        if self._logDateTimeCall is None:
            self._updateLogDateTime()

    def stopFactory(self) -> None:
        # startFactory's once-a-second log-date timer would outlive the port.
        call = self._logDateTimeCall
        if call is not None and call.active():
            call.cancel()
        self._logDateTimeCall = None

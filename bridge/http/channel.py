"""One HTTP connection, every byte of it parsed by llhttp (httptools).

The same design as uvicorn's ``httptools_impl``, on a Twisted ``Protocol``:
the parser's callbacks build each request; llhttp alone decides where a
request and its body end and rejects malformed HTTP; :mod:`bridge.http.limits`
adds the RFC 9112 checks llhttp leaves to servers and the size limits.  The
route is decided once per request (:mod:`bridge.http.routes`) when its head
is complete, and everything after uses that decision.

Requests are answered one at a time, in order.  Complete requests that
arrive while one is being answered (pipelining) wait in a queue, and the
socket stops being read until they are answered.  A refusal (400, 408, 413,
415, 431) waits its turn like a request, is answered, and closes the
connection: nothing after it is read, and nothing of it reaches a handler.

Hot routes are answered through :class:`~bridge.http.request.HotRequest`;
the routes Klein renders get a real twisted.web Request
(:class:`~bridge.http.webrequest.WebRequest`), which streams and takes
producers, but twisted.web's own parser never sees a byte.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
)
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from bridge.errors import BridgeError
from bridge.http.answers import respond_error, status_line
from bridge.http.deadline import ABORT_AFTER, Deadline, timed_out
from bridge.http.limits import (
    MAX_HEAD,
    ClientError,
    bad_request,
    body_too_large,
    check_head,
    head_too_large,
)
from bridge.http.request import HotRequest
from bridge.http.routes import Decision, RouteTable, Target, normalize_target
from bridge.http.webrequest import WebRequest
from bridge.twisted_private import write_now

if TYPE_CHECKING:
    from bridge.http.site import BridgeSite

LOG = Logger(namespace="bridge.http.channel")
HEAD_OVER = Decision(None)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Message:
    """One request as the parser delivers it."""

    __slots__ = ("chunks", "continue_due", "decision", "head_size", "headers", "keep_alive",
                 "method", "raw_target", "received_at", "size", "target", "version", "wire")

    def __init__(self, received_at: float) -> None:
        self.received_at = received_at
        self.raw_target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.method = b""
        self.version = "1.1"
        self.keep_alive = True
        self.target: Target | None = None
        self.decision: Decision | None = None  # set once the head is complete
        self.chunks: list[bytes] = []
        self.size = 0  # body bytes (and trailer fields) so far
        self.wire = 0  # bytes of whole reads that ended inside this message
        self.continue_due = False


class Refusal:
    """A request refused before it reached a handler: answered in its turn."""

    __slots__ = ("error", "message")

    def __init__(self, error: BridgeError, message: Message | None) -> None:
        self.error = error
        self.message = message


@implementer(IHalfCloseableProtocol)
class Channel(Protocol):
    """One HTTP/1.1 connection to the bridge."""

    def __init__(self, site: BridgeSite, addr: IAddress | None) -> None:
        self.site = site
        self.peer = addr
        self._parser = HttpRequestParser(self)
        self._message: Message | None = None  # being parsed
        self._queue: deque[Message | Refusal] = deque()  # complete, not answered yet
        self._current: Any = None  # HotRequest or WebRequest being answered
        self._current_message: Message | None = None
        self._refusal: ClientError | None = None  # raised from a parser callback
        self._input_done = False  # no further request will be read
        self._closing = False
        self._paused = False
        self._serving = False
        self._deadline: Deadline | None = None
        self._abort: IDelayedCall | None = None
        self._disconnected = False
        self._last_route: tuple[bytes, bytes, RouteTable, Target, Decision] | None = None

    # -- the connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        self._deadline = Deadline(self.site.reactor, self.site.request_timeout, self._expired)

    def dataReceived(self, data: bytes) -> None:
        if self._input_done:
            return
        before = self._message
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            self._input_done = True  # answer the request, then close: no protocol switch
        except HttpParserCallbackError as error:
            refusal: BridgeError | None = self._refusal
            if refusal is None:  # a bug of ours, not the client's
                LOG.failure("unhandled error parsing a request", Failure(error.__context__))
                refusal = BridgeError("internal error; see the log")
            self._refuse(refusal)
        except HttpParserError as error:
            if not self._input_done:  # else: bytes after a request that closes
                self._refuse(bad_request(f"the request is not valid HTTP/1.1 ({error})"))
        else:
            message = self._message
            if message is not None and message is before:
                self._bound(message, len(data))
        self._advance()

    def _bound(self, message: Message, length: int) -> None:
        """A whole read ended inside ``message``: llhttp keeps unfinished
        header lines (and trailer lines) in memory, so the bytes of such
        reads are bounded here too, not only in the callbacks."""
        message.wire += length
        if message.decision is None:
            if message.wire > MAX_HEAD:
                self._refuse(head_too_large())
        elif message.wire > 2 * self.site.max_body_bytes + MAX_HEAD:
            self._refuse(body_too_large(self.site.max_body_bytes))

    def readConnectionLost(self) -> None:
        """The client half-closed (or closed): answer what it sent, then
        close.  An endless answer (GET /events) ends now: a client that
        stopped sending may have stopped reading too."""
        self._input_done = True
        self._message = None
        if getattr(self._current, "chunked", False):
            self._close()
            return
        self._advance()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = self._input_done = self._disconnected = True
        if self._deadline is not None:
            self._deadline.stop()
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self._abort = None
        self._queue.clear()
        current, self._current = self._current, None
        if current is not None:
            current.connectionLost(reason)

    # -- parser callbacks ---------------------------------------------------------

    def _refusing(self, error: ClientError) -> ClientError:
        """Remember ``error`` for dataReceived; raised, it stops the parser."""
        self._refusal = error
        return error

    def on_message_begin(self) -> None:
        self._message = Message(self.site.reactor.seconds())

    def on_url(self, url: bytes) -> None:
        message = self._message
        assert message is not None
        message.raw_target += url
        message.head_size += len(url)
        if message.head_size > MAX_HEAD:
            raise self._refusing(head_too_large())

    def on_header(self, name: bytes, value: bytes) -> None:
        message = self._message
        assert message is not None
        if message.decision is None:
            message.head_size += len(name) + len(value) + 4
            if message.head_size > MAX_HEAD:
                raise self._refusing(head_too_large())
            message.headers.append((name.lower(), value))
            return
        # A trailer field: counted with the body, otherwise ignored.
        message.size += len(name) + len(value) + 4
        if message.size > self.site.max_body_bytes:
            raise self._refusing(body_too_large(self.site.max_body_bytes))

    def on_headers_complete(self) -> None:
        message = self._message
        assert message is not None
        parser = self._parser
        message.method = method = parser.get_method()
        message.version = version = parser.get_http_version()
        # HTTP/1.0 connections close after each answer (as twisted.web's did).
        message.keep_alive = (parser.should_keep_alive() and version == "1.1"
                              and not parser.should_upgrade())
        message.decision = HEAD_OVER  # (see on_header) until the route is decided
        site = self.site
        try:
            message.target, decision = self._route(method, message.raw_target)
            message.decision = decision
            route = decision.route
            continue_due = check_head(version, message.headers, site.max_body_bytes,
                                      route is not None and route.work)
        except ClientError as error:
            raise self._refusing(error) from None
        if continue_due:
            message.continue_due = True
            self._maybe_continue()

    def _route(self, method: bytes, raw_target: bytes) -> tuple[Target, Decision]:
        """The target and the route's decision: a keep-alive client mostly
        asks for the same target again, so the last one that matched a route
        is remembered (for the same route table: a reload replaces it)."""
        routes = self.site.routes
        last = self._last_route
        if (last is not None and last[0] == raw_target and last[1] == method
                and last[2] is routes):
            return last[3], last[4]
        target = normalize_target(raw_target)
        decision = routes.decide(method, target.path)
        if decision.route is not None:
            self._last_route = (raw_target, method, routes, target, decision)
        return target, decision

    def on_body(self, chunk: bytes) -> None:
        message = self._message
        assert message is not None
        message.size += len(chunk)
        if message.size > self.site.max_body_bytes:
            raise self._refusing(body_too_large(self.site.max_body_bytes))
        message.chunks.append(chunk)

    def on_message_complete(self) -> None:
        message, self._message = self._message, None
        assert message is not None
        self._queue.append(message)
        if not message.keep_alive:
            self._input_done = True

    # -- answering, in order ------------------------------------------------------

    def _refuse(self, error: BridgeError) -> None:
        """Nothing more is read; ``error`` is answered after what came before."""
        self._refusal = None
        self._input_done = True
        self._queue.append(Refusal(error, self._message))
        self._message = None

    def _advance(self) -> None:
        """Answer the next queued request, if none is being answered."""
        if self._serving:
            return  # an answer finished inside this loop: the loop goes on
        self._serving = True
        try:
            while self._current is None and self._queue and not self._closing:
                item = self._queue.popleft()
                if isinstance(item, Refusal):
                    self._answer_refusal(item.error, item.message)
                else:
                    self._serve(item)
        finally:
            self._serving = False
        if self._closing:
            return
        if self._current is None:
            if self._input_done:
                self._close()
                return
            if self._paused:
                self._reading(True)
            message = self._message
            if message is not None and message.continue_due:
                self._maybe_continue()
        elif self._queue and not self._paused:
            self._reading(False)  # a pipelining client is ahead of us

    def _maybe_continue(self) -> None:
        message = self._message
        if (message is not None and message.continue_due and self._current is None
                and not self._queue and self.transport is not None):
            message.continue_due = False
            self.transport.write(CONTINUE)

    def _serve(self, message: Message) -> None:
        decision, target = message.decision, message.target
        assert decision is not None and target is not None
        route = decision.route
        chunks, message.chunks = message.chunks, []
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        request: Any
        if route is not None and not route.hot:
            request = WebRequest(
                self, message.method, b"HTTP/" + message.version.encode("ascii"), target.path,
                target.query, message.raw_target, message.headers, body, message.received_at,
                decision.label, decision.quiet,
            )
        else:
            request = HotRequest(
                self, message.method, target.path, target.query, message.raw_target,
                dict(message.headers), body, message.received_at, decision.label,
                decision.quiet,
            )
            if not message.keep_alive:
                request.setHeader(b"Connection", b"close")
        self._current, self._current_message = request, message
        assert self._deadline is not None
        self._deadline.busy()
        self._render(request, decision)

    def _render(self, request: Any, decision: Decision) -> None:
        """Let the gate answer; a body returned now is written at once."""
        try:
            result = self.site.gate.render(request, decision)
        except Exception:
            LOG.failure("unhandled error answering {path}", path=request.path)
            result = respond_error(request, BridgeError("internal error; see the log"))
        if result is not NOT_DONE_YET:
            request.write(result)
            request.finish()

    def _answer_refusal(self, error: BridgeError, message: Message | None) -> None:
        method = uri = path = b""
        decision, received_at = HEAD_OVER, self.site.reactor.seconds()
        if message is not None:
            method, uri, received_at = message.method, message.raw_target, message.received_at
            path = message.target.path if message.target is not None else b""
            decision = message.decision or decision
        request = HotRequest(self, method, path, b"", uri, {}, b"", received_at, decision.label,
                             decision.quiet)
        request.setHeader(b"Connection", b"close")
        self.site.refused(request, error)
        self._current = request
        request.write(respond_error(request, error))
        request.finish()
        if self._abort is None:
            # A client that does not read its answer must not keep the socket.
            self._abort = self.site.reactor.callLater(ABORT_AFTER, self._abort_now)

    def closing_after_answer(self) -> bool:
        """Whether the connection closes after the answer being written."""
        message = self._current_message
        return message is None or not message.keep_alive

    def respond(self, request: HotRequest, body: bytes) -> None:
        """Write one whole answer (called by HotRequest.finish)."""
        if self._current is not request:
            return  # the connection was lost meanwhile
        transport = self.transport
        assert transport is not None
        site = self.site
        head = [status_line(request.code), site.date_line()]
        for name, value in request.response_headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"Content-Length: %d\r\n\r\n" % len(body))
        if request.method == b"HEAD":
            body = b""
        head.append(body)
        write_now(transport, b"".join(head))
        request.sentLength = len(body)
        site.log(request)
        self._answered(request.wants_close())

    def web_request_done(self, request: WebRequest) -> None:
        """A WebRequest finished (twisted.web's Request calls requestDone)."""
        if self._current is request:
            self._answered(request.closing() or self.closing_after_answer())

    def _answered(self, close: bool) -> None:
        self._current = self._current_message = None
        if close:
            self._close()
            return
        if not self._queue:
            assert self._deadline is not None
            self._deadline.idle()
        self._advance()

    def _reading(self, on: bool) -> None:
        if on == (not self._paused):
            return
        self._paused = not on
        producer = IPushProducer(self.transport, None)
        if producer is not None:
            if on:
                producer.resumeProducing()
            else:
                producer.pauseProducing()

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = self._input_done = True
        if self._deadline is not None:
            self._deadline.stop()
        if self.transport is not None:
            self.transport.loseConnection()

    def close_within(self, seconds: float) -> None:
        """Close once the bytes written are sent; abort if they are not taken
        within ``seconds`` (a dropped /events reader that does not read)."""
        self._close()
        if self._abort is None and not self._disconnected:
            self._abort = self.site.reactor.callLater(seconds, self._abort_now)

    # -- the request deadline ----------------------------------------------------

    def _expired(self) -> None:
        """Idle for request_timeout: 408 if a request had begun, then close."""
        if self._closing:
            return
        if self._message is not None:
            message, self._message = self._message, None
            self._input_done = True
            self._answer_refusal(timed_out(), message)
        else:
            self._close()
            self._abort = self.site.reactor.callLater(ABORT_AFTER, self._abort_now)

    def _abort_now(self) -> None:
        self._abort = None
        transport = self.transport
        if transport is not None:
            abort = getattr(transport, "abortConnection", transport.loseConnection)
            abort()

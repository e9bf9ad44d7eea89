"""The in-memory bridge of the HTTP tests, and their HTTP client.

One harness for every HTTP test: the real :class:`BridgeService` (gate,
lifecycle, metrics, API, BridgeSite, pool) on a ``MemoryReactorClock``, raw
HTTP bytes fed to the real channel of its BridgeSite by :class:`Client`,
answers read back by :func:`parse_responses` (the one response parser), and
upstream connections completed by hand onto socket-like transports
(:class:`SocketTransport`, the one fake upstream socket).  Nothing is mocked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IListeningPort
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransport,
    StringTransportWithDisconnection,
)
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import datetimeToString
from zope.interface import implementer

from bridge.app.service import BridgeService
from bridge.config import Config
from tests.http_wire import (  # noqa: F401 (the one request builder and response parser)
    Response,
    chunked,
    dechunk,
    http_request,
    parse_responses,
    split_response,
)

UPSTREAM_HOST = "127.0.0.1"
UPSTREAM_PORT = 7000
CLIENT = IPv4Address("TCP", "10.9.8.7", 50000)
TOKEN = "s3cret"

# -- the harness ----------------------------------------------------------------


class SocketTransport(StringTransportWithDisconnection):
    """The bridge's end of an upstream TCP socket, as far as the bridge can tell.

    ``value()`` is every byte the bridge wrote.  Like Twisted's
    ``FileDescriptor`` it keeps bytes the kernel has not taken yet in
    ``dataBuffer``/``offset``/``_tempDataLen`` (what ``unsent_bytes`` reads),
    pauses its registered producer when they pass ``bufferSize`` and resumes it
    once they are all sent.  While ``kernel_full`` is False the kernel takes
    every write at once.  ``loseWriteConnection`` is recorded (half-close);
    the connection ends when the peer closes (``peer_closes``) or on abort.
    """

    def __init__(self) -> None:
        super().__init__(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 40001),
            peerAddress=IPv4Address("TCP", UPSTREAM_HOST, UPSTREAM_PORT),
        )
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0
        self.bufferSize = 65536
        self.kernel_full = False
        self.producerPaused = False
        self.write_closed = False
        self.after_half_close = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        if self.write_closed:
            # A real transport drops these silently: they would be lost.
            self.after_half_close += data
            return
        super().write(data)
        if not self.kernel_full:
            return
        self.dataBuffer += data
        if self.producer is not None and self.unsent() > self.bufferSize:
            self.producerPaused = True
            self.producer.pauseProducing()

    def unsent(self) -> int:
        return len(self.dataBuffer) - self.offset + self._tempDataLen

    def kernel_takes(self, count: int) -> None:
        """The kernel accepts ``count`` more of the unsent bytes."""
        self.offset = min(len(self.dataBuffer), self.offset + count)
        if self.unsent() == 0:
            self.dataBuffer, self.offset = b"", 0
            if self.producer is not None and self.producerPaused:
                self.producerPaused = False
                self.producer.resumeProducing()

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()

    def peer_sends(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def peer_closes(self) -> None:
        self.loseConnection()


@implementer(IListeningPort)
class Port:
    """A listening port that starts and stops its factory as a real one does."""

    def __init__(self, factory: Any, port: int) -> None:
        self.factory = factory
        self.port = port
        self.listening = True
        factory.doStart()

    def startListening(self) -> None:  # pragma: no cover - IListeningPort
        pass

    def stopListening(self) -> None:
        if self.listening:
            self.listening = False
            self.factory.doStop()

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", self.port)


class Reactor(MemoryReactorClock):
    """MemoryReactorClock whose listenTCP starts the factory like a real port."""

    def listenTCP(self, port: int, factory: Any, backlog: int = 50,
                  interface: str = "") -> Port:
        self.tcpServers.append((port, factory, backlog, interface))
        return Port(factory, port)


class ClientSocket(StringTransportWithDisconnection):
    """An HTTP client's socket as the bridge sees it: the write side of
    Twisted's TCP transport.

    ``value()`` holds every byte written; ``unsent`` counts those the peer has
    not taken yet.  As in ``twisted.internet.abstract.FileDescriptor``: every
    write that leaves more than ``buffer_size`` bytes unsent pauses the
    streaming producer; the producer is resumed only when the peer has taken
    *everything* (:meth:`take`, one ``doWrite``); ``loseConnection`` closes
    once everything is taken; ``abortConnection`` closes at once.
    """

    def __init__(self, buffer_size: int = 64 * 1024, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.buffer_size = buffer_size
        self.unsent = 0
        self.producer_paused = False
        self.aborted = False
        self.lost_reason: Failure | None = None

    def write(self, data: bytes) -> None:
        super().write(data)
        self._buffered(len(data))

    def writeSequence(self, data: Any) -> None:
        joined = b"".join(data)
        super().write(joined)
        self._buffered(len(joined))

    def _buffered(self, size: int) -> None:
        if not self.connected:
            return
        self.unsent += size
        if self.producer is not None and self.streaming and self.unsent > self.buffer_size:
            self.producer_paused = True
            self.producer.pauseProducing()

    def take(self, limit: int | None = None) -> int:
        """The peer reads up to ``limit`` bytes (default: all); returns how many."""
        if not self.connected:
            return 0
        taken = self.unsent if limit is None else min(limit, self.unsent)
        self.unsent -= taken
        if self.unsent == 0:
            if self.producer is not None and (not self.streaming or self.producer_paused):
                self.producer_paused = False
                self.producer.resumeProducing()
            elif self.disconnecting:
                self._lost(ConnectionDone("the bridge closed the connection"))
        return taken

    def peer_closes(self) -> None:
        """The client goes away (closes or resets its end)."""
        self._lost(ConnectionLost("the client went away"))

    def loseConnection(self) -> None:
        self.disconnecting = True
        if self.unsent == 0:
            self._lost(ConnectionDone("the bridge closed the connection"))

    def abortConnection(self) -> None:
        if self.connected:
            self.aborted = self.disconnected = True
            self._lost(ConnectionAborted("the bridge aborted the connection"))

    def _lost(self, error: Exception) -> None:
        if not self.connected:
            return
        self.connected = False
        self.lost_reason = Failure(error)
        if self.producer is not None:
            producer, self.producer = self.producer, None
            producer.stopProducing()
        self.protocol.connectionLost(self.lost_reason)


class Client:
    """One HTTP client connection to the bridge's real BridgeSite."""

    def __init__(self, site: Any) -> None:
        self.channel = site.buildProtocol(CLIENT)
        self.transport = StringTransport(peerAddress=CLIENT)
        self.channel.makeConnection(self.transport)
        self.gone = False

    def send(self, data: bytes) -> None:
        """Bytes from the client.  Like a TCP transport, which stops reading
        once the server closes, nothing is delivered after that."""
        if not self.transport.disconnecting:
            self.channel.dataReceived(data)

    def responses(self) -> list[Response]:
        """Every complete response received on this connection so far."""
        return parse_responses(self.transport.value())[0]

    def response(self) -> Response:
        """The one complete response received so far (fails otherwise)."""
        responses = self.responses()
        assert len(responses) == 1, (responses, self.transport.value())
        return responses[0]

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    def disconnect(self) -> None:
        """The client goes away (or the server's close completes)."""
        if not self.gone:
            self.gone = True
            self.channel.connectionLost(Failure(ConnectionDone("client closed")))


@dataclass
class Harness:
    """A whole bridge in memory.  Build with :meth:`create`."""

    reactor: Reactor
    config: Config
    service: BridgeService
    upstreams: list[SocketTransport] = field(default_factory=list)
    clients: list[Client] = field(default_factory=list)
    stopping: Any = None
    _attempts_used: int = 0
    _completed: set[int] = field(default_factory=set)

    @classmethod
    def create(cls, config: Config | None = None, *, service_options: Any = None,
               **values: Any) -> Harness:
        """``service_options``: keyword arguments for BridgeService (spool_runner...)."""
        reactor = Reactor()
        reactor.advance(1000.0)
        if config is None:
            values.setdefault("upstream", f"tcp:{UPSTREAM_HOST}:{UPSTREAM_PORT}")
            config = Config().with_values(**values)
        service = BridgeService(config, reactor, jitter=lambda: 0.0, **(service_options or {}))
        harness = cls(reactor, config, service)
        service.startService()
        return harness

    @classmethod
    def unstarted(cls, config: Config, *, now: float, service_options: Any = None) -> Harness:
        """The same bridge, its clock at ``now``, not started (the API and
        event tests start only its pool, on a fake endpoint: tests.fakes_http)."""
        reactor = Reactor()
        reactor.advance(now)
        service = BridgeService(config, reactor, jitter=lambda: 0.0, **(service_options or {}))
        return cls(reactor, config, service)

    @property
    def site(self) -> Any:
        return self.service.site

    @property
    def clock(self) -> Reactor:
        return self.reactor

    def connect_upstream(self, port: int | None = None,
                         attempt: int | None = None) -> SocketTransport:
        """Complete the oldest connection attempt not completed yet (to
        ``port``, when given), or the attempt of index ``attempt``."""
        index = self._attempts_used if attempt is None else attempt
        if port is not None:
            index = next(i for i, attempt in enumerate(self.reactor.tcpClients)
                         if attempt[1] == port and i not in self._completed)
        self._completed.add(index)
        while self._attempts_used in self._completed:
            self._attempts_used += 1
        host, port, factory, _, _ = self.reactor.tcpClients[index]
        protocol: Any = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = SocketTransport()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.upstreams.append(transport)
        return transport

    @property
    def upstream(self) -> SocketTransport:
        return self.upstreams[-1]

    def client(self) -> Client:
        client = Client(self.site)
        self.clients.append(client)
        return client

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> Response:
        """One request on a new connection, answered at once."""
        client = self.client()
        client.send(http_request(method, path, body, headers))
        return client.response()

    def start(self, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> Client:
        """One request on a new connection; it may still be waiting."""
        client = self.client()
        client.send(http_request(method, path, body, headers))
        return client

    def stop(self) -> Any:
        """Begin stopService (what SIGTERM does); return its Deferred."""
        assert self.stopping is None
        self.stopping = self.service.stopService()
        return self.stopping

    def close_everything(self) -> None:
        """End every connection and let the service stop (test cleanup)."""
        for client in self.clients:
            client.disconnect()
        if self.stopping is None:
            self.stop()
        for transport in self.upstreams:
            transport.loseConnection()
        self.reactor.advance(self.config.shutdown_grace + self.config.shutdown_delay + 1)
        assert self.stopping is not None and self.stopping.called, "the service did not stop"
        for client in self.clients:
            client.disconnect()


class HarnessTestCase(SynchronousTestCase):
    """Builds harnesses and, at the end, stops them and checks no timer is left."""

    def harness(self, connect: int | None = None, config: Config | None = None,
                service_options: Any = None, **values: Any) -> Harness:
        harness = Harness.create(config, service_options=service_options, **values)
        self.addCleanup(self._finish, harness)
        count = harness.config.pool_size if connect is None else connect
        for _ in range(count):
            harness.connect_upstream()
        return harness

    def _finish(self, harness: Harness) -> None:
        harness.close_everything()
        for transport in harness.upstreams:
            self.assertEqual(transport.after_half_close, b"")
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def assertNoTimersLeft(self, harness: Harness) -> None:
        """Once the clients' connections are gone (the server closed them, or
        they left), no timer of any kind may be left."""
        for client in harness.clients:
            client.disconnect()
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def assertJSONResponse(self, response: Response, status: int, document: Any) -> None:
        self.assertEqual(
            (response.status, response.header(b"Content-Type"), response.json()),
            (status, b"application/json", document),
        )

    def assertErrorResponse(self, response: Response, status: int, code: str) -> None:
        self.assertEqual(
            (response.status, response.header(b"Content-Type"), response.json()["error"]),
            (status, b"application/json", code),
        )
        self.assertEqual(set(response.json()), {"error", "message"})

    def capture_logs(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        observer: Any = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return events


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refusal(reactor: Any, status: bytes, code: str, message: str) -> bytes:
    """The exact answer to a refused request (then the connection closes),
    dated by ``reactor``'s clock now."""
    body = json.dumps({"error": code, "message": message}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\nDate: " + datetimeToString(int(reactor.seconds()))
        + b"\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


def timed_out(reactor: Any) -> bytes:
    """The exact 408 answer to a request not received within request_timeout."""
    return refusal(reactor, b"408 Request Timeout", "request_timeout",
                   "the request was not received in time")


def too_large(reactor: Any, message: str) -> bytes:
    """The exact 413 answer."""
    return refusal(reactor, b"413 Content Too Large", "body_too_large", message)

"""Bearer token and the listen/token configuration rules.

This module also holds the in-memory harness shared by the hardening tests
(test_lifecycle, test_metrics, test_backpressure, test_deadline, test_logs,
test_fuzz_http): the real :class:`BridgeService` (Gate, Lifecycle, Metrics,
API, BridgeSite, pool) on a ``MemoryReactorClock``, with raw HTTP bytes fed
to a real ``BridgeSite`` channel and upstream connections completed by hand
onto socket-like ``StringTransport``s.  Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IListeningPort
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransport,
    StringTransportWithDisconnection,
)
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from bridge.app.service import BridgeService
from bridge.config import Config, ConfigError, load

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


@dataclass
class Response:
    status: int
    reason: bytes
    headers: dict[bytes, list[bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def parse_responses(data: bytes) -> tuple[list[Response], bytes]:
    """Complete HTTP/1.1 responses in ``data`` and what is left after them."""
    responses: list[Response] = []
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        _, code, reason = [*status_line.split(b" ", 2), b""][:3]
        headers: dict[bytes, list[bytes]] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        status = int(code)
        if status < 200 or status in (204, 304):
            body = b""
        elif b"content-length" in headers:
            length = int(headers[b"content-length"][-1])
            if len(rest) < length:
                break
            body, rest = rest[:length], rest[length:]
        elif headers.get(b"transfer-encoding") == [b"chunked"]:
            body = b""
            while True:
                size_line, separator, after = rest.partition(b"\r\n")
                if not separator:
                    return responses, data
                size = int(size_line.split(b";")[0], 16)
                if len(after) < size + 2:
                    return responses, data
                body += after[:size]
                rest = after[size + 2:]
                if size == 0:
                    break
        else:
            body, rest = rest, b""
        responses.append(Response(status, reason, headers, body))
        data = rest
    return responses, data


def http_request(
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 request (Content-Length set unless given)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: bridge.test"]
    extra = dict(headers or {})
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding")
                                    for k in extra):
        extra["Content-Length"] = str(len(body))
    lines += [f"{name}: {value}" for name, value in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


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

    @classmethod
    def create(cls, **values: Any) -> Harness:
        reactor = Reactor()
        reactor.advance(1000.0)
        values.setdefault("upstream", f"tcp:{UPSTREAM_HOST}:{UPSTREAM_PORT}")
        config = Config().with_values(**values)
        service = BridgeService(config, reactor, jitter=lambda: 0.0)
        harness = cls(reactor, config, service)
        service.startService()
        return harness

    @property
    def site(self) -> Any:
        return self.service.site

    @property
    def clock(self) -> Reactor:
        return self.reactor

    def connect_upstream(self) -> SocketTransport:
        """Complete the oldest connection attempt not completed yet."""
        host, port, factory, _, _ = self.reactor.tcpClients[self._attempts_used]
        self._attempts_used += 1
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

    def harness(self, connect: int | None = None, **values: Any) -> Harness:
        harness = Harness.create(**values)
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


# -- the token ----------------------------------------------------------------------


UNAUTHORIZED = {
    "error": "unauthorized",
    "message": "this route needs 'Authorization: Bearer <token>'",
}

#: Every route behind the token, with a request that would otherwise succeed.
GUARDED = [
    ("POST", "/send", b"PING\n"),
    ("POST", "/request", b"PING\n"),
    ("GET", "/status", None),
    ("GET", "/metrics", None),
    ("GET", "/events", None),
    ("GET", "/nope", None),
    ("GET", "/", None),
    ("POST", "/healthz/x", b"a\n"),
]

BAD_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Token {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": f"Bearer{TOKEN}"},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer s3cre"},
    {"Authorization": "Bearer s"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN} {TOKEN}"},
    {"Authorization": f"Bearer {TOKEN.upper()}"},
    {"X-Token": TOKEN},
]


class TokenTests(HarnessTestCase):
    def assertUnauthorized(self, response: Response) -> None:
        self.assertJSONResponse(response, 401, UNAUTHORIZED)
        self.assertEqual(response.headers[b"www-authenticate"], [b'Bearer realm="bridge"'])
        self.assertNotIn(TOKEN.encode(), response.body)

    def test_every_guarded_route_refuses_bad_credentials(self) -> None:
        harness = self.harness(token=TOKEN)
        for method, path, body in GUARDED:
            for headers in BAD_CREDENTIALS:
                with self.subTest(method=method, path=path, headers=headers):
                    self.assertUnauthorized(harness.call(method, path, body, headers))
        # The same through twisted.web (a chunked body leaves the fast lane).
        for path in ("/send", "/request"):
            for headers in BAD_CREDENTIALS:
                with self.subTest(path=path, headers=headers, lane="twisted.web"):
                    client = harness.client()
                    head = http_request("POST", path, None,
                                        {**headers, "Transfer-Encoding": "chunked"})
                    client.send(head + b"5\r\nPING\n\r\n0\r\n\r\n")
                    self.assertUnauthorized(client.response())
        self.assertEqual(harness.upstream.value(), b"")
        self.assertEqual(harness.service.lifecycle.inflight, 0)

    def test_probes_need_no_token(self) -> None:
        harness = self.harness(token=TOKEN)
        self.assertJSONResponse(harness.call("GET", "/healthz"), 200, {"status": "ok"})
        self.assertJSONResponse(
            harness.call("GET", "/readyz", headers={"Authorization": "Bearer wrong"}), 200,
            {"ready": True, "state": "connected", "connected": 1, "pool_size": 1},
        )

    def test_right_token_passes(self) -> None:
        harness = self.harness(token=TOKEN)
        self.assertJSONResponse(
            harness.call("POST", "/send", b"SET a 1\n", auth()), 202, {"sent": 1}
        )
        self.assertEqual(harness.upstream.value(), b"SET a 1\r\n")
        waiting = harness.start("POST", "/request", b"GET a\n", auth())
        self.assertEqual(harness.upstream.value(), b"SET a 1\r\nGET a\r\n")
        harness.upstream.peer_sends(b"1\r\n")
        self.assertJSONResponse(waiting.response(), 200, {"replies": ["1"]})
        status = harness.call("GET", "/status", headers=auth())
        self.assertEqual((status.status, status.json()["counters"]["lines_sent"]), (200, 2))
        missing = harness.call("GET", "/nope", headers=auth())
        self.assertJSONResponse(missing, 404, {"error": "not_found", "message": "no route /nope"})

    def test_scheme_is_case_insensitive(self) -> None:
        harness = self.harness(token=TOKEN)
        for scheme in ("bearer", "BEARER", "Bearer"):
            response = harness.call("POST", "/send", b"x\n",
                                    {"Authorization": f"{scheme} {TOKEN}"})
            self.assertJSONResponse(response, 202, {"sent": 1})

    def test_without_a_token_nothing_is_asked(self) -> None:
        harness = self.harness()
        self.assertJSONResponse(harness.call("POST", "/send", b"x\n"), 202, {"sent": 1})
        self.assertEqual(harness.call("GET", "/metrics").status, 200)
        self.assertEqual(harness.call("GET", "/status").status, 200)

    def test_metrics_needs_the_token_when_metrics_auth(self) -> None:
        harness = self.harness(token=TOKEN)
        self.assertUnauthorized(harness.call("GET", "/metrics"))
        response = harness.call("GET", "/metrics", headers=auth())
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"Content-Type"),
                         b"text/plain; version=0.0.4; charset=utf-8")

    def test_metrics_open_without_metrics_auth(self) -> None:
        harness = self.harness(token=TOKEN, metrics_auth=False)
        response = harness.call("GET", "/metrics")
        self.assertEqual(response.status, 200)
        self.assertIn(b"bridge_http_inflight_requests 0.0\n", response.body)
        # Only /metrics is opened: the rest keeps its token.
        self.assertUnauthorized(harness.call("GET", "/status"))
        self.assertUnauthorized(harness.call("POST", "/send", b"x\n"))

    def test_refused_requests_are_not_counted_in_flight(self) -> None:
        harness = self.harness(token=TOKEN, max_inflight=1)
        for _ in range(3):
            self.assertUnauthorized(harness.call("POST", "/request", b"x\n"))
        waiting = harness.start("POST", "/request", b"x\n", auth())
        self.assertEqual(harness.service.lifecycle.inflight, 1)
        harness.upstream.peer_sends(b"ok\n")
        self.assertJSONResponse(waiting.response(), 200, {"replies": ["ok"]})
        self.assertEqual(harness.service.lifecycle.inflight, 0)

    def test_the_token_never_leaks(self) -> None:
        """Not in answers, /status, /metrics, nor any log event, whatever is tried."""
        events = self.capture_logs()
        harness = self.harness(token=TOKEN, access_log=True)
        bodies: list[bytes] = []
        for method, path, body in GUARDED:
            for headers in BAD_CREDENTIALS:
                bodies.append(harness.call(method, path, body, headers).body)
        for path in ("/status", "/metrics", "/nope"):
            bodies.append(harness.call("GET", path, headers=auth()).body)
        bodies.append(harness.call("POST", "/send", b"\r", auth()).body)  # 400
        bodies.append(harness.call("DELETE", "/send", b"x", auth()).body)  # 405
        waiting = harness.start("POST", "/request?timeout=1", b"x\n", auth())
        harness.reactor.advance(1)  # 504
        bodies.append(waiting.response().body)
        status = harness.call("GET", "/status", headers=auth())
        self.assertEqual(status.status, 200)
        bodies.append(status.body)
        for body in bodies:
            self.assertNotIn(TOKEN.encode(), body)
        harness.close_everything()
        access = [formatEvent(e) for e in events if e.get("log_namespace") == "bridge.access"]
        self.assertIn('10.9.8.7 "POST /send" 401 ' + str(len(bodies[0])), access)
        self.assertIn('10.9.8.7 "POST /request?timeout=1" 504 ' + str(len(bodies[-2])), access)
        for event in events:
            text = formatEvent(event) + repr(event)
            self.assertNotIn(TOKEN, text, event)


class ConfigTokenTests(SynchronousTestCase):
    def write(self, content: bytes) -> str:
        descriptor, path = tempfile.mkstemp(prefix="bridge-token-")
        os.write(descriptor, content)
        os.close(descriptor)
        self.addCleanup(os.unlink, path)
        return path

    def test_token_file_is_read_and_stripped(self) -> None:
        path = self.write(b"  s3cret \n\n")
        config = load({"token_file": path}, {})
        self.assertEqual((config.token, config.token_file), ("s3cret", path))
        self.assertNotIn("s3cret", repr(config))

    def test_token_file_from_the_environment(self) -> None:
        path = self.write(b"s3cret\n")
        self.assertEqual(load({}, {"BRIDGE_TOKEN_FILE": path}).token, "s3cret")

    def test_token_wins_over_token_file(self) -> None:
        path = self.write(b"from-file\n")
        config = load({"token_file": path}, {"BRIDGE_TOKEN": "from-env"})
        self.assertEqual(config.token, "from-env")

    def test_empty_token_file(self) -> None:
        for content in (b"", b"\n", b"  \t\r\n"):
            path = self.write(content)
            with self.subTest(content=content):
                error = self.assertRaises(ConfigError, load, {"token_file": path}, {})
                self.assertEqual(error.setting, "token_file")
                self.assertEqual(str(error), f"setting 'token_file': {path} is empty")

    def test_unreadable_token_file(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        missing = os.path.join(directory, "absent")
        error = self.assertRaises(ConfigError, load, {"token_file": missing}, {})
        self.assertEqual(
            str(error), f"setting 'token_file': cannot read {missing}: No such file or directory"
        )
        error = self.assertRaises(ConfigError, load, {"token_file": directory}, {})
        self.assertEqual(error.setting, "token_file")
        self.assertTrue(str(error).startswith(f"setting 'token_file': cannot read {directory}: "))

    def test_token_file_not_utf8(self) -> None:
        path = self.write(b"\xff\xfe\n")
        error = self.assertRaises(ConfigError, load, {"token_file": path}, {})
        self.assertEqual(error.setting, "token_file")

    def test_public_listen_needs_a_token(self) -> None:
        for listen in ("0.0.0.0:8080", ":8080", "10.0.0.1:80", "tcp:8080", "[::]:8080"):
            with self.subTest(listen=listen):
                error = self.assertRaises(ConfigError, load, {"listen": listen}, {})
                self.assertEqual(error.setting, "listen")
                self.assertIn("is not a loopback address and no token is set", str(error))
                self.assertIn("--allow-public", str(error))

    def test_public_listen_with_allow_public(self) -> None:
        config = load({"listen": "0.0.0.0:8080", "allow_public": True}, {})
        self.assertEqual((config.listen, config.token), ("0.0.0.0:8080", None))
        config = load({"listen": "0.0.0.0:8080"}, {"BRIDGE_ALLOW_PUBLIC": "true"})
        self.assertTrue(config.allow_public)

    def test_public_listen_with_a_token(self) -> None:
        config = load({"listen": "0.0.0.0:8080"}, {"BRIDGE_TOKEN": TOKEN})
        self.assertEqual((config.listen, config.token), ("0.0.0.0:8080", TOKEN))
        path = self.write(b"s3cret\n")
        self.assertEqual(load({"listen": "0.0.0.0:8080", "token_file": path}, {}).token, TOKEN)

    def test_loopback_listen_needs_no_token(self) -> None:
        for listen in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "8080",
                       "unix:/tmp/bridge.sock"):
            with self.subTest(listen=listen):
                self.assertEqual(load({"listen": listen}, {}).listen, listen)

    def test_blank_token(self) -> None:
        error = self.assertRaises(ConfigError, load, {}, {"BRIDGE_TOKEN": "   "})
        self.assertEqual(error.setting, "token")
        self.assertNotIn("   ", error.problem)


# -- max_inflight ---------------------------------------------------------------------


OVERLOADED = {
    "error": "overloaded",
    "message": "2 requests are being handled (max_inflight); retry later",
}


def chunked(method: str, path: str, body: bytes) -> bytes:
    """A request with a chunked body (served by twisted.web, not the fast lane)."""
    head = http_request(method, path, None, {"Transfer-Encoding": "chunked"})
    return head + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


class OverloadTests(HarnessTestCase):
    def assertOverloaded(self, response: Response) -> None:
        self.assertJSONResponse(response, 429, OVERLOADED)
        self.assertEqual(response.headers[b"retry-after"], [b"1"])

    def test_beyond_max_inflight(self) -> None:
        harness = self.harness(max_inflight=2)
        first = harness.start("POST", "/request", b"GET a\n")
        second = harness.client()
        second.send(chunked("POST", "/request", b"GET b\n"))
        self.assertEqual(harness.service.lifecycle.inflight, 2)
        self.assertOverloaded(harness.call("POST", "/send", b"SET c 3\n"))
        self.assertOverloaded(harness.call("POST", "/request", b"GET c\n"))
        third = harness.client()
        third.send(chunked("POST", "/send", b"SET d 4\n"))
        self.assertOverloaded(third.response())
        self.assertEqual(harness.upstream.value(), b"GET a\r\nGET b\r\n")
        # Only work is limited: probes and /status are still answered.
        self.assertEqual(harness.call("GET", "/healthz").status, 200)
        self.assertEqual(harness.call("GET", "/readyz").status, 200)
        self.assertEqual(harness.call("GET", "/status").json()["inflight"], 2)
        # A reply finishes one: the next is admitted.
        harness.upstream.peer_sends(b"A\r\n")
        self.assertJSONResponse(first.response(), 200, {"replies": ["A"]})
        self.assertEqual(harness.service.lifecycle.inflight, 1)
        self.assertJSONResponse(harness.call("POST", "/send", b"SET c 3\n"), 202, {"sent": 1})
        fourth = harness.start("POST", "/request", b"GET c\n")
        self.assertOverloaded(harness.call("POST", "/send", b"SET e 5\n"))
        harness.upstream.peer_sends(b"B\r\nC\r\n")
        self.assertJSONResponse(second.response(), 200, {"replies": ["B"]})
        self.assertJSONResponse(fourth.response(), 200, {"replies": ["C"]})
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        self.assertEqual(harness.upstream.value(),
                         b"GET a\r\nGET b\r\nSET c 3\r\nGET c\r\n")

    def test_max_inflight_one(self) -> None:
        harness = self.harness(max_inflight=1)
        waiting = harness.start("POST", "/request", b"x\n")
        response = harness.call("POST", "/send", b"y\n")
        self.assertJSONResponse(response, 429, {
            "error": "overloaded",
            "message": "1 requests are being handled (max_inflight); retry later",
        })
        harness.upstream.peer_sends(b"ok\n")
        self.assertEqual(waiting.response().status, 200)
        self.assertEqual(harness.call("POST", "/send", b"y\n").status, 202)

    def test_answered_sends_do_not_hold_a_place(self) -> None:
        harness = self.harness(max_inflight=1)
        for number in range(5):
            response = harness.call("POST", "/send", b"line %d\n" % number)
            self.assertJSONResponse(response, 202, {"sent": 1})
        client = harness.client()
        for number in range(3):  # keep-alive: one connection, one after the other
            client.send(chunked("POST", "/send", b"more %d\n" % number))
        self.assertEqual([r.status for r in client.responses()], [202, 202, 202])
        self.assertEqual(harness.service.lifecycle.inflight, 0)

    def test_cancelled_requests_give_their_place_back(self) -> None:
        harness = self.harness(max_inflight=2)
        first = harness.start("POST", "/request", b"GET a\n")
        second = harness.client()
        second.send(chunked("POST", "/request", b"GET b\n"))
        self.assertEqual(harness.service.lifecycle.inflight, 2)
        first.disconnect()
        self.assertEqual(harness.service.lifecycle.inflight, 1)
        second.disconnect()
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        self.assertEqual(harness.call("POST", "/send", b"x\n").status, 202)
        # The late replies go to the abandoned slots, not to new requests
        # (line framing takes no new request until they came).
        harness.upstream.peer_sends(b"A\r\nB\r\n")
        third = harness.start("POST", "/request", b"GET c\n")
        harness.upstream.peer_sends(b"C\r\n")
        self.assertJSONResponse(third.response(), 200, {"replies": ["C"]})
        self.assertEqual(harness.service.lifecycle.inflight, 0)

    def test_errors_give_their_place_back(self) -> None:
        harness = self.harness(max_inflight=2, reply_timeout=1)
        # Rejected bodies and bad parameters.
        self.assertEqual(harness.call("POST", "/send", b"").status, 400)
        self.assertEqual(harness.call("POST", "/request", b"a\rb").status, 400)
        self.assertEqual(harness.call("POST", "/request?timeout=x", b"a\n").status, 400)
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        # Reply timeout (504).
        late = harness.start("POST", "/request", b"slow\n")
        self.assertEqual(harness.service.lifecycle.inflight, 1)
        harness.reactor.advance(1)
        self.assertEqual(late.response().status, 504)
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        harness.upstream.peer_sends(b"late\r\n")
        # Connection lost (502), on both lanes.
        lost = harness.start("POST", "/request", b"x\n")
        other = harness.client()
        other.send(chunked("POST", "/request", b"y\n"))
        self.assertEqual(harness.service.lifecycle.inflight, 2)
        harness.upstream.peer_closes()
        self.assertEqual((lost.response().status, other.response().status), (502, 502))
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        # Not connected (503).
        self.assertEqual(harness.call("POST", "/send", b"x\n").status, 503)
        self.assertEqual(harness.call("POST", "/request", b"x\n").status, 503)
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        harness.reactor.advance(2)  # reconnect due
        harness.connect_upstream()
        # Two places are free again.
        waiting = [harness.start("POST", "/request", b"x\n") for _ in range(2)]
        self.assertEqual(harness.service.lifecycle.inflight, 2)
        harness.upstream.peer_sends(b"1\n2\n")
        self.assertEqual([w.response().status for w in waiting], [200, 200])

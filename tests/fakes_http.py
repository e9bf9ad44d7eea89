"""In-memory plumbing for the HTTP tests: a fake upstream endpoint, a bridge
harness (real pool, real API, StubTreq in front) and raw-HTTP helpers.

Nothing here is a mock: the pool, its ClientServices, the line protocol, the
Klein app and twisted.web all run for real; only the sockets are replaced by
``StringTransport``s and time by a ``Clock``.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IResponse
from zope.interface import implementer

from bridge.app.service import line_publisher
from bridge.config import Config
from bridge.http.api import BridgeAPI
from bridge.http.events import EventHub
from bridge.http.gate import make_root
from bridge.http.web import BridgeSite
from bridge.upstream.member import UpstreamMember
from bridge.upstream.pool import UpstreamPool

UPSTREAM_ADDRESS = IPv4Address("TCP", "127.0.0.1", 7000)
CLIENT_ADDRESS = IPv4Address("TCP", "10.1.2.3", 40000)
BOOT = "b1"  # the event-id boot token of every in-memory bridge


@implementer(IStreamClientEndpoint)
class FakeUpstreamEndpoint:
    """An upstream that is up, down or unresponsive, as the test says.

    Each ``connect`` fails with ConnectionRefusedError while ``refuse`` is
    set, never completes while ``hang`` is set, and otherwise connects the
    protocol to a fresh ``transport_factory()`` (a
    ``StringTransportWithDisconnection``: closing it delivers connectionLost).
    """

    def __init__(
        self,
        refuse: bool = False,
        hang: bool = False,
        transport_factory: Callable[[], StringTransportWithDisconnection] | None = None,
    ) -> None:
        self.refuse = refuse
        self.hang = hang
        self.transport_factory = transport_factory or StringTransportWithDisconnection
        self.transports: list[StringTransportWithDisconnection] = []
        self.attempts = 0

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        self.attempts += 1
        if self.refuse:
            return fail(ConnectionRefusedError("refused by the test"))
        if self.hang:
            return Deferred()
        protocol = factory.buildProtocol(UPSTREAM_ADDRESS)
        assert protocol is not None
        transport = self.transport_factory()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.transports.append(transport)
        return succeed(protocol)

    @property
    def transport(self) -> StringTransportWithDisconnection:
        """The newest connection."""
        return self.transports[-1]


class Bridge:
    """A bridge assembled in memory: Clock, fake upstream, real pool and API."""

    def __init__(
        self,
        *,
        refuse: bool = False,
        hang: bool = False,
        transport_factory: Callable[[], StringTransportWithDisconnection] | None = None,
        start: bool = True,
        now: float = 0.0,
        boot: str = BOOT,
        **values: Any,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(now)
        self.config = Config().with_values(**values)
        self.endpoint = FakeUpstreamEndpoint(refuse, hang, transport_factory)
        self.events = EventHub(
            self.clock,
            boot,
            max_backlog=self.config.max_event_backlog,
            stall_timeout=self.config.event_stall_timeout,
            heartbeat=self.config.event_heartbeat,
            replay=self.config.event_replay,
        )
        self.pool = UpstreamPool(
            self.config, self.clock, self.endpoint, line_publisher(self.events),
            jitter=lambda: 0.0,
        )
        self.http_counts = {"requests": 0}
        self.api = BridgeAPI(self.config, self.pool, self.events, self.clock, self.http_counts)
        self.resource = make_root(self.api)  # what the service serves: Gate + hot routes
        self.treq = StubTreq(self.resource)
        self.started = False
        if start:
            self.start()

    def start(self) -> None:
        self.pool.startService()
        self.started = True

    def stop(self) -> None:
        self.events.close_all()
        if self.started:
            self.started = False
            self.pool.stopService()

    @property
    def member(self) -> UpstreamMember:
        return self.pool.members[0]

    @property
    def upstream(self) -> StringTransportWithDisconnection:
        return self.endpoint.transport

    def reply(self, data: bytes, transport: StringTransportWithDisconnection | None = None) -> None:
        """Bytes from the upstream to the bridge."""
        (transport or self.upstream).protocol.dataReceived(data)

    def site(self, **kwargs: Any) -> BridgeSite:
        """A real BridgeSite around this bridge's API, on a memory reactor."""
        kwargs.setdefault("reactor", MemoryReactorClock())
        return BridgeSite(
            self.resource, kwargs.pop("max_body_bytes", self.config.max_body_bytes), **kwargs
        )


class Answer:
    """A whole HTTP answer read through StubTreq."""

    def __init__(self, response: IResponse, body: bytes) -> None:
        self.response = response
        self.code: int = response.code
        self.body = body

    def header(self, name: str) -> list[str] | None:
        values: list[str] | None = self.response.headers.getRawHeaders(name)
        return values

    @property
    def content_type(self) -> str | None:
        values = self.header("Content-Type")
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class BridgeTestCase(SynchronousTestCase):
    """Builds bridges, stops them at the end and drives StubTreq requests."""

    def bridge(self, **kwargs: Any) -> Bridge:
        bridge = Bridge(**kwargs)
        self.addCleanup(self.stop_bridge, bridge)
        return bridge

    def stop_bridge(self, bridge: Bridge) -> None:
        """Stop it and check that no timer (retry, reply, keep-alive) is left."""
        bridge.stop()
        self.assertEqual(bridge.clock.getDelayedCalls(), [])

    def start_request(
        self, bridge: Bridge, method: str, path: str, **kwargs: Any
    ) -> Deferred[IResponse]:
        """Issue a request; the returned Deferred may still be waiting."""
        url = "http://bridge.test" + path
        return bridge.treq.request(method, url, **kwargs)  # type: ignore[no-any-return]

    def finish(self, bridge: Bridge, pending: Deferred[IResponse]) -> Answer:
        """Pump the in-memory connection and read the whole answer."""
        bridge.treq.flush()
        response = self.successResultOf(pending)
        body = bridge.treq.content(response)
        bridge.treq.flush()
        return Answer(response, self.successResultOf(body))

    def call(self, bridge: Bridge, method: str, path: str, **kwargs: Any) -> Answer:
        """A request that is answered without waiting for the upstream."""
        return self.finish(bridge, self.start_request(bridge, method, path, **kwargs))

    def assertJSON(
        self, answer: Answer, code: int, document: Any
    ) -> None:
        """Exact status, Content-Type and JSON body."""
        self.assertEqual(
            (answer.code, answer.content_type, answer.json()),
            (code, "application/json", document),
        )

    def assertError(self, answer: Answer, code: int, error: str) -> dict[str, Any]:
        """A JSON error answer; returns the document for further checks."""
        self.assertEqual((answer.code, answer.content_type), (code, "application/json"))
        document: dict[str, Any] = answer.json()
        self.assertEqual(document["error"], error)
        self.assertIsInstance(document["message"], str)
        self.assertTrue(document["message"])
        return document


def dechunk(data: bytes) -> bytes:
    """The payload of a complete or partial chunked body (complete chunks only)."""
    out = b""
    while data:
        size_line, separator, rest = data.partition(b"\r\n")
        if not separator:
            break
        size = int(size_line.split(b";")[0], 16)
        if size == 0 or len(rest) < size + 2:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def split_response(raw: bytes) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
    """A raw HTTP/1.1 response: status line, headers (lower-cased names), body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *header_lines = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status, headers, body


def timed_out() -> bytes:
    """The exact 408 answer to a request not received within request_timeout."""
    body = json.dumps(
        {"error": "request_timeout", "message": "the request was not received in time"}
    ).encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )

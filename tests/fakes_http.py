"""An in-memory bridge for the API tests: a Clock, a fake upstream endpoint,
the real pool, API, gate and BridgeSite, and requests written as raw bytes
to the site's real channel (:class:`tests.http_harness.Client`), answers read
by the one response parser (:func:`tests.http_harness.parse_responses`).

Nothing here is a mock: the pool, its ClientServices, the line protocol, the
gate, Klein and the llhttp channel all run for real; only the sockets are
replaced by ``StringTransport``s and time by a ``Clock``.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from bridge.app.service import BridgeService
from bridge.config import Config
from bridge.http.site import BridgeSite
from bridge.upstream.member import UpstreamMember
from tests.http_harness import (  # noqa: F401 (re-exported for the event tests)
    CLIENT,
    Client,
    Response,
    dechunk,
    http_request,
    split_response,
)

UPSTREAM_ADDRESS = IPv4Address("TCP", "127.0.0.1", 7000)
CLIENT_ADDRESS = CLIENT
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


class SocketTransport(StringTransportWithDisconnection):
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


class Bridge:
    """The real service assembly (:class:`BridgeService`: pool, API, gate,
    site, lifecycle, metrics) on a Clock, its upstream a FakeUpstreamEndpoint;
    the web service is never started: requests go to its site's channels."""

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
        self.service = BridgeService(self.config, self.clock, jitter=lambda: 0.0,
                                     endpoint=self.endpoint, boot=boot)
        self.events = self.service.events
        self.pool = self.service.pool
        self.http_counts = self.service.http_counts
        self.api = self.service.api
        self.http = self.service.site
        self.gate = self.http.gate
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

    def site(self, reactor: Any = None, **kwargs: Any) -> BridgeSite:
        """A real BridgeSite around this bridge's API and gate, on its clock
        (or on ``reactor``)."""
        return BridgeSite(
            self.gate, kwargs.pop("max_body_bytes", self.config.max_body_bytes),
            self.clock if reactor is None else reactor, **kwargs,
        )


class Answer:
    """A whole HTTP answer."""

    def __init__(self, response: Response) -> None:
        self.response = response
        self.code: int = response.status
        self.body = response.body

    def header(self, name: str) -> list[str] | None:
        values = self.response.headers.get(name.lower().encode("latin-1"))
        return None if values is None else [value.decode("latin-1") for value in values]

    @property
    def content_type(self) -> str | None:
        values = self.header("Content-Type")
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class BridgeTestCase(SynchronousTestCase):
    """Builds bridges, stops them at the end and sends them requests."""

    def bridge(self, **kwargs: Any) -> Bridge:
        bridge = Bridge(**kwargs)
        self.addCleanup(self.stop_bridge, bridge)
        return bridge

    def stop_bridge(self, bridge: Bridge) -> None:
        """Stop it and check that no timer (retry, reply, keep-alive) is left."""
        bridge.stop()
        self.assertEqual(bridge.clock.getDelayedCalls(), [])

    def start_request(
        self, bridge: Bridge, method: str, path: str, data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Client:
        """Issue a request on a new connection; its answer may still be due."""
        client = Client(bridge.http)
        self.addCleanup(client.disconnect)
        client.send(http_request(method, path, data, headers))
        return client

    def finish(self, bridge: Bridge, pending: Client) -> Answer:
        """The whole answer to the request on ``pending``."""
        return Answer(pending.response())

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


def timed_out() -> bytes:
    """The exact 408 answer to a request not received within request_timeout
    (the Date is the harness clock's: 1970 for a Clock at 0)."""
    body = json.dumps(
        {"error": "request_timeout", "message": "the request was not received in time"}
    ).encode()
    return body

"""The in-memory bridge of the API and event tests: :class:`Bridge` is the
one harness (:class:`tests.http_harness.Harness`, the real service assembly
on a memory reactor) with its pool on the one fake upstream endpoint
(:class:`tests.fakes_upstream.FakeEndpoint`, connecting at once), its clock at
0 and only its pool started; requests are raw bytes written to the site's
real channel (:class:`tests.http_harness.Client`), answers read by the one
response parser (:func:`tests.http_wire.parse_responses`).

Nothing here is a mock: the pool, its ClientServices, the line protocol, the
gate, Klein and the llhttp channel all run for real; only the sockets are
replaced by ``StringTransport``s and time by a memory reactor's clock.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from twisted.internet.testing import StringTransportWithDisconnection
from twisted.trial.unittest import SynchronousTestCase

from bridge.config import Config
from bridge.http.site import BridgeSite
from bridge.upstream.member import UpstreamMember
from tests.fakes_upstream import CONNECT, HANG, REFUSE, FakeEndpoint
from tests.http_harness import (  # noqa: F401 (re-exported for the event tests)
    CLIENT,
    Client,
    ClientSocket,
    Harness,
    Response,
    dechunk,
    http_request,
    split_response,
)

CLIENT_ADDRESS = CLIENT
BOOT = "b1"  # the event-id boot token of every in-memory bridge

#: Old names, kept for branches that still use them.
SocketTransport = ClientSocket


def FakeUpstreamEndpoint(  # the old class name, now a function
    refuse: bool = False,
    hang: bool = False,
    transport_factory: Callable[[], StringTransportWithDisconnection] | None = None,
) -> FakeEndpoint:
    """The one fake endpoint, refusing or hanging as told."""
    default = REFUSE if refuse else HANG if hang else CONNECT
    return FakeEndpoint(default=default, transport_factory=transport_factory)


class Bridge:
    """The in-memory bridge (:class:`Harness`: the real :class:`BridgeService`
    with pool, API, gate, site, lifecycle, metrics) on a clock at ``now``, its
    upstream a :class:`FakeEndpoint`; only the pool is started: requests go
    to its site's channels."""

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
        self.endpoint = FakeUpstreamEndpoint(refuse, hang, transport_factory)
        self.harness = Harness.unstarted(Config().with_values(**values), now=now,
                                         service_options={"endpoint": self.endpoint, "boot": boot})
        self.clock = self.harness.reactor
        self.config = self.harness.config
        self.service = self.harness.service
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

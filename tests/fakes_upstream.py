"""Fakes for the upstream-side tests (protocol, member, pool, handshake, heartbeat).

Nothing here is a mock: ``FakeEndpoint`` is a real ``IStreamClientEndpoint``
whose connections are ``StringTransportWithDisconnection``s, so ClientService,
the connector's guard, the line protocol and the member all run for real; only
the socket is replaced and time is an injected ``Clock``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IProtocol,
    IProtocolFactory,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from zope.interface import implementer

from bridge.config import Config
from bridge.upstream.backoff import Backoff
from bridge.upstream.fence import Fence
from bridge.upstream.group import AddressGroup
from bridge.upstream.member import UpstreamMember
from bridge.upstream.pool import UpstreamPool, framing_for
from bridge.upstream.protocol import Counters, UpstreamProtocol
from bridge.upstream.replies import make_framing
from bridge.upstream.replies.frames import Frame, Framing
from bridge.upstream.slots import REQUEST

UPSTREAM = IPv4Address("TCP", "127.0.0.1", 65432)

CONNECT = "connect"
REFUSE = "refuse"
HANG = "hang"

#: What one ``connect()`` does: CONNECT, REFUSE, HANG (never fires) or fail with
#: the given exception.
Outcome = str | Exception

REFUSED_MESSAGE = "connection refused by localhost:65432"
CLOSED_MESSAGE = "Connection was closed cleanly: Bye.."  # ConnectionDone("Bye.")


def no_jitter() -> float:
    return 0.0


class RecordingTransport(StringTransportWithDisconnection):
    """Also keeps every ``write()`` call, to check a payload went out in one write."""

    def __init__(self) -> None:
        super().__init__(peerAddress=UPSTREAM)
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)

    @property
    def aborted(self) -> bool:
        """abortConnection() was called (StringTransport calls that ``disconnected``)."""
        return bool(self.disconnected)


class HalfClosingTransport(RecordingTransport):
    """Half-closes as TCP does: ``loseWriteConnection()`` only records it; the
    connection ends when the peer closes (``FakeConnection.peer_closes``)."""

    def __init__(self) -> None:
        super().__init__()
        self.write_closed = False
        self.after_half_close = b""

    def write(self, data: bytes) -> None:
        if self.write_closed:
            self.after_half_close += data  # a bug: nothing may follow the FIN
        super().write(data)

    def loseWriteConnection(self) -> None:
        self.write_closed = True


@dataclass
class FakeConnection:
    """One connection the endpoint made: the bridge's side of a socket."""

    transport: RecordingTransport
    wire: IProtocol  # what the endpoint built: the connector's guard

    def written(self) -> bytes:
        return self.transport.value()

    def take(self) -> bytes:
        """What the bridge wrote since the last take()."""
        data = self.transport.value()
        self.transport.clear()
        return data

    def feed(self, data: bytes) -> None:
        """Bytes from the upstream server."""
        self.wire.dataReceived(data)

    def peer_closes(self) -> None:
        """The server closes the connection (connectionLost with ConnectionDone)."""
        self.transport.loseConnection()

    @property
    def open(self) -> bool:
        return bool(self.transport.connected)


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """The one fake upstream endpoint of the tests (upstream side and the
    in-memory bridge of :mod:`tests.http_harness` alike): each ``connect()``
    takes the next planned outcome, else ``default``.  A connection's
    transport is a :class:`RecordingTransport` (:class:`HalfClosingTransport`
    with ``half_close``), or what ``transport_factory`` makes."""

    def __init__(self, *outcomes: Outcome, default: Outcome = CONNECT,
                 half_close: bool = False,
                 transport_factory: Callable[[], StringTransportWithDisconnection] | None = None,
                 ) -> None:
        self.outcomes: list[Outcome] = list(outcomes)
        self.default = default
        self.half_close = half_close
        self.transport_factory = transport_factory
        self.attempts = 0
        self.connections: list[FakeConnection] = []
        self.hanging: list[Deferred[Any]] = []
        self._hanging_factories: list[IProtocolFactory] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        self.attempts += 1
        outcome = self.outcomes.pop(0) if self.outcomes else self.default
        if outcome == HANG:
            attempt: Deferred[Any] = Deferred()
            self.hanging.append(attempt)
            self._hanging_factories.append(factory)
            return attempt
        if outcome == REFUSE:
            return fail(ConnectionRefusedError("Connection refused"))
        if isinstance(outcome, Exception):
            return fail(outcome)
        assert outcome == CONNECT, outcome
        return succeed(self._connected(factory))

    def _connected(self, factory: IProtocolFactory) -> IProtocol:
        protocol = factory.buildProtocol(UPSTREAM)
        assert protocol is not None
        transport: Any
        if self.transport_factory is not None:
            transport = self.transport_factory()
        else:
            transport = HalfClosingTransport() if self.half_close else RecordingTransport()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.connections.append(FakeConnection(transport, protocol))
        return protocol

    def finish_hanging(self) -> None:
        """The oldest attempt still hanging connects after all."""
        attempt = self.hanging.pop(0)
        factory = self._hanging_factories.pop(0)
        if not attempt.called:
            attempt.callback(self._connected(factory))

    @property
    def last(self) -> FakeConnection:
        return self.connections[-1]

    @property
    def refuse(self) -> bool:
        """New connections are refused (the upstream is down)."""
        return self.default == REFUSE

    @refuse.setter
    def refuse(self, value: bool) -> None:
        self.default = REFUSE if value else CONNECT

    @property
    def hang(self) -> bool:
        """New connection attempts never complete."""
        return self.default == HANG

    @hang.setter
    def hang(self, value: bool) -> None:
        self.default = HANG if value else CONNECT

    @property
    def transports(self) -> list[StringTransportWithDisconnection]:
        """The transport of every connection made, oldest first."""
        return [connection.transport for connection in self.connections]

    @property
    def transport(self) -> StringTransportWithDisconnection:
        """The newest connection's transport."""
        return self.connections[-1].transport

    @property
    def open_connections(self) -> list[FakeConnection]:
        return [connection for connection in self.connections if connection.open]


class FakeAddresses:
    """The endpoint factory of a fake upstream group: one :class:`FakeEndpoint`
    per address (``spec`` as the group passes it: ``10.0.0.1:6379``), made
    on first use, every one with half-closing transports.  ``down(spec)``
    refuses new connections (and, with ``drop``, closes the open ones as a
    dying server would); ``up(spec)`` accepts them again."""

    def __init__(self, default: Outcome = CONNECT) -> None:
        self.default = default
        self.endpoints: dict[str, FakeEndpoint] = {}

    def __call__(self, spec: str) -> FakeEndpoint:
        endpoint = self.endpoints.get(spec)
        if endpoint is None:
            endpoint = self.endpoints[spec] = FakeEndpoint(default=self.default, half_close=True)
        return endpoint

    def __getitem__(self, spec: str) -> FakeEndpoint:
        return self(spec)

    def down(self, spec: str, drop: bool = True) -> None:
        self[spec].default = REFUSE
        if drop:
            for connection in self[spec].open_connections:
                connection.peer_closes()

    def up(self, spec: str) -> None:
        self[spec].default = CONNECT

    def attempts(self) -> dict[str, int]:
        return {spec: endpoint.attempts for spec, endpoint in self.endpoints.items()}

    def open_counts(self) -> dict[str, int]:
        return {spec: len(endpoint.open_connections)
                for spec, endpoint in self.endpoints.items()}


@implementer(IHostResolution)
@dataclass
class _Resolution:
    name: str

    def cancel(self) -> None:
        raise NotImplementedError("not cancellable (as Twisted's own resolvers)")


@implementer(IHostnameResolver)
class FakeResolver:
    """An IHostnameResolver answering from ``answers`` (host name -> IP
    texts), at once; while ``hold`` is set, answers wait for ``release()``.
    ``lookups`` lists every name asked, in order."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers: dict[str, list[str]] = dict(answers or {})
        self.lookups: list[str] = []
        self.hold = False
        self._held: list[tuple[IResolutionReceiver, str, int]] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,  # noqa: N803
        hostName: str,  # noqa: N803
        portNumber: int = 0,  # noqa: N803
        addressTypes: Sequence[type[IAddress]] | None = None,  # noqa: N803
        transportSemantics: str = "TCP",  # noqa: N803
    ) -> IHostResolution:
        self.lookups.append(hostName)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        if self.hold:
            self._held.append((resolutionReceiver, hostName, portNumber))
        else:
            self._answer(resolutionReceiver, hostName, portNumber)
        return resolution

    def release(self) -> None:
        held, self._held = self._held, []
        for receiver, name, port in held:
            self._answer(receiver, name, port)

    def _answer(self, receiver: IResolutionReceiver, name: str, port: int) -> None:
        for ip in self.answers.get(name, []):
            kind = IPv6Address if ":" in ip else IPv4Address
            receiver.addressResolved(kind("TCP", ip, port))
        receiver.resolutionComplete()


@dataclass
class LineLog:
    """An ``on_frame`` listener that keeps what it is told: each Frame as its
    text, and without a trailing ``None`` line number, so that events read
    ``("unsolicited", b"hello")`` or ``("send_error", b"-ERR x", 2)``."""

    events: list[tuple[Any, ...]] = field(default_factory=list)

    def __call__(self, *event: Any) -> None:
        items = [item.text if isinstance(item, Frame) else item for item in event]
        if items and items[-1] is None:
            items.pop()
        self.events.append(tuple(items))


def texts(frames: Sequence[Frame]) -> list[bytes]:
    """The text of each frame (for line framing: the line)."""
    return [frame.text for frame in frames]


def send_request(
    protocol: UpstreamProtocol, payload: bytes, count: int, timeout: float
) -> Deferred[list[bytes]]:
    """Write ``count`` lines awaiting one reply each; fires with the reply texts."""
    replies = protocol.submit(payload, count, mode=REQUEST, expected=count, timeout=timeout)
    assert replies is not None
    return replies.addCallback(texts)


def serving(member: UpstreamMember) -> UpstreamProtocol:
    """The member's connection that takes work (it must have one)."""
    protocol = member.protocol
    assert protocol is not None, f"member {member.name} is {member.state}"
    return protocol


def backoff_for(config: Config) -> Backoff:
    return Backoff(config.backoff_initial, config.backoff_factor, config.backoff_max, no_jitter)


def make_member(
    config: Config | None = None,
    endpoint: IStreamClientEndpoint | None = None,
    clock: Clock | None = None,
    on_give_up: Callable[[str], None] | None = None,
) -> tuple[UpstreamMember, Any, Clock, LineLog]:
    """A member (not started) of a single upstream over a fake endpoint
    (a :class:`FakeEndpoint` unless given) and a fresh clock."""
    config = config or Config()
    endpoint = endpoint if endpoint is not None else FakeEndpoint()
    clock = clock if clock is not None else Clock()
    log = LineLog()
    group = AddressGroup.single(config.upstream, endpoint, clock)
    member = UpstreamMember("0", config, clock, group, log, backoff_for(config), on_give_up,
                            framing=framing_for(config))
    group.add(member)
    return member, endpoint, clock, log


#: The shape of counting_nonces() (pass it as a Fence's nonce_pattern).
COUNTING_NONCE = "n[0-9]+"


def counting_nonces(prefix: str = "n") -> Callable[[], str]:
    """Fence nonces n1, n2, ... so that tests know the bytes on the wire."""
    numbers = itertools.count(1)
    return lambda: f"{prefix}{next(numbers)}"


def make_pool(
    config: Config, endpoint: FakeEndpoint, clock: Clock | None = None
) -> tuple[UpstreamPool, Clock, LineLog]:
    """A pool (not started) over a fake endpoint, without jitter, with
    counting fence nonces."""
    clock = clock if clock is not None else Clock()
    log = LineLog()
    pool = UpstreamPool(config, clock, endpoint, log, jitter=no_jitter,
                        nonce=counting_nonces(), nonce_pattern=COUNTING_NONCE)
    return pool, clock, log


def make_group_pool(
    config: Config,
    addresses: FakeAddresses,
    resolver: FakeResolver | None = None,
    clock: Clock | None = None,
    jitter: Callable[[], float] = no_jitter,
) -> tuple[UpstreamPool, Clock, LineLog]:
    """A pool (not started) over a fake upstream group (``config.addresses``)."""
    clock = clock if clock is not None else Clock()
    log = LineLog()
    pool = UpstreamPool(config, clock, None, log, jitter=jitter, nonce=counting_nonces(),
                        nonce_pattern=COUNTING_NONCE, endpoint_for=addresses,
                        resolver=resolver)
    return pool, clock, log


def line_framing(max_line_bytes: int = 64 * 1024) -> Framing:
    """Plain line framing, replies up to 16 lines long."""
    return make_framing("line", max_line_bytes=max_line_bytes,
                        max_reply_bytes=16 * max_line_bytes)


def connected_protocol(
    clock: Clock,
    *,
    max_line_bytes: int = 64 * 1024,
    stale_timeout: float = 15.0,
    framing: Framing | None = None,
    fence: Fence | None = None,
) -> tuple[UpstreamProtocol, RecordingTransport, LineLog]:
    """A bare protocol (line framing unless given) connected to a transport
    that reports its loss."""
    log = LineLog()
    protocol = UpstreamProtocol(
        clock=clock,
        counters=Counters(),
        stale_timeout=stale_timeout,
        on_frame=log,
        framing=framing if framing is not None else line_framing(max_line_bytes),
        fence=fence,
    )
    transport = RecordingTransport()
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return protocol, transport, log

"""A whole bridge in memory for the fast-lane tests: the real BridgeService
(Gate, API, Lifecycle, Metrics, BridgeSite, pool) on a MemoryReactorClock,
its upstream connection completed by hand onto a StringTransport, and HTTP
clients that feed raw bytes to ``site.buildProtocol(...)``.

The same bridge can be built with ``fast_lane`` on or off, which is what the
differential tests compare.  Nothing is mocked.
"""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransport,
    StringTransportWithDisconnection,
)
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString

from bridge.app.service import BridgeService
from bridge.config import Config

CLIENT = IPv4Address("TCP", "10.1.2.3", 40000)
UPSTREAM = IPv4Address("TCP", "127.0.0.1", 7000)
START = 1_700_000_000.0  # the reactor's time when a Side is built
DATE = datetimeToString(int(START))  # b"Tue, 14 Nov 2023 22:13:20 GMT"


class Client:
    """One HTTP connection to a site, fed raw bytes."""

    def __init__(self, site: Any) -> None:
        self.channel = site.buildProtocol(CLIENT)
        self.transport = StringTransport(peerAddress=CLIENT)
        self.channel.makeConnection(self.transport)
        self.gone = False

    def send(self, *pieces: bytes) -> None:
        """Each piece is one dataReceived call."""
        for piece in pieces:
            self.channel.dataReceived(piece)

    @property
    def received(self) -> bytes:
        return bytes(self.transport.value())

    @property
    def closing(self) -> bool:
        """The server has begun closing the connection."""
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        """The connection ends (the client left, or the server's close completed)."""
        if not self.gone:
            self.gone = True
            self.channel.connectionLost(Failure(ConnectionDone("closed")))


class Side:
    """One whole bridge serving HTTP with the fast lane on or off."""

    def __init__(self, fast_lane: bool = True, connect: bool = True, **values: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(START)
        values.setdefault("upstream", f"tcp:{UPSTREAM.host}:{UPSTREAM.port}")
        self.config = Config().with_values(**values)
        self.service = BridgeService(self.config, self.reactor, jitter=lambda: 0.0)
        self.site = self.service.site
        self.site.fast_lane = fast_lane
        self.clients: list[Client] = []
        self.upstreams: list[StringTransportWithDisconnection] = []
        self.service.pool.startService()
        if connect:
            self.connect_upstream()

    def connect_upstream(self) -> StringTransportWithDisconnection:
        """Complete the newest connection attempt to the upstream."""
        host, port, factory, _, _ = self.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        assert protocol is not None
        transport = StringTransportWithDisconnection(peerAddress=UPSTREAM)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.upstreams.append(transport)
        return transport

    @property
    def upstream(self) -> StringTransportWithDisconnection:
        return self.upstreams[-1]

    @property
    def written(self) -> bytes:
        """Every byte the bridge wrote to the upstream, over all connections."""
        return b"".join(bytes(transport.value()) for transport in self.upstreams)

    def reply(self, data: bytes) -> None:
        """Bytes from the upstream to the bridge."""
        self.upstream.protocol.dataReceived(data)

    def awaited(self) -> int:
        """Requests the upstream connections still await replies for (abandoned ones too)."""
        return self.service.pool.pending()

    def client(self) -> Client:
        client = Client(self.site)
        self.clients.append(client)
        return client

    @property
    def inflight(self) -> int:
        return self.service.lifecycle.inflight

    def metric(self, line: str) -> bool:
        """Whether the /metrics exposition holds exactly this sample line."""
        return line in self.service.metrics.render().decode().splitlines()

    def close(self) -> None:
        """End every connection and stop the upstream side (test cleanup)."""
        for client in self.clients:
            client.lose()
        self.service.events.close_all()
        self.service.pool.stopService()
        for transport in self.upstreams:
            if transport.connected:
                transport.loseConnection()


def answer(
    status: bytes, body: bytes, headers: list[tuple[bytes, bytes]], date: bytes = DATE
) -> bytes:
    """A whole answer as the fast lane writes it (Date first, Content-Length last)."""
    head = b"HTTP/1.1 " + status + b"\r\nDate: " + date + b"\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def json_answer(
    status: bytes, document: Any, *headers: tuple[bytes, bytes], date: bytes = DATE
) -> bytes:
    """A JSON answer from the fast lane: Content-Type, then ``headers``."""
    body = json.dumps(document).encode()
    return answer(status, body, [(b"Content-Type", b"application/json"), *headers], date)


_VARYING = (b"date:", b"server:")


def normalised(raw: bytes) -> bytes:
    """The answers in ``raw`` without what legitimately differs between the
    lanes: the order of the header lines, Date (twisted.web's follows the wall
    clock) and Server (only twisted.web sends one).  Every answer here is
    framed by Content-Length (or by the close, for twisted.web's bare 400)."""
    out = []
    for status, headers, body in split_answers(raw):
        lines = sorted(
            line for line in headers.split(b"\r\n")
            if line and not line.lower().startswith(_VARYING)
        )
        out.append(b"\r\n".join([status, *lines]) + b"\r\n\r\n" + body)
    return b"".join(out)


def served_by_twisted_web(raw: bytes) -> bool:
    return b"\r\nServer: TwistedWeb/" in raw


def http(method: str, target: str, body: bytes | None = None, *headers: str,
         version: str = "HTTP/1.1") -> bytes:
    """One request: Host, then ``headers``, then Content-Length if there is a body."""
    lines = [f"{method} {target} {version}", "Host: bridge.test", *headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def split_answers(raw: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(status line, header block, body) of each answer in ``raw``; a body
    without Content-Length runs to the end (twisted.web's 400, then close).
    An answer directly followed by another has no body (1xx, or to HEAD)."""
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status, _, headers = head.partition(b"\r\n")
        length = re.search(rb"(?im)^content-length: *(\d+)\r?$", headers)
        if rest.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")):
            size = 0
        else:
            size = int(length.group(1)) if length else len(rest)
        answers.append((status, headers, rest[:size]))
        raw = rest[size:]
    return answers

"""Cost of one small ``POST /send`` through the bridge's HTTP side, in memory.

The real service assembly (:class:`bridge.app.service.BridgeService`: gate,
lifecycle, metrics, API, site, pool) on a ``MemoryReactorClock``, one
upstream connection completed by hand onto a transport that discards what it
is given, and one client connection whose channel is fed N requests (the
bytes wrk sends in the benchmark's small /send scenario), one read each.
No sockets, no reactor loop: what is left is the Python work per request,
which is what this is for.  Under callgrind the instruction count is
repeatable to a fraction of a percent on a noisy machine::

    for n in 200 1200; do valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \\
        .venv/bin/python bench/channel_cost.py --requests $n; done
    # (Collected at 1200 - Collected at 200) / 1000 = instructions per request

or time it (``--repeat``), or profile it (``--cprofile``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock

from bridge.app.service import BridgeService
from bridge.config import Config

REQUEST = (b"POST /send HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 33\r\n"
           b"Content-Type: text/plain\r\n\r\n" + b"bench-line-0123456789abcdef-bench\n")


class NullTransport:
    """Takes every write (counts bytes), like a socket the kernel never refuses."""

    disconnecting = False

    def __init__(self) -> None:
        self.written = 0
        self.producer: Any = None

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writeSequence(self, data: list[bytes]) -> None:
        for piece in data:
            self.write(piece)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40000)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8080)

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def setTcpKeepAlive(self, enabled: bool) -> None:
        pass

    def loseConnection(self) -> None:
        self.disconnecting = True

    def abortConnection(self) -> None:
        self.disconnecting = True

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


def build() -> tuple[Any, NullTransport, NullTransport]:
    """A started bridge with one ready upstream connection and one client."""
    reactor = MemoryReactorClock()
    reactor.advance(1000.0)
    config = Config().with_values(upstream="tcp:127.0.0.1:7000")
    service = BridgeService(config, reactor, jitter=lambda: 0.0)
    service.startService()
    host, port, factory, _, _ = reactor.tcpClients[0]
    upstream = factory.buildProtocol(IPv4Address("TCP", host, port))
    upstream_transport = NullTransport()
    upstream.makeConnection(upstream_transport)
    client_transport = NullTransport()
    channel = service.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    channel.makeConnection(client_transport)
    return channel, client_transport, upstream_transport


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=200, help="requests before the counted ones")
    parser.add_argument("--repeat", type=int, default=1, help="time this many batches")
    parser.add_argument("--baseline", action="store_true", help="build, send nothing")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--top", type=int, default=35, help="functions --cprofile lists")
    args = parser.parse_args()
    channel, client, upstream = build()
    feed = channel.dataReceived
    for _ in range(args.warm):
        feed(REQUEST)
    if args.baseline:
        return 0
    if args.cprofile:
        import cProfile
        import pstats
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.requests):
            feed(REQUEST)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
        return 0
    best = float("inf")
    for _ in range(args.repeat):
        started = time.perf_counter()
        for _ in range(args.requests):
            feed(REQUEST)
        best = min(best, time.perf_counter() - started)
    answers = args.warm + args.requests * args.repeat
    expected_lines = answers * 35  # "bench-line...bench\r\n" is 35 bytes framed
    if upstream.written != expected_lines:
        print(f"upstream got {upstream.written} bytes, expected {expected_lines}",
              file=sys.stderr)
        return 1
    print(f"{best / args.requests * 1e6:.2f} us per request (best of {args.repeat}), "
          f"{client.written / answers:.0f} answer bytes each")
    return 0


if __name__ == "__main__":
    sys.exit(main())

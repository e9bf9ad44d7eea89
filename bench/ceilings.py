"""Ceilings the bridge is measured against, on the same stack and machine.

``ceilings.py klein``  a Klein app whose ``POST /send`` reads the body and
                       answers 202 ``{"sent": 1}`` (no upstream);
``ceilings.py web``    the same as a plain twisted.web resource;
``ceilings.py raw``    a Twisted client writing pre-framed lines to an
                       upstream as fast as the transport takes them (push
                       producer), for ``--duration`` seconds; prints JSON.

The HTTP ceilings use what the bridge may use at best: a Site without
form-body parsing and without an access log.  They print
``listening on http://127.0.0.1:PORT/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

ANSWER = b'{"sent": 1}'


def make_site(resource: Any) -> Any:
    from twisted.web.server import Site

    class QuietSite(Site):
        noisy = False

        def log(self, request: Any) -> None:
            pass

    return QuietSite(resource, parsePOSTFormSubmission=False)


def klein_resource() -> Any:
    from klein import Klein

    class Ceiling:
        app = Klein()

        @app.route("/send", methods=["POST"])
        def send(self, request: Any) -> bytes:
            request.content.read()
            request.setResponseCode(202)
            request.setHeader(b"Content-Type", b"application/json")
            request.setHeader(b"Content-Length", b"%d" % len(ANSWER))
            return ANSWER

    return Ceiling().app.resource()


def web_resource() -> Any:
    from twisted.web.resource import Resource

    class Ceiling(Resource):
        isLeaf = True

        def render_POST(self, request: Any) -> bytes:
            if request.path != b"/send":
                request.setResponseCode(404)
                return b""
            request.content.read()
            request.setResponseCode(202)
            request.setHeader(b"Content-Type", b"application/json")
            return ANSWER

    return Ceiling()


def serve(kind: str, port: int) -> int:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    resource = klein_resource() if kind == "klein" else web_resource()
    listening = reactor.listenTCP(port, make_site(resource), backlog=1024,
                                  interface="127.0.0.1")
    print(f"listening on http://127.0.0.1:{listening.getHost().port}/", flush=True)
    reactor.run()
    return 0


def raw(port: int, duration: float, lines_per_write: int, line_bytes: int) -> int:
    from twisted.internet import reactor as _reactor
    from twisted.internet.interfaces import IPushProducer
    from twisted.internet.protocol import ClientFactory, Protocol
    from zope.interface import implementer

    reactor: Any = _reactor
    line = (b"x" * line_bytes)[:line_bytes] + b"\r\n"
    chunk = line * lines_per_write
    result: dict[str, float] = {}

    @implementer(IPushProducer)
    class Writer(Protocol):
        writes = 0
        paused = False
        done = False

        def connectionMade(self) -> None:
            self.started = time.perf_counter()
            self.deadline = self.started + duration
            self.transport.registerProducer(self, True)  # type: ignore[union-attr]
            self.resumeProducing()

        def resumeProducing(self) -> None:
            self.paused = False
            write = self.transport.write  # type: ignore[union-attr]
            while not self.paused and not self.done:
                write(chunk)
                self.writes += 1
                if self.writes % 64 == 0 and time.perf_counter() >= self.deadline:
                    self.done = True
                    self.transport.unregisterProducer()  # type: ignore[union-attr]
                    self.transport.loseConnection()  # type: ignore[union-attr]

        def pauseProducing(self) -> None:
            self.paused = True

        def stopProducing(self) -> None:
            self.done = True

        def connectionLost(self, reason: Any = None) -> None:
            # Everything written has been handed to the kernel by now.
            result["seconds"] = time.perf_counter() - self.started
            result["lines"] = self.writes * lines_per_write
            result["bytes"] = self.writes * len(chunk)
            reactor.stop()

    factory = ClientFactory.forProtocol(Writer)
    factory.noisy = False
    reactor.connectTCP("127.0.0.1", port, factory)
    reactor.run()
    result["rate"] = result["lines"] / result["seconds"]
    print(json.dumps(result), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("klein", "web"):
        p = sub.add_parser(kind)
        p.add_argument("--port", type=int, default=0)
    p = sub.add_parser("raw")
    p.add_argument("--port", type=int, required=True, help="the sink's data port")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--lines-per-write", type=int, default=1000)
    p.add_argument("--line-bytes", type=int, default=32)
    args = parser.parse_args()
    if args.kind == "raw":
        return raw(args.port, args.duration, args.lines_per_write, args.line_bytes)
    return serve(args.kind, args.port)


if __name__ == "__main__":
    sys.exit(main())

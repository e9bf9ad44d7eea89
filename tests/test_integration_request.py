"""POST /request and the pool: the real bridge against real line servers.

(GET /events against real processes: tests/test_integration_events.py.)

The line servers answer in order, as real ones do; what the tests check is
that every reply reaches the caller whose lines caused it, and only that one.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from tests.base import BridgeTestCase
from tests.http_client import reactor
from tests.line_server import LineServer
from tests.waiting import concurrently, wait_for

LOST_MESSAGE = (
    "the upstream connection closed before every reply arrived; "
    "the lines may or may not have been processed"
)


def prefixed(prefix: bytes) -> Any:
    """A replier answering each line with ``prefix + line``."""
    return lambda line: prefix + line


class RequestReplyTests(BridgeTestCase):
    """One connection; one bridge for the class."""

    async def counters(self) -> dict[str, int]:
        assert self.http is not None
        status = await self.http.get("/status")
        self.assertEqual(status.status, 200)
        counters: dict[str, int] = status.json()["counters"]
        return counters

    async def test_replies_come_back_in_order(self) -> None:
        server = await self.start_upstream(prefixed(b"R "))
        assert self.http is not None
        reply = await self.http.post("/request", "a\nb\nc\n")
        self.assertEqual((reply.status, reply.json()), (200, {"replies": ["R a", "R b", "R c"]}))
        reply = await self.http.post("/request", "d\n")
        self.assertEqual((reply.status, reply.json()), (200, {"replies": ["R d"]}))
        self.assertEqual(server.received, b"a\r\nb\r\nc\r\nd\r\n")

    async def test_concurrent_requests_each_get_their_own_replies(self) -> None:
        server = await self.start_upstream(prefixed(b"ECHO "))
        http = self.http
        assert http is not None
        ids = [f"id-{number:03d}" for number in range(50)]

        replies = await concurrently(
            http.post("/request", f"{id_}:first\n{id_}:second\n") for id_ in ids
        )

        self.assertEqual(
            [(reply.status, reply.json()) for reply in replies],
            [(200, {"replies": [f"ECHO {id_}:first", f"ECHO {id_}:second"]}) for id_ in ids],
        )
        lines = server.lines
        self.assertEqual(len(lines), 100)
        pairs = sorted(lines[index:index + 2] for index in range(0, 100, 2))
        self.assertEqual(pairs, [[f"{id_}:first".encode(), f"{id_}:second".encode()]
                                 for id_ in ids])

    async def test_reply_timeout_then_the_late_reply_is_not_handed_on(self) -> None:
        def slow_first(line: bytes) -> Any:
            if line == b"slow":
                return deferLater(reactor, 0.5, lambda: b"late reply to slow")
            return b"reply to " + line

        server = await self.start_upstream(slow_first)
        assert self.http is not None
        late_before = (await self.counters())["late_replies"]

        reply = await self.http.post("/request?timeout=0.2", "slow\n")
        self.assertEqual(
            (reply.status, reply.json()),
            (504, {"error": "reply_timeout",
                   "message": "the upstream sent 0 of 1 replies within 0.2 s",
                   "replies": []}),
        )
        # Line framing cannot tell the late reply from the next one: until it
        # came, no request is written to that connection.
        reply = await self.http.post("/request", "fast\n")
        self.assertEqual((reply.status, reply.json()["error"]), (503, "upstream_unavailable"))
        self.assertIn("waiting for the late replies", reply.json()["message"])

        async def late_reply_came() -> bool:
            return (await self.counters())["late_replies"] == late_before + 1

        await wait_for(late_reply_came, what="the late reply")
        reply = await self.http.post("/request", "fast\n")
        self.assertEqual((reply.status, reply.json()), (200, {"replies": ["reply to fast"]}))
        self.assertEqual(server.received, b"slow\r\nfast\r\n")
        self.assertEqual(server.connections[0].replies_sent,
                         [b"late reply to slow", b"reply to fast"])
        self.assertEqual((await self.counters())["late_replies"], late_before + 1)

    async def test_a_server_that_never_answers_gives_504(self) -> None:
        server = await self.start_upstream(None)
        assert self.http is not None
        reply = await self.http.post("/request?timeout=0.2", "hello\nthere\n")
        self.assertEqual(
            (reply.status, reply.json()),
            (504, {"error": "reply_timeout",
                   "message": "the upstream sent 0 of 2 replies within 0.2 s",
                   "replies": []}),
        )
        self.assertEqual(server.received, b"hello\r\nthere\r\n")

    async def test_a_dropped_connection_gives_502_upstream_lost(self) -> None:
        server = await self.start_upstream(prefixed(b"R "), drop_after=2)
        assert self.http is not None
        reply = await self.http.post("/request", "a\nb\nc\n")
        self.assertEqual(
            (reply.status, reply.json()),
            (502, {"error": "upstream_lost", "message": LOST_MESSAGE, "replies": ["R a"]}),
        )
        self.assertEqual(bytes(server.connections[0].received), b"a\r\nb\r\nc\r\n")

        # The bridge reconnects by itself and the next request is answered.
        await self.wait_connected(server, 1)
        reply = await self.http.post("/request", "d\n")
        self.assertEqual((reply.status, reply.json()), (200, {"replies": ["R d"]}))
        self.assertEqual(server.received_since(1), b"d\r\n")


class PoolTests(BridgeTestCase):
    pool_size = 4

    async def test_concurrent_requests_are_spread_over_the_pool(self) -> None:
        server = await self.start_upstream(prefixed(b"OK "))
        http = self.http
        assert http is not None
        self.assertEqual(len(server.connections), 4)
        names = [f"job{number:02d}" for number in range(40)]

        replies = await concurrently(
            http.post("/request", f"{name}.1\n{name}.2\n{name}.3\n") for name in names
        )

        self.assertEqual(
            [(reply.status, reply.json()) for reply in replies],
            [(200, {"replies": [f"OK {name}.{part}" for part in (1, 2, 3)]})
             for name in names],
        )
        self.assertEqual(len(server.connections), 4)
        self.assertTrue(all(connection.lines for connection in server.connections),
                        server.describe())
        # Each request's three lines went, contiguously, to one connection.
        runs = sorted(
            connection.lines[index:index + 3]
            for connection in server.connections
            for index in range(0, len(connection.lines), 3)
        )
        self.assertEqual(runs, [[f"{name}.{part}".encode() for part in (1, 2, 3)]
                                for name in names])


class HandshakeTests(BridgeTestCase):
    bridge_args = ("--handshake", "AUTH pw", "--handshake-expect", r"^\+OK")

    async def test_ready_only_after_a_good_handshake(self) -> None:
        assert self.http is not None
        accepted: Deferred[bytes] = Deferred()

        def answer(line: bytes) -> Any:
            if line == b"AUTH pw":
                return accepted  # held until the test lets it go
            return b"R " + line

        server = LineServer(answer)
        server.start(self.upstream_port)
        self.addCleanup(server.stop)
        await server.wait_for_lines(1)
        self.assertEqual(server.lines, [b"AUTH pw"])
        readyz = await self.http.get("/readyz")
        self.assertEqual(readyz.status, 503)
        self.assertEqual(readyz.json()["state"], "connecting")

        accepted.callback(b"+OK welcome")
        await self.wait_connected(server, 1)
        reply = await self.http.post("/request", "GET x\n")
        self.assertEqual((reply.status, reply.json()), (200, {"replies": ["R GET x"]}))
        self.assertEqual(len(server.connections), 1)
        self.assertEqual(server.received, b"AUTH pw\r\nGET x\r\n")

    async def test_a_rejected_handshake_keeps_the_bridge_unready(self) -> None:
        assert self.http is not None and self.bridge is not None
        http, bridge = self.http, self.bridge
        failures_before = (await http.get("/status")).json()["counters"]["handshake_failures"]
        server = LineServer(lambda line: b"+OK" if line == b"AUTH right" else b"-ERR denied")
        server.start(self.upstream_port)
        self.addCleanup(server.stop)

        readiness: list[int] = []

        async def rejected_three_times() -> bool:
            readiness.append((await http.get("/readyz")).status)
            counters = (await http.get("/status")).json()["counters"]
            return bool(counters["handshake_failures"] >= failures_before + 3)

        await wait_for(rejected_three_times, what="three rejected handshakes",
                       context=lambda: server.describe() + "\n" + bridge.describe())
        readiness.append((await http.get("/readyz")).status)
        self.assertEqual(set(readiness), {503})
        closed = [c for c in server.connections if not c.open]
        self.assertGreaterEqual(len(closed), 3)
        self.assertEqual({bytes(c.received) for c in closed}, {b"AUTH pw\r\n"})
        reply = await http.post("/send", "nope\n")
        self.assertEqual(reply.status, 503)

        log = bridge.stdout() + bridge.stderr()
        self.assertIn("AUTH ***", log)
        self.assertNotIn("pw", log)

"""Fault injection: the real bridge process against upstreams and HTTP clients
that misbehave, over real loopback sockets, every wait bounded.

* the upstream killed and restarted again and again under concurrent load;
* an upstream that accepts but never reads (write backpressure, bounded memory);
* an upstream that refuses connections (backoff up to backoff_max, recovery);
* a half-open upstream (found by the heartbeat and replaced);
* idle and slow HTTP clients (others are served; the idle ones are closed);
* ``startup_max_attempts``.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import partial
from typing import Any, ClassVar

from twisted.internet.error import ConnectionDone

from tests.base import BridgeTestCase
from tests.bridge_process import BridgeProcess
from tests.faults_support import (
    Call,
    Load,
    RawConnection,
    bounded,
    open_raw_connections,
    proc_status_kb,
    set_reading,
)
from tests.http_client import reactor
from tests.line_server import LineServer
from tests.ports import LOOPBACK, unused_port
from tests.waiting import concurrently, wait_for

FAST_RECONNECT = ("--backoff-initial", "0.05", "--backoff-max", "0.2")
LOST_MESSAGE = (
    "the upstream connection closed before every reply arrived; "
    "the lines may or may not have been processed"
)


def refused_by(address: str) -> str:
    return f"connection refused by {address}"


def unavailable_message(address: str) -> str:
    """A 503's message: why the upstream is not connected, and when the next
    attempt is."""
    at = re.escape(address)
    reason = (rf"(the connection to {at} was lost|{at} closed the connection|"
              rf"connection refused by {at})")
    return (rf"^the upstream {at} is not connected \((connecting now|{reason}; connecting "
            rf"again now|{reason}; next attempt in [0-9]+\.[0-9] s)\); nothing was sent$")

#: The only codes /send and /request may answer while the upstream misbehaves.
ALLOWED = frozenset({200, 202, 429, 502, 503, 504})


def answer_requests(line: bytes) -> bytes | None:
    """A server that answers ``q...`` lines (what the tests send with
    ``/request``) with ``R <line>``, ``PING`` with ``PONG``, and nothing else
    (``/send`` lines need no answer, like Graphite's or a log server's)."""
    if line == b"PING":
        return b"PONG"
    return b"R " + line if line.startswith(b"q") else None


class FaultTestCase(BridgeTestCase):
    """One bridge per test (each needs its own flags); no shared bridge."""

    shared_bridge = False
    timeout = 60

    async def bridge_for(self, upstream: str, *args: str) -> BridgeProcess:
        """Start a bridge on an ephemeral loopback port for ``upstream``."""
        return await self.start_bridge(
            "--listen", f"{LOOPBACK}:0", "--upstream", upstream, *args
        )

    async def status(self) -> dict[str, Any]:
        assert self.http is not None
        reply = await self.http.get("/status")
        self.assertEqual(reply.status, 200)
        document: dict[str, Any] = reply.json()
        return document


class RestartTests(FaultTestCase):
    """The upstream is killed and restarted while clients keep using the bridge."""

    CYCLES: ClassVar[int] = 5
    WORKERS: ClassVar[int] = 6

    async def test_upstream_killed_and_restarted_under_concurrent_load(self) -> None:
        """Six clients call /send and /request one call after the other, each
        line carrying a unique id; the server answers each ``/request`` line
        with ``R <line>``.  The test runs five cycles of:

        * *steady*: the bridge is connected to server connection ``c`` (the
          test saw /readyz 200 with that connection open before tagging calls
          ``steady c``, and with a pool of one there is no other connection
          they can go to); once 30 steady calls are answered the clients
          pause (each finishes its call) and nothing is in flight;
        * *fault*: the clients resume; after a few answers the server is
          killed (listening port closed, connections reset), the clients keep
          calling and get 503s, the server listens again on the same port,
          and the bridge reconnects (connection ``c + 1``).

        What is asserted, exactly:

        * every call gets an answer within 10 s, with a status in
          {200, 202, 429, 502, 503, 504}; never a 500, a hang or a connection
          error; each answer's JSON is the specified one;
        * no reply reaches the wrong request: every 200's replies are exactly
          the echoes of its own lines, and a 502's partial replies a prefix
          of them;
        * connection ``c`` stayed up through the steady period, so every line
          of a steady call that got 202 or 200 arrived on it, exactly once in
          the whole run, each call's lines contiguous, each client's lines in
          the order it sent them;
        * over the whole run (fault periods included): no line arrives twice,
          no line of a call answered 503 or 429 arrives at all (nothing is
          queued), a call's lines arrive as one contiguous prefix of its lines
          on one connection (only a connection the test killed may cut one
          short: the bridge cannot know which bytes a reset destroyed), and
          each client's calls arrive in the order it made them.

        A 202 from the fault period promises less: its lines were written to
        a connection that was live as far as the bridge knew, and a reset can
        still destroy them in flight, so they must arrive at most once.
        """
        port = unused_port()
        server = LineServer(answer_requests)
        server.start(port)
        self.addCleanup(server.stop)
        bridge = await self.bridge_for(server.address, *FAST_RECONNECT)
        await self.wait_connected(server, 1)

        load = Load(self.client(bridge), workers=self.WORKERS, tag=("steady", 0))
        self.addCleanup(load.stop)
        load.start()
        for cycle in range(self.CYCLES + 1):
            await load.wait_answered(("steady", cycle), 30)
            await load.pause()
            await self.check_steady(server, load, cycle)
            if cycle == self.CYCLES:
                break

            fault = ("fault", cycle)
            load.retag(fault)
            load.resume()
            await load.wait_answered(fault, 6)
            await server.stop()
            await wait_for(partial(load.saw, fault, 503),
                           what="a client to get 503 while the upstream is down")
            self.assertEqual(server.start(port), port)
            await self.wait_connected(server, 1)
            self.assertEqual(len(server.connections), cycle + 2, server.describe())
            load.retag(("steady", cycle + 1))

        await load.stop()
        self.check_whole_run(server, load)

    def check_answer(self, call: Call, address: str) -> None:
        """The status is allowed and the JSON is exactly the specified one."""
        echoes = ["R " + line.decode() for line in call.lines]
        document = call.document
        self.assertIsNone(call.error, call.name)
        self.assertIn(call.status, ALLOWED, f"{call.name}: {document!r}")
        if call.status == 202:
            self.assertEqual((call.kind, document), ("send", {"sent": len(call.lines)}))
        elif call.status == 200:
            self.assertEqual((call.kind, document), ("request", {"replies": echoes}))
        elif call.status == 503:
            self.assertEqual(set(document), {"error", "message"}, call.name)
            self.assertEqual(document["error"], "upstream_unavailable", call.name)
            self.assertRegex(document["message"], unavailable_message(address), call.name)
        elif call.status == 502:
            replies = document["replies"]
            self.assertEqual(
                (call.kind, document),
                ("request", {"error": "upstream_lost", "message": LOST_MESSAGE,
                             "replies": echoes[:len(replies)]}),
            )
            self.assertLess(len(replies), len(echoes), call.name)
        elif call.status == 504:
            replies = document["replies"]
            self.assertEqual((call.kind, document["error"], replies),
                             ("request", "reply_timeout", echoes[:len(replies)]))
        else:
            self.assertIn(document["error"],
                          ("too_many_pending", "upstream_congested", "overloaded"))

    async def check_steady(self, server: LineServer, load: Load, cycle: int) -> None:
        calls = load.tagged(("steady", cycle))
        for call in calls:
            self.check_answer(call, server.address)
        self.assertEqual(
            [(call.name, call.status) for call in calls],
            [(call.name, 202 if call.kind == "send" else 200) for call in calls],
        )
        connection = server.connections[cycle]
        self.assertTrue(connection.open, server.describe())
        expected = {line for call in calls for line in call.lines}
        await wait_for(lambda: expected <= set(connection.lines),
                       what=f"every line of the steady calls of cycle {cycle}",
                       context=server.describe)

        received = connection.lines
        position = {line: index for index, line in enumerate(received)}
        for call in calls:
            start = position[call.lines[0]]
            self.assertEqual(received[start:start + len(call.lines)], call.lines, call.name)
        for worker in range(load.workers):
            mine = [line for call in calls if call.worker == worker for line in call.lines]
            wanted = set(mine)
            self.assertEqual([line for line in received if line in wanted], mine)
        counts = Counter(server.lines)
        self.assertEqual({line: counts[line] for line in expected}, dict.fromkeys(expected, 1))

    def check_whole_run(self, server: LineServer, load: Load) -> None:
        for call in load.calls:
            self.check_answer(call, server.address)
        statuses = Counter(call.status for call in load.calls)
        self.assertLessEqual(set(statuses), ALLOWED, statuses)
        for cycle in range(self.CYCLES):
            self.assertIn(503, {call.status for call in load.tagged(("fault", cycle))})
        self.assertEqual(len(server.connections), self.CYCLES + 1)
        last = len(server.connections) - 1

        owner = {line: call for call in load.calls for line in call.lines}
        where: dict[bytes, tuple[int, int]] = {}
        for index, connection in enumerate(server.connections):
            for offset, line in enumerate(connection.lines):
                self.assertIn(line, owner, "a line no client sent")
                self.assertNotIn(line, where, f"{line!r} arrived twice")
                where[line] = (index, offset)

        for call in load.calls:
            arrived = [line for line in call.lines if line in where]
            if not arrived:
                continue
            self.assertIn(call.status, (200, 202, 502, 504), call.name)
            self.assertEqual(arrived, call.lines[:len(arrived)], call.name)
            index, offset = where[arrived[0]]
            self.assertEqual(server.connections[index].lines[offset:offset + len(arrived)],
                             arrived, call.name)
            if len(arrived) < len(call.lines):
                self.assertNotEqual(index, last, f"{call.name} cut short on a live connection")
                self.assertNotEqual(call.status, 200, call.name)

        for worker in range(load.workers):
            order = [where[call.lines[0]] for call in load.calls
                     if call.worker == worker and call.lines[0] in where]
            self.assertEqual(order, sorted(order), f"worker {worker}'s calls out of order")
        # Summary printed by pytest on failure only.
        print(f"calls: {len(load.calls)}, statuses: {dict(statuses)}")


class CongestionTests(FaultTestCase):
    """An upstream that accepts the connection and then stops reading."""

    HIGH_WATER: ClassVar[int] = 65536
    LOW_WATER: ClassVar[int] = 16384
    PUSH_BYTES: ClassVar[int] = 100 * 1024 * 1024
    PUSHERS: ClassVar[int] = 4
    LINES_PER_BODY: ClassVar[int] = 512
    LINE_BYTES: ClassVar[int] = 1023  # + LF: bodies of 512 KiB
    RSS_LIMIT_KB: ClassVar[int] = 150 * 1024

    def body(self, pusher: int, seq: int) -> list[bytes]:
        filler = b"x" * self.LINE_BYTES
        return [(b"p%d.%05d.%03d." % (pusher, seq, n) + filler)[:self.LINE_BYTES]
                for n in range(self.LINES_PER_BODY)]

    async def test_a_server_that_never_reads_gets_429s_with_bounded_memory(self) -> None:
        """With write_high_water 64 KiB, 100 MiB pushed at a server that does
        not read: the bridge answers 429 upstream_congested instead of
        buffering (its peak RSS, VmHWM, stays under 150 MB); once the server
        reads again /send gets 202 and exactly the lines answered 202 arrive,
        once each, each pusher's in its order (none of a 429'd body)."""
        server = LineServer(None)
        server.start()
        self.addCleanup(server.stop)
        bridge = await self.bridge_for(
            server.address, *FAST_RECONNECT,
            "--write-high-water", str(self.HIGH_WATER),
            "--write-low-water", str(self.LOW_WATER),
        )
        await self.wait_connected(server, 1)
        connection = server.connections[0]
        set_reading(connection, False)  # the socket stays open

        http = self.client(bridge)
        accepted: list[list[bytes]] = [[] for _ in range(self.PUSHERS)]
        statuses: list[list[int]] = [[] for _ in range(self.PUSHERS)]
        pushed = [0]
        congested = {
            "error": "upstream_congested",
            "message": "every upstream connection has more than write_high_water "
                       f"({self.HIGH_WATER}) bytes waiting to be sent; retry later",
        }

        async def push(pusher: int) -> None:
            for seq in range(self.PUSH_BYTES // (self.LINES_PER_BODY * 1024) + 1):
                if pushed[0] >= self.PUSH_BYTES:
                    return
                lines = self.body(pusher, seq)
                body = b"\n".join(lines) + b"\n"
                pushed[0] += len(body)
                reply = await bounded(http.post("/send", body), 30.0)
                statuses[pusher].append(reply.status)
                if reply.status == 202:
                    self.assertEqual(reply.json(), {"sent": self.LINES_PER_BODY})
                    accepted[pusher].extend(lines)
                else:
                    self.assertEqual((reply.status, reply.json(), reply.header("Retry-After")),
                                     (429, congested, "1"))

        await bounded(
            concurrently(push(pusher) for pusher in range(self.PUSHERS)), 45.0
        )
        peak_kb = proc_status_kb(bridge.process.pid, "VmHWM")
        status = await self.status()

        self.assertGreaterEqual(pushed[0], self.PUSH_BYTES)
        every = [code for codes in statuses for code in codes]
        self.assertLessEqual(set(every), {202, 429})
        self.assertGreater(every.count(429), every.count(202), Counter(every))
        self.assertLess(peak_kb, self.RSS_LIMIT_KB, f"peak RSS {peak_kb} kB")
        # At most one body's worth over the high-water mark is ever buffered.
        self.assertGreater(status["unsent_bytes"], self.LOW_WATER)
        self.assertLessEqual(status["unsent_bytes"],
                             self.HIGH_WATER + self.LINES_PER_BODY * (self.LINE_BYTES + 2))
        print(f"statuses: {Counter(every)}, peak RSS {peak_kb} kB, unsent "
              f"{status['unsent_bytes']}, accepted lines {sum(map(len, accepted))}")

        # The server reads again: the buffers drain and /send is accepted again.
        set_reading(connection, True)
        probes: list[bytes] = []

        async def accepted_again() -> bool:
            line = b"probe.%03d" % len(probes)
            probes.append(line)
            reply = await http.post("/send", line + b"\n")
            self.assertIn(reply.status, (202, 429))
            if reply.status == 202:
                accepted[0].append(line)
                return True
            return False

        await wait_for(accepted_again, timeout=15.0, what="/send to be accepted again")
        expected = [line for lines in accepted for line in lines]
        await wait_for(lambda: len(connection.lines) >= len(expected), timeout=15.0,
                       what=f"{len(expected)} lines at the server (has {len(connection.lines)})")
        received = connection.lines
        self.assertEqual(len(server.connections), 1)
        self.assertEqual(sorted(received), sorted(expected))
        for pusher in range(self.PUSHERS):
            mine = set(accepted[pusher])
            self.assertEqual([line for line in received if line in mine], accepted[pusher])


class RefusedTests(FaultTestCase):
    """An upstream address where nothing listens (connections refused)."""

    async def test_backoff_grows_to_the_maximum_and_recovers_when_it_listens(self) -> None:
        """backoff 0.05 s doubling up to 0.4 s: /status shows a retry_delay at
        the maximum (minus at most 20 % jitter), the log shows the delays
        growing, /readyz and /send answer 503; as soon as the server listens
        the bridge connects within one backoff_max and /send works."""
        port = unused_port()
        address = f"{LOOPBACK}:{port}"
        bridge = await self.bridge_for(
            address, "--backoff-initial", "0.05", "--backoff-factor", "2",
            "--backoff-max", "0.4",
        )
        assert self.http is not None
        http = self.http

        async def many_failures() -> dict[str, Any] | None:
            status = await self.status()
            return status if status["attempts_since_success"] >= 6 else None

        status = await wait_for(many_failures, timeout=10.0, what="6 refused attempts",
                                context=bridge.describe)
        self.assertEqual((status["ready"], status["last_error"], status["connected_since"]),
                         (False, refused_by(address), None))
        self.assertIn(status["state"], ("waiting", "connecting"))
        self.assertGreaterEqual(status["retry_delay"], 0.32)
        self.assertLessEqual(status["retry_delay"], 0.4)

        readyz = await http.get("/readyz")
        self.assertEqual((readyz.status, readyz.json()["ready"], readyz.json()["connected"]),
                         (503, False, 0))
        refused = await http.post("/send", "too early\n")
        self.assertEqual((refused.status, refused.json()["error"], refused.header("Retry-After")),
                         (503, "upstream_unavailable", "1"))

        logged = re.findall(r"upstream 0: (.*); next attempt in ([0-9.e+-]+) s", bridge.stdout())
        self.assertGreaterEqual(len(logged), 5, bridge.stdout())
        self.assertEqual({reason for reason, _ in logged}, {refused_by(address)})
        # Delay n is min(0.05 * 2 ** n, 0.4) shortened by at most 20 % jitter
        # (and logged with three significant digits).
        for number, (_, shown) in enumerate(logged):
            base = min(0.05 * 2 ** number, 0.4)
            self.assertTrue(0.8 * base * 0.995 <= float(shown) <= base * 1.005,
                            f"delay {number} is {shown}; expected {0.8 * base:g}..{base:g}")

        server = LineServer(answer_requests)
        server.start(port)
        self.addCleanup(server.stop)
        await self.wait_status(200, "/readyz", timeout=2.0)
        reply = await http.post("/send", "finally\n")
        self.assertEqual((reply.status, reply.json()), (202, {"sent": 1}))
        reply = await http.post("/request", "q hello\n")
        self.assertEqual((reply.status, reply.json()), (200, {"replies": ["R q hello"]}))
        self.assertEqual(await server.wait_for_bytes(b"finally\r\nq hello\r\n"),
                         b"finally\r\nq hello\r\n")
        status = await self.status()
        self.assertEqual((status["attempts_since_success"], status["retry_delay"],
                          status["counters"]["connects"]), (0, None, 1))


class HalfOpenTests(FaultTestCase):
    """An upstream that stops answering without closing the connection."""

    async def test_the_heartbeat_finds_a_silent_upstream_and_replaces_it(self) -> None:
        """Heartbeat every 0.3 s of idleness, 0.3 s to answer: while the
        server answers PING nothing happens; once it stops reading (socket
        still open) the bridge closes that connection and makes a new one."""
        server = LineServer(answer_requests)
        server.start()
        self.addCleanup(server.stop)
        bridge = await self.bridge_for(
            server.address, *FAST_RECONNECT,
            "--heartbeat-interval", "0.3", "--heartbeat-timeout", "0.3",
            "--heartbeat-line", "PING", "--heartbeat-expect", "^PONG$",
        )
        await self.wait_connected(server, 1)
        first = server.connections[0]
        await wait_for(lambda: len(first.lines) >= 2, what="two heartbeats answered")
        status = await self.status()
        self.assertEqual((status["counters"]["heartbeat_failures"],
                          status["counters"]["connects"]), (0, 1))

        set_reading(first, False)  # half-open: no reading, no answers, no close
        await wait_for(lambda: len(server.connections) == 2, timeout=5.0,
                       what="a second connection", context=server.describe)
        await self.wait_connected(server, 1)
        status = await self.status()
        counters = status["counters"]
        self.assertGreaterEqual(counters["heartbeat_failures"], 1)
        self.assertGreaterEqual(counters["connects"], 2)
        self.assertGreaterEqual(counters["disconnects"], 1)
        self.assertIn("upstream 0: closing connection: no heartbeat reply within 0.3 s",
                      bridge.stdout())

        assert self.http is not None
        reply = await self.http.post("/request", "q after\n")
        self.assertEqual((reply.status, reply.json()), (200, {"replies": ["R q after"]}))
        second = server.connections[1]
        self.assertEqual([line for line in second.lines if line != b"PING"], [b"q after"])

        # The silent connection was really closed by the bridge: reading
        # again, the server finds the unanswered PINGs, then the reset.
        set_reading(first, True)
        await bounded(first.lost, 5.0)
        self.assertEqual(set(first.lines), {b"PING"})


class SlowClientTests(FaultTestCase):
    """HTTP clients that connect and then send nothing, or too little."""

    REQUEST_TIMEOUT: ClassVar[float] = 2.0

    async def test_idle_clients_do_not_block_others_and_are_closed(self) -> None:
        """200 connections: 100 send nothing, 50 half a request line, 50 the
        headers of a body they never send.  While they are open, a normal
        client's /send and /request succeed; after request_timeout each one
        is closed by the bridge with a clean EOF (a silent one without a
        word, one that began a request after a 408)."""
        server = LineServer(answer_requests)
        server.start()
        self.addCleanup(server.stop)
        bridge = await self.bridge_for(
            server.address, *FAST_RECONNECT,
            "--request-timeout", str(self.REQUEST_TIMEOUT),
        )
        await self.wait_connected(server, 1)
        assert bridge.port is not None

        opened_at = reactor.seconds()
        silent = await open_raw_connections(bridge.port, 100)
        half_line = await open_raw_connections(bridge.port, 50)
        for connection in half_line:
            connection.send(b"POST /se")
        no_body = await open_raw_connections(bridge.port, 50)
        for connection in no_body:
            connection.send(b"POST /send HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            b"Content-Length: 10\r\n\r\nabc")
        everyone: list[RawConnection] = [*silent, *half_line, *no_body]
        for connection in everyone:
            self.addCleanup(connection.close)

        normal = self.client(bridge, persistent=False)
        reply = await bounded(normal.post("/send", "served\n"), 5.0)
        self.assertEqual((reply.status, reply.json()), (202, {"sent": 1}))
        reply = await bounded(normal.post("/request", "q also served\n"), 5.0)
        self.assertEqual((reply.status, reply.json()), (200, {"replies": ["R q also served"]}))
        served_at = reactor.seconds()
        self.assertEqual(await server.wait_for_bytes(b"served\r\nq also served\r\n"),
                         b"served\r\nq also served\r\n")
        still_open = [connection for connection in everyone if not connection.is_closed]
        self.assertEqual(len(still_open), 200,
                         f"served {served_at - opened_at:.2f} s after opening")

        await wait_for(lambda: all(connection.is_closed for connection in everyone),
                       timeout=self.REQUEST_TIMEOUT + 5.0,
                       what="the bridge to close every idle connection",
                       context=lambda: f"{sum(c.is_closed for c in everyone)} closed")
        # None closed early: each was accepted after opened_at.
        first_closed = min(c.closed_at or 0.0 for c in everyone)
        self.assertGreaterEqual(first_closed - opened_at, self.REQUEST_TIMEOUT)
        for connection in everyone:
            assert connection.reason is not None
            self.assertTrue(connection.reason.check(ConnectionDone), connection.reason)
        # Silent ones just see EOF; a client that began a request gets a 408 first.
        self.assertEqual({bytes(c.received) for c in silent}, {b""})
        timeout_body = (b'{"error": "request_timeout", '
                        b'"message": "the request was not received in time"}')
        self.assertEqual(
            {re.sub(rb"Date: [^\r]*\r\n", b"", bytes(c.received)) for c in [*half_line, *no_body]},
            {b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
             b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(timeout_body)
             + timeout_body},
        )
        # Nothing from the slow clients reached the upstream.
        self.assertEqual(server.received, b"served\r\nq also served\r\n")
        reply = await bounded(normal.post("/send", "after\n"), 5.0)
        self.assertEqual(reply.status, 202)


class StartupAttemptsTests(FaultTestCase):
    """``startup_max_attempts`` against an address where nothing listens."""

    async def test_gives_up_after_three_attempts_with_status_1(self) -> None:
        address = f"{LOOPBACK}:{unused_port()}"
        bridge = BridgeProcess.bridge(
            "--listen", f"{LOOPBACK}:0", "--upstream", address, *FAST_RECONNECT,
            "--startup-max-attempts", "3",
        )
        self.addCleanup(bridge.stop)
        self.assertEqual(await bridge.wait_exit(timeout=15.0), 1, bridge.describe())
        self.assertEqual(
            bridge.stderr(),
            f"bridge: error: could not connect to {address} after 3 attempts "
            f"(startup_max_attempts); last error: {refused_by(address)}\n",
        )
        self.assertEqual(bridge.stdout().count(f"connecting to {address} (attempt"), 3)

    async def test_zero_keeps_trying(self) -> None:
        port = unused_port()
        bridge = await self.bridge_for(f"{LOOPBACK}:{port}", *FAST_RECONNECT,
                                       "--startup-max-attempts", "0")

        async def tried_often() -> bool:
            return bool((await self.status())["attempts_since_success"] >= 5)

        await wait_for(tried_often, timeout=10.0, what="5 attempts", context=bridge.describe)
        self.assertIsNone(bridge.process.poll(), bridge.describe())
        self.assertEqual(bridge.stderr(), "")
        # And it still connects when the upstream appears.
        server = LineServer(answer_requests)
        server.start(port)
        self.addCleanup(server.stop)
        await self.wait_connected(server, 1)

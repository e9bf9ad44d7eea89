"""Issue 9 end to end: the real bridge process against the servers users run.

Every class starts one real server (redis-server, memcached, aiosmtpd,
pyftpdlib: tests/servers.py) or a per-test :class:`~tests.line_server.LineServer`,
and one real ``bridge`` process, and talks HTTP to it over loopback sockets.
The checks are per caller and exact: each caller's JSON, the bytes at the
server, the counters on /status, the events on /events.  The trial
sequences of the issue (Redis GET/INCR mixes, ``PING`` plus a blank line,
memcached storage commands, pub/sub across a restart, error replies to
/send lines) are each replayed here.
"""

from __future__ import annotations

import atexit
import json
import re
import socket
import struct
import time
from typing import Any, ClassVar

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from tests.base import BridgeTestCase
from tests.events_client import RawEventClient, SSEEvent
from tests.http_client import BridgeClient, Reply, reactor
from tests.ports import LOOPBACK
from tests.servers import (
    FTP_PASSWORD,
    FTP_USER,
    ServerProcess,
    ftp_process,
    memcached_process,
    redis_process,
    smtp_process,
)
from tests.waiting import concurrently, wait_for

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
UPSTREAM_ERROR = "the upstream answered with an error reply"
PATTERN_ERROR = "a reply matched reply_error_pattern"
NONCE = re.compile(rb"fence-[0-9a-f]{16}")


def raw_exchange(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    """Write ``payload`` to a server on a plain socket (it must end with a
    command that makes the server close, e.g. QUIT) and return every byte the
    server sent until it closed.  A view of the server that bypasses the bridge."""
    received = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(payload)
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk


def status_lines(data: bytes) -> list[str]:
    return data.decode("utf-8").split("\r\n")[:-1]


class EndToEndCase(BridgeTestCase):
    """Helpers shared by every class: exact answers, counters, events."""

    timeout = 60

    def answer(self, reply: Reply, status: int, document: Any) -> None:
        """``reply`` has exactly this status and this JSON body."""
        try:
            body = reply.json()
        except ValueError:
            body = reply.body
        self.assertEqual((reply.status, body), (status, document))

    async def post(self, path: str, body: str, headers: dict[str, str] | None = None) -> Reply:
        assert self.http is not None
        return await self.http.post(path, body, headers)

    async def replies(self, body: str, expected: list[Any], path: str = "/request") -> None:
        """POST ``body`` to /request: 200 with exactly ``expected`` replies."""
        self.answer(await self.post(path, body), 200, {"replies": expected})

    async def status(self) -> dict[str, Any]:
        assert self.http is not None
        reply = await self.http.get("/status")
        self.assertEqual(reply.status, 200)
        document: dict[str, Any] = reply.json()
        return document

    async def counters(self) -> dict[str, int]:
        counters: dict[str, int] = (await self.status())["counters"]
        return counters

    async def counters_since(self, before: dict[str, int], **expected: int) -> None:
        """Wait until the counters moved by exactly ``expected`` since
        ``before`` (names not given must not have moved among desyncs,
        late_replies, unsolicited, send_errors)."""
        watched = {"desyncs": 0, "late_replies": 0, "unsolicited": 0, "send_errors": 0}
        watched.update(expected)
        seen: list[dict[str, int]] = []

        async def moved() -> bool:
            now = await self.counters()
            seen[:] = [{name: now[name] - before[name] for name in watched}]
            return seen[0] == watched

        await wait_for(moved, what=f"counters to move by {watched}",
                       context=lambda: f"they moved by {seen[-1] if seen else None}")

    def client_for_test(self) -> BridgeClient:
        assert self.bridge is not None
        return self.client(self.bridge)

    # -- /events ------------------------------------------------------------------

    async def event_client(self) -> RawEventClient:
        """A GET /events reader, subscribed (its "connected" comment arrived)."""
        assert self.bridge is not None and self.bridge.port is not None
        client = RawEventClient(self.bridge.port)
        self.addCleanup(client.close)

        def connected() -> bool:
            client.poll()
            return "connected" in client.comments

        await wait_for(connected, what="the /events stream to open", context=client.describe)
        return client

    async def events(self, client: RawEventClient, kind: str, count: int,
                     timeout: float = 10.0) -> list[SSEEvent]:
        """Wait until ``client`` has ``count`` events of ``kind``; returns them."""

        def arrived() -> bool:
            client.poll()
            if client.eof or client.reset:
                raise AssertionError("the /events stream closed: " + client.describe())
            return sum(1 for event in client.events if event.kind == kind) >= count

        await wait_for(arrived, timeout=timeout, what=f"{count} {kind!r} events",
                       context=lambda: f"{client.describe()}: {client.events}")
        return [event for event in client.events if event.kind == kind]


class RealServerCase(EndToEndCase):
    """One real server and one bridge per class.

    The server listens on a port outside the ephemeral range (so that it can
    be stopped and started again on the same port while the bridge
    reconnects); it is launched just before the bridge (both start at the
    same time) and closed after it in ``tearDownClass``.  Each test begins
    once the server accepts connections and the bridge says it is ready.
    """

    server: ClassVar[ServerProcess | None] = None

    @classmethod
    def make_server(cls) -> ServerProcess:
        raise NotImplementedError

    @classmethod
    def prepare_upstream(cls) -> int:
        server = cls.make_server()  # SkipTest here when the server is missing
        cls.server = server
        atexit.register(server.close)
        server.launch()
        return server.port

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        server = cls.__dict__.get("server")
        if server is not None:
            cls.server = None
            server.close()
            atexit.unregister(server.close)

    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        server = self.server
        assert server is not None
        if server.running:
            server.wait_accepting()  # returns at once after the class's first test
        else:
            server.start()  # a test that stopped it failed before starting it again
        await self.wait_status(200, timeout=10)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def prefix(self) -> str:
        """A key prefix of this test's own (the server is shared by the class)."""
        return self.id().rpartition(".")[2]


# -- Redis with the resp framing ------------------------------------------------------


class RedisRespTests(RealServerCase):
    """Redis, ``--reply-framing resp``, two pooled connections, /send
    replies checked (the default for resp)."""

    pool_size = 2
    bridge_args = ("--reply-framing", "resp", "--reply-timeout", "3")

    @classmethod
    def make_server(cls) -> ServerProcess:
        return redis_process()

    async def mixed_callers(self, prefix: str, clients: int = 8, rounds: int = 25) -> None:
        """``clients`` concurrent callers, each with its own connection, each
        sending ``rounds`` requests in turn: ``GET a``, ``INCR counter``, or
        both in one body.  Every GET gets exactly a's value, every INCR one
        integer; the integers are exactly 1..N, increasing per caller."""
        value = f"value of {prefix}"
        await self.replies(f'SET {prefix}:a "{value}"', ["OK"])
        bodies = [f"GET {prefix}:a", f"INCR {prefix}:counter",
                  f"GET {prefix}:a\nINCR {prefix}:counter"]
        answers: list[list[tuple[int, int, Any]]] = [[] for _ in range(clients)]

        async def caller(index: int) -> None:
            http = self.client_for_test()
            for turn in range(rounds):
                kind = (index + turn) % 3
                reply = await http.post("/request", bodies[kind])
                answers[index].append((kind, reply.status, reply.json()))

        await concurrently(caller(index) for index in range(clients))

        increments: list[int] = []
        for index, seen in enumerate(answers):
            mine: list[int] = []
            for kind, status, document in seen:
                self.assertEqual(status, 200, (index, kind, document))
                replies = document["replies"]
                if kind == 0:
                    self.assertEqual(document, {"replies": [value]})
                elif kind == 1:
                    self.assertEqual(len(replies), 1, document)
                    self.assertIs(type(replies[0]), int, document)
                    mine.append(replies[0])
                else:
                    self.assertEqual(len(replies), 2, document)
                    self.assertEqual(replies[0], value, document)
                    self.assertIs(type(replies[1]), int, document)
                    mine.append(replies[1])
            self.assertEqual(mine, sorted(mine), f"caller {index} saw INCR go backwards")
            increments += mine
        expected = sum(1 for seen in answers for kind, _, _ in seen if kind != 0)
        self.assertEqual(sorted(increments), list(range(1, expected + 1)))
        await self.replies(f"GET {prefix}:counter", [str(expected)])

    async def test_concurrent_get_and_incr_callers_each_get_their_own_reply(self) -> None:
        before = await self.counters()
        await self.mixed_callers(self.prefix())
        await self.counters_since(before)  # no desync, late reply or unsolicited frame

    async def test_send_traffic_alongside_never_reaches_a_request_caller(self) -> None:
        """The same mix while two /send callers push RPUSH lines (whose
        integer replies are consumed by the bridge and must never answer an
        INCR or a GET)."""
        prefix = self.prefix()
        before = await self.counters()
        done = False
        pushed: list[list[str]] = [[], []]

        async def sender(index: int) -> None:
            http = self.client_for_test()
            while not done or len(pushed[index]) < 50:
                items = [f"{index}-{len(pushed[index]) + i}" for i in range(5)]
                body = "\n".join(f"RPUSH {prefix}:list {item}" for item in items)
                reply = await http.post("/send", body)
                self.answer(reply, 202, {"sent": 5})
                pushed[index] += items

        senders = [Deferred.fromCoroutine(sender(index)) for index in range(2)]
        try:
            await self.mixed_callers(prefix)
        finally:
            done = True
            await concurrently(senders)
        total = len(pushed[0]) + len(pushed[1])
        # Every RPUSH reply was consumed as a /send reply, none as anything else.
        await self.counters_since(before, discarded_replies=total)
        reply = await self.post("/request", f"LRANGE {prefix}:list 0 -1")
        self.assertEqual(reply.status, 200)
        (listed,) = reply.json()["replies"]
        self.assertEqual(len(listed), total)
        # Every item once.  Not in each sender's order: with two connections
        # a /send written (202) on one may run after the next /send, written
        # on the other, whose connection Redis served first.
        for index in range(2):
            self.assertEqual(sorted(item for item in listed if item.startswith(f"{index}-")),
                             sorted(pushed[index]))

    async def test_requests_that_time_out_alongside_leave_every_other_caller_exact(
        self,
    ) -> None:
        """The same mix while another caller's ``BLPOP`` requests give up
        (504) before Redis answers them: their slots take the late replies,
        which never reach anybody else."""
        prefix = self.prefix()
        before = await self.counters()
        timed_out: list[tuple[int, Any]] = []

        async def impatient() -> None:
            http = self.client_for_test()
            for _ in range(3):
                reply = await http.post("/request?timeout=0.1", f"BLPOP {prefix}:none 0.3")
                timed_out.append((reply.status, reply.json()))

        blocking = Deferred.fromCoroutine(impatient())
        try:
            await self.mixed_callers(prefix)
        finally:
            await blocking
        self.assertEqual(timed_out, [(504, {
            "error": "reply_timeout", "message": "the upstream sent 0 of 1 replies within 0.1 s",
            "replies": []})] * 3)
        await self.counters_since(before, late_replies=3)

    async def test_ping_and_a_blank_line_then_steady_incr(self) -> None:
        """The trial that left every later request one reply behind: Redis
        does not answer the blank line, and the bridge does not wait for it."""
        prefix = self.prefix()
        before = await self.counters()
        await self.replies("PING\n\n", ["PONG"], path="/request?timeout=1")
        for expected in range(1, 11):
            await self.replies(f"INCR {prefix}:sidefx", [expected])
        self.assertEqual(raw_exchange(self.port, f"GET {prefix}:sidefx\r\nQUIT\r\n".encode()),
                         b"$2\r\n10\r\n+OK\r\n")
        await self.counters_since(before)

    async def test_replies_override_and_raw_bytes(self) -> None:
        prefix = self.prefix()
        before = await self.counters()
        await self.replies(f"RPUSH {prefix}:l x y\nSET {prefix}:a hello", [2, "OK"])

        # Accept: text/plain: the replies' bytes exactly as Redis sent them.
        assert self.http is not None
        reply = await self.http.post(
            "/request", f"GET {prefix}:a\nINCR {prefix}:n\nGET {prefix}:missing\n"
            f"LRANGE {prefix}:l 0 -1\nPING\n\n", {"Accept": "text/plain"})
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.header("Content-Type"), "text/plain; charset=utf-8")
        self.assertEqual(reply.body, b"$5\r\nhello\r\n:1\r\n$-1\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n"
                                     b"+PONG\r\n")

        # ?replies=N: exactly N replies for the whole request.
        await self.replies(f"INCR {prefix}:n\nINCR {prefix}:n", [2, 3],
                           path="/request?replies=2")
        await self.replies(f"INCR {prefix}:m\nINCR {prefix}:m", [1], path="/request?replies=1")
        # The second INCR's reply came when nothing awaited it: unsolicited.
        await self.counters_since(before, unsolicited=1)
        await self.replies("ECHO unanswered", [], path="/request?replies=0")
        await self.counters_since(before, unsolicited=2)
        await self.replies(f"GET {prefix}:m\nGET {prefix}:n", ["2", "3"])
        self.answer(await self.post("/request?replies=x", "PING"), 400, {
            "error": "invalid_replies",
            "message": "replies must be a whole number from 0 to 100000, got 'x'"})

    async def test_an_error_reply_to_a_send_line_is_counted_logged_and_published(self) -> None:
        prefix = self.prefix()
        assert self.bridge is not None
        since = len(self.bridge.stdout())
        events = await self.event_client()
        before = await self.counters()
        self.answer(await self.post("/send", f"RPUSH {prefix}:l x\nINCR {prefix}:l"),
                    202, {"sent": 2})
        (event,) = await self.events(events, "send_error", 1)
        self.assertEqual(event.data, json.dumps({"line": 2, "reply": {"error": WRONGTYPE}}))
        self.assertEqual(json.loads(event.data), {"line": 2, "reply": {"error": WRONGTYPE}})
        await self.counters_since(before, send_errors=1, discarded_replies=2)

        # Two errors in one /send: two events, one log line.  The blank line
        # gets no reply from Redis, and still counts in the line numbers.
        self.answer(await self.post(
            "/send", f"INCR {prefix}:l\n\nRPUSH {prefix}:l y\nINCR {prefix}:l"), 202,
            {"sent": 4})
        sent = await self.events(events, "send_error", 3)
        self.assertEqual([json.loads(event.data) for event in sent[1:]], [
            {"line": 1, "reply": {"error": WRONGTYPE}},
            {"line": 4, "reply": {"error": WRONGTYPE}},
        ])
        await self.counters_since(before, send_errors=3, discarded_replies=5)
        logged = [line for line in self.bridge.stdout()[since:].splitlines()
                  if "error replies to POST /send lines" in line]
        self.assertEqual(len(logged), 2, logged)
        self.assertIn("1 error replies to POST /send lines; the first, to line 2: "
                      f"{WRONGTYPE}", logged[0])
        self.assertIn("2 error replies to POST /send lines; the first, to line 1: "
                      f"{WRONGTYPE}", logged[1])
        self.assertEqual([event.kind for event in events.events], ["send_error"] * 3)

        # ?confirm=true: wait for the replies and list the errors.
        self.answer(await self.post(
            "/send?confirm=true", f"RPUSH {prefix}:l z\n\nINCR {prefix}:l\nLLEN {prefix}:l"),
            200, {"sent": 4, "errors": [{"line": 3, "reply": {"error": WRONGTYPE}}]})
        self.answer(await self.post("/send?confirm=true", f"RPUSH {prefix}:l w"),
                    200, {"sent": 1, "errors": []})
        await self.replies(f"LRANGE {prefix}:l 0 -1", [["x", "y", "z", "w"]])
        # Confirmed errors count as send errors too (the caller has them: not published).
        await self.counters_since(before, send_errors=4)
        self.assertEqual([event.kind for event in events.events], ["send_error"] * 3)

    async def test_lines_redis_would_misread_are_refused_and_nothing_is_sent(self) -> None:
        prefix = self.prefix()
        before = await self.counters()
        for body, message in [
            ("SUBSCRIBE news", "line 1 is SUBSCRIBE: after it the connection delivers pub/sub "
             "messages instead of one reply per command; subscribe through the "
             "events_subscribe setting and read them from /events"),
            (f'INCR {prefix}:n\nGET "a', "line 2 has unbalanced quotes ('GET \"a'): Redis "
             "answers an error and closes the connection"),
            (f"INCR {prefix}:n\n*1", "line 2 starts with '*': Redis would read it as a RESP "
             "multibulk request, not an inline command"),
        ]:
            self.answer(await self.post("/request", body), 400,
                        {"error": "invalid_command", "message": message})
            self.answer(await self.post("/send", body), 400,
                        {"error": "invalid_command", "message": message})
        after = await self.counters()
        self.assertEqual(after["lines_sent"], before["lines_sent"])
        await self.replies(f"INCR {prefix}:n", [1])
        self.answer(await self.post("/request", f"SET {prefix}:l x\nLPUSH {prefix}:l y"), 502, {
            "error": "upstream_error", "message": UPSTREAM_ERROR,
            "replies": ["OK", {"error": WRONGTYPE}]})


class RedisEventsTests(RealServerCase):
    """What reaches /events from Redis.  ``--events-subscribe 'SUBSCRIBE
    news'``: one event per message, and the subscription survives a restart
    of redis-server.  ``--send-replies discard``: /send replies are consumed
    and counted, never published, errors included."""

    bridge_args = ("--reply-framing", "resp", "--events-subscribe", "SUBSCRIBE news",
                   "--send-replies", "discard")

    @classmethod
    def make_server(cls) -> ServerProcess:
        return redis_process()

    async def publish(self, payload: str) -> None:
        # 1: the bridge's subscriber connection is the one receiver.
        await self.replies(f"PUBLISH news {payload}", [1])

    async def subscribed(self, messages: int) -> dict[str, Any]:
        """The events subscriber's /status once it is connected and has
        received ``messages`` messages."""

        async def connected() -> dict[str, Any] | None:
            subscriber: dict[str, Any] = (await self.status())["events_subscriber"]
            done = subscriber["state"] == "connected" and subscriber["messages"] == messages
            return subscriber if done else None

        found: dict[str, Any] = await wait_for(connected, what="the events subscriber")
        return found

    async def test_discarded_replies_are_counted_not_published(self) -> None:
        prefix = self.prefix()
        events = await self.event_client()
        before = await self.counters()
        self.assertEqual((await self.status())["send_replies"], "discard")
        self.answer(await self.post("/send", f"RPUSH {prefix}:l x\nINCR {prefix}:l"),
                    202, {"sent": 2})
        await self.counters_since(before, discarded_replies=2)
        # A marker after them on the same connection: an unanswered ECHO's
        # reply is published as unsolicited.  When it arrived, anything the
        # /send replies caused would have arrived before it.
        await self.replies("ECHO marker", [], path="/request?replies=0")
        (marker,) = await self.events(events, "unsolicited", 1)
        self.assertEqual(marker.data, '"marker"')
        self.assertEqual([event.kind for event in events.events], ["unsolicited"])
        await self.counters_since(before, discarded_replies=2, unsolicited=1)
        # confirm=true still reports the errors to its caller.
        self.answer(await self.post("/send?confirm=true", f"INCR {prefix}:l"),
                    200, {"sent": 1, "errors": [{"line": 1, "reply": {"error": WRONGTYPE}}]})

    async def test_messages_arrive_as_one_event_each_across_a_restart(self) -> None:
        assert self.server is not None
        first = await self.subscribed(1)  # the confirmation of SUBSCRIBE
        self.assertEqual(first["lines"], ["SUBSCRIBE news"])
        events = await self.event_client()
        for payload in ("hello", "with-\u00e9", "third"):
            await self.publish(payload)
        before_restart = [
            ["message", "news", "hello"], ["message", "news", "with-\u00e9"],
            ["message", "news", "third"],
        ]
        received = await self.events(events, "message", 3)
        self.assertEqual([json.loads(event.data) for event in received], before_restart)
        self.assertEqual(received[0].data, '["message", "news", "hello"]')

        self.server.stop()
        await self.wait_status(503)

        async def subscriber_down() -> bool:
            state = (await self.status())["events_subscriber"]["state"]
            return state in ("connecting", "waiting")

        await wait_for(subscriber_down, what="/status to show the subscriber reconnecting")
        self.server.start()
        await self.wait_status(200, timeout=10)
        # The subscription is made again on the new connection (its
        # confirmation is a message too), then new messages arrive.
        resubscribed = await self.events(events, "message", 4)
        self.assertEqual(json.loads(resubscribed[3].data), ["subscribe", "news", 1])
        for payload in ("after", "restart"):
            await self.publish(payload)
        received = await self.events(events, "message", 6)
        self.assertEqual([json.loads(event.data) for event in received], [
            *before_restart, ["subscribe", "news", 1],
            ["message", "news", "after"], ["message", "news", "restart"],
        ])
        self.assertEqual({event.kind for event in events.events}, {"message"})
        await self.subscribed(7)


# -- Redis with the line framing (the old default) -----------------------------------------


class RedisLineFramingTrialTests(RealServerCase):
    """The issue's trial with ``line`` framing and no fence: after a request
    gives up, its connection takes no new request until the late replies
    came, or it is closed after stale_reply_timeout and a fresh one made."""

    bridge_args = ("--stale-reply-timeout", "2", "--reply-timeout", "1")
    STALE = 2.0
    WAITING = {
        "error": "upstream_unavailable",
        "message": "every upstream connection is waiting for the late replies of a request "
                   "that gave up; with reply_framing line and no fence they cannot be told "
                   "from new replies (the connection is closed if they do not come within "
                   "stale_reply_timeout, 2 s); nothing was sent",
    }

    @classmethod
    def make_server(cls) -> ServerProcess:
        return redis_process()

    async def give_up(self) -> float:
        """``PING`` and a blank line with a short timeout: 504 with the one
        reply Redis sends.  Returns when the request was sent."""
        sent = reactor.seconds()
        self.answer(await self.post("/request?timeout=0.5", "PING\n\n"), 504, {
            "error": "reply_timeout", "message": "the upstream sent 1 of 2 replies within 0.5 s",
            "replies": ["+PONG"]})
        return sent

    async def test_the_bridge_recovers_by_itself(self) -> None:
        prefix = self.prefix()
        before = await self.counters()
        await self.give_up()
        for _ in range(3):
            reply = await self.post("/request", f"INCR {prefix}:n")
            self.answer(reply, 503, self.WAITING)
            self.assertEqual(reply.header("Retry-After"), "1")

        async def recovered() -> bool:
            status = await self.status()
            return status["counters"]["desyncs"] == before["desyncs"] + 1 and status["ready"]

        await wait_for(recovered, timeout=self.STALE + 3, what="a fresh connection")
        await self.replies(f"INCR {prefix}:n", [":1"])  # nothing was sent meanwhile
        after = await self.counters()
        self.assertEqual((after["connects"] - before["connects"],
                          after["disconnects"] - before["disconnects"],
                          after["desyncs"] - before["desyncs"],
                          after["late_replies"] - before["late_replies"]), (1, 1, 1, 0))
        status = await self.status()
        self.assertEqual(status["members"][0]["last_error"],
                         "closed by the bridge: out of step: the oldest awaited reply is more "
                         "than 2 s late (stale_reply_timeout)")

    async def test_the_bridge_recovers_under_steady_traffic(self) -> None:
        prefix = self.prefix()
        before = await self.counters()
        gave_up = await self.give_up()
        answers: list[tuple[float, int, Any]] = []
        successes = 0
        deadline = gave_up + self.STALE + 5
        while successes < 5 and reactor.seconds() < deadline:
            reply = await self.post("/request", f"INCR {prefix}:n")
            answers.append((reactor.seconds() - gave_up, reply.status, reply.json()))
            successes += reply.status == 200
            await deferLater(reactor, 0.1, lambda: None)  # the traffic's pace
        ok = [document for _, status, document in answers if status == 200]
        self.assertEqual(ok, [{"replies": [f":{n}"]} for n in range(1, 6)], answers)
        first_ok = next(at for at, status, _ in answers if status == 200)
        self.assertLess(first_ok, self.STALE + 2, answers)
        for _, status, document in answers:
            if status == 200:
                continue
            self.assertEqual(status, 503, answers)
            # While waiting for the late reply, then (briefly) reconnecting.
            if document != self.WAITING:
                self.assertEqual(document["error"], "upstream_unavailable")
                self.assertIn("is not connected", document["message"])
        self.assertEqual(raw_exchange(self.port, f"GET {prefix}:n\r\nQUIT\r\n".encode()),
                         b"$1\r\n5\r\n+OK\r\n")
        after = await self.counters()
        self.assertEqual(after["desyncs"] - before["desyncs"], 1)


# -- memcached --------------------------------------------------------------------------------



def unblock_blpop(port: int) -> None:
    """Make the Redis client blocked in BLPOP return as if its timeout had
    passed (``*-1``), from a connection of the test's own: the late reply
    comes when the test says, not after a time the machine may overrun."""
    with socket.create_connection((LOOPBACK, port)) as redis:
        redis.sendall(b"CLIENT LIST TYPE normal\r\n")
        received = b""
        while b"\r\n" not in received:
            received += redis.recv(65536)
        header, _, listing = received.partition(b"\r\n")
        while len(listing) < int(header[1:]) + 2:  # a bulk string: $LENGTH, data, CRLF
            listing += redis.recv(65536)
        (client,) = re.findall(rb"id=(\d+) [^\n]*cmd=blpop", listing)
        redis.sendall(b"CLIENT UNBLOCK %s TIMEOUT\r\n" % client)
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += redis.recv(100)
        assert reply == b":1\r\n", reply


class RedisLateReplyTests(RealServerCase):
    """With ``line`` framing and no fence, a request that gave up holds its
    connection until the late reply came.  stale_reply_timeout is long here,
    so that only the late reply (released by the test) frees the connection."""

    bridge_args = ("--stale-reply-timeout", "60")
    WAITING = {
        "error": "upstream_unavailable",
        "message": "every upstream connection is waiting for the late replies of a request "
                   "that gave up; with reply_framing line and no fence they cannot be told "
                   "from new replies (the connection is closed if they do not come within "
                   "stale_reply_timeout, 60 s); nothing was sent",
    }

    @classmethod
    def make_server(cls) -> ServerProcess:
        return redis_process()

    async def test_a_request_that_gave_up_holds_the_connection_until_its_late_reply(
        self,
    ) -> None:
        """``BLPOP k 0`` waits until the test unblocks it: a request that
        gives up earlier (a timeout, then a client that hangs up) leaves the
        connection waiting for that reply, which frees it again."""
        prefix = self.prefix()
        before = await self.counters()
        self.answer(await self.post("/request?timeout=0.3", f"BLPOP {prefix}:none 0"), 504, {
            "error": "reply_timeout", "message": "the upstream sent 0 of 1 replies within 0.3 s",
            "replies": []})
        self.answer(await self.post("/request", "PING"), 503, self.WAITING)
        unblock_blpop(self.port)
        await self.counters_since(before, late_replies=1)
        await self.replies("PING", ["+PONG"])

        # The same with a client that hangs up while it waits.
        assert self.bridge is not None and self.bridge.port is not None
        body = f"BLPOP {prefix}:none 0".encode()
        with socket.create_connection((LOOPBACK, self.bridge.port)) as caller:
            # Hanging up is a reset: a plain close() sends a FIN, which the
            # bridge takes for a half-close and still answers (issue 10).
            caller.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            caller.sendall(b"POST /request HTTP/1.1\r\nHost: bridge\r\nContent-Length: %d\r\n"
                           b"\r\n%s" % (len(body), body))

            async def pending() -> bool:
                return bool((await self.status())["pending"] == 1)

            await wait_for(pending, what="the BLPOP to await its reply")

        async def given_up() -> bool:
            return bool((await self.status())["members"][0]["waiting_for_late_replies"])

        await wait_for(given_up, what="the bridge to see the caller hang up")
        self.answer(await self.post("/request", "PING"), 503, self.WAITING)
        unblock_blpop(self.port)
        await self.counters_since(before, late_replies=2)
        await self.replies("PING", ["+PONG"])
        after = await self.counters()
        self.assertEqual((after["connects"], after["desyncs"]),
                         (before["connects"], before["desyncs"]))



class MemcachedTests(RealServerCase):
    bridge_args = ("--reply-framing", "memcached", "--reply-timeout", "3")

    @classmethod
    def make_server(cls) -> ServerProcess:
        return memcached_process()

    async def stats(self) -> dict[str, str]:
        reply = await self.post("/request", "stats")
        self.assertEqual(reply.status, 200)
        (listing,) = reply.json()["replies"]
        return dict(line.split(" ", 2)[1:] for line in listing[:-1])

    async def test_storage_retrieval_and_arithmetic(self) -> None:
        k = self.prefix()
        await self.replies(f"set {k} 0 0 5\nhello", [["STORED"]])
        await self.replies(f"get {k}", [[f"VALUE {k} 0 5", "hello", "END"]])
        await self.replies(f"get {k} {k}-missing", [[f"VALUE {k} 0 5", "hello", "END"]])
        await self.replies(f"get {k}-missing", [["END"]])
        await self.replies(f"set {k}-n 0 0 1\n5\nincr {k}-n 1", [["STORED"], ["6"]])
        await self.replies(f"delete {k} noreply\nget {k}", [["END"]])
        await self.replies(f"set {k}-q 0 0 1 noreply\nx\nget {k}-q",
                           [[f"VALUE {k}-q 0 1", "x", "END"]])
        reply = await self.post("/request", f"get {k}-q\nincr {k}-n 2",
                                {"Accept": "text/plain"})
        self.assertEqual((reply.status, reply.body),
                         (200, f"VALUE {k}-q 0 1\r\nx\r\nEND\r\n8\r\n".encode()))

    async def test_concurrent_callers_get_their_own_values(self) -> None:
        k = self.prefix()

        async def caller(index: int) -> list[tuple[int, Any]]:
            http = self.client_for_test()
            seen = []
            for turn in range(10):
                value = f"{index}-{turn}"
                reply = await http.post(
                    "/request", f"set {k}-{index} 0 0 {len(value)}\n{value}\nget {k}-{index}")
                seen.append((reply.status, reply.json()))
            return seen

        results = await concurrently(caller(index) for index in range(6))
        for index, seen in enumerate(results):
            self.assertEqual(seen, [
                (200, {"replies": [["STORED"], [f"VALUE {k}-{index} 0 {len(value)}", value,
                                                "END"]]})
                for value in (f"{index}-{turn}" for turn in range(10))
            ])

    async def test_a_data_line_of_the_wrong_length_is_refused_and_nothing_is_sent(self) -> None:
        k = self.prefix()
        stats = await self.stats()
        before = await self.counters()
        self.answer(await self.post("/request", f"set {k} 0 0 5\nhello!\nget {k}"), 400, {
            "error": "invalid_command",
            "message": "line 1 announces 5 bytes of data but line 2 is 6 bytes: memcached "
                       "would read past it or stop short, and read the rest as commands"})
        self.answer(await self.post("/send", f"set {k} 0 0 7\nhello!"), 400, {
            "error": "invalid_command",
            "message": "line 1 announces 7 bytes of data but line 2 is 6 bytes: memcached "
                       "would read past it or stop short, and read the rest as commands"})
        self.assertEqual((await self.counters())["lines_sent"], before["lines_sent"])
        await self.replies(f"get {k}", [["END"]])
        after = await self.stats()
        self.assertEqual((after["cmd_set"], after["curr_items"]),
                         (stats["cmd_set"], stats["curr_items"]))

    async def test_stats_is_one_reply(self) -> None:
        reply = await self.post("/request", "stats\nversion")
        self.assertEqual(reply.status, 200, reply.body)
        listing, version = reply.json()["replies"]
        self.assertEqual(listing[-1], "END")
        self.assertGreater(len(listing), 10)
        self.assertTrue(all(re.fullmatch(r"STAT \S+ .*", line) for line in listing[:-1]),
                        listing)
        self.assertEqual(listing[1].split(" ")[1], "uptime")
        self.assertEqual(len(version), 1)
        self.assertRegex(version[0], r"^VERSION \d+\.\d+")

    async def test_an_error_reply_gives_502_with_every_reply(self) -> None:
        k = self.prefix()
        self.answer(await self.post("/request", f"set {k} 0 0 1\nx\nbogus\nincr {k} 1"), 502, {
            "error": "upstream_error", "message": UPSTREAM_ERROR,
            "replies": [["STORED"], ["ERROR"],
                        ["CLIENT_ERROR cannot increment or decrement non-numeric value"]]})
        await self.replies(f"get {k}", [[f"VALUE {k} 0 1", "x", "END"]])


# -- SMTP (aiosmtpd) ---------------------------------------------------------------------


class SmtpTests(RealServerCase):
    bridge_args = ("--reply-framing", "status", "--greeting-expect", "^220",
                   "--handshake", "EHLO bridge.test", "--handshake-expect", "^250",
                   "--delimiter", "crlf", "--reply-timeout", "3")

    @classmethod
    def make_server(cls) -> ServerProcess:
        return smtp_process()

    async def test_ehlo_is_one_multi_line_reply(self) -> None:
        direct = status_lines(raw_exchange(self.port, b"EHLO test\r\nQUIT\r\n"))
        expected = direct[1:-1]  # without the greeting and the 221
        self.assertEqual(expected[0], f"250-{socket.getfqdn()}")
        self.assertGreater(len(expected), 1)
        await self.replies("EHLO test", [expected])
        await self.replies("NOOP\nEHLO test", [["250 OK"], expected])

    async def test_a_whole_transaction_in_one_request(self) -> None:
        body = ("MAIL FROM:<a@example.com>\nRCPT TO:<b@example.com>\nDATA\nSubject: hello\n\n"
                "first line\n..a line with a leading dot\n.\n")
        await self.replies(body, [["250 OK"], ["250 OK"],
                                  ["354 End data with <CR><LF>.<CR><LF>"], ["250 OK"]])
        await self.replies("NOOP", [["250 OK"]])

    async def test_a_5xx_reply_gives_502(self) -> None:
        self.answer(await self.post("/request", "NOOP\nBOGUS"), 502, {
            "error": "upstream_error", "message": UPSTREAM_ERROR,
            "replies": [["250 OK"], ['500 Error: command "BOGUS" not recognized']]})
        self.answer(await self.post("/request", "DATA"), 400, {
            "error": "invalid_command",
            "message": "line 1 is DATA but no later line is exactly '.': the server would wait "
                       "for the end of the message and read the next request as its text"})
        await self.replies("NOOP", [["250 OK"]])

    async def test_after_quit_the_bridge_reconnects_greeting_and_handshake_first(self) -> None:
        before = await self.counters()
        await self.replies("NOOP\nQUIT", [["250 OK"], ["221 Bye"]])

        async def reconnected() -> bool:
            status = await self.status()
            return bool(status["ready"]) and \
                status["counters"]["connects"] == before["connects"] + 1

        await wait_for(reconnected, timeout=10, what="a new connection, greeted and handshaken")
        await self.replies("MAIL FROM:<a@example.com>\nRSET", [["250 OK"], ["250 OK"]])
        await self.counters_since(before)

    async def test_an_error_reply_to_a_send_line_is_published(self) -> None:
        events = await self.event_client()
        before = await self.counters()
        self.answer(await self.post("/send", "NOOP\nBOGUS\nNOOP"), 202, {"sent": 3})
        (event,) = await self.events(events, "send_error", 1)
        self.assertEqual(json.loads(event.data), {
            "line": 2, "reply": ['500 Error: command "BOGUS" not recognized']})
        await self.counters_since(before, send_errors=1, discarded_replies=3)

    async def test_a_refused_data_closes_the_connection_and_the_bridge_reconnects(self) -> None:
        before = await self.counters()
        # No MAIL FROM: DATA is refused and aiosmtpd would read the message
        # lines as commands; the bridge answers with what came and reconnects.
        self.answer(await self.post("/request", "RSET\nDATA\nSubject: x\n."), 502, {
            "error": "upstream_error", "message": UPSTREAM_ERROR,
            "replies": [["250 OK"], ["503 Error: need RCPT command"]]})
        await self.counters_since(before, desyncs=1)
        await self.wait_status(200, timeout=10)
        await self.replies("NOOP", [["250 OK"]])


# -- FTP (pyftpdlib) -------------------------------------------------------------------------


class FtpTests(RealServerCase):
    bridge_args = ("--reply-framing", "status", "--greeting-expect", "^220",
                   "--handshake", f"USER {FTP_USER}", "--handshake", f"PASS {FTP_PASSWORD}",
                   "--handshake-expect", "^(331|230)", "--reply-timeout", "3")

    @classmethod
    def make_server(cls) -> ServerProcess:
        return ftp_process()

    async def test_commands_and_a_multi_line_reply(self) -> None:
        direct = status_lines(raw_exchange(self.port, b"FEAT\r\nQUIT\r\n"))
        feat = direct[1:-1]  # without the greeting and the 221
        self.assertEqual((feat[0], feat[-1]), ("211-Features supported:", "211 End FEAT."))
        self.assertIn(" SIZE", feat)
        await self.replies("PWD", [['257 "/" is the current directory.']])
        await self.replies("SYST", [["215 UNIX Type: L8"]])
        await self.replies("FEAT", [feat])
        await self.replies("PWD\nFEAT\nSYST\nNOOP", [
            ['257 "/" is the current directory.'], feat, ["215 UNIX Type: L8"],
            ["200 I successfully did nothing'."]])

    async def test_an_unknown_command_gives_502(self) -> None:
        self.answer(await self.post("/request", "NOOP\nXYZ"), 502, {
            "error": "upstream_error", "message": UPSTREAM_ERROR,
            "replies": [["200 I successfully did nothing'."],
                        ['500 Command "XYZ" not understood.']]})
        await self.replies("PWD", [['257 "/" is the current directory.']])


# -- a terminator protocol, with and without a fence -------------------------------------------


def business(line: bytes) -> list[str] | None:
    """A home-grown protocol: ``LIST n`` answers n item lines and ``OK``,
    ``GET k`` a value and ``OK``, ``NOTE x`` nothing, ``ECHO x`` ``OK x``,
    anything else ``ERR unknown``."""
    word, _, argument = line.decode().partition(" ")
    if word == "LIST":
        return [*(f"item {i} of {argument}" for i in range(int(argument))), "OK"]
    if word == "GET":
        return [f"value of {argument}", "OK"]
    if word == "NOTE":
        return None
    if word == "ECHO":
        return [f"OK {argument}"]
    return [f"ERR unknown {word}"]


def items(count: int) -> list[str]:
    return [*(f"item {i} of {count}" for i in range(count)), "OK"]


class TerminatorTests(EndToEndCase):
    bridge_args = ("--reply-framing", "terminator", "--reply-terminator", "^(OK|ERR)( .*)?$",
                   "--reply-error-pattern", "^ERR", "--reply-timeout", "3")

    async def test_replies_are_grouped_per_command(self) -> None:
        server = await self.start_upstream(business)
        await self.replies("LIST 2\nLIST 0\nGET x", [items(2), items(0), ["value of x", "OK"]])
        self.assertEqual(server.received, b"LIST 2\r\nLIST 0\r\nGET x\r\n")

    async def test_concurrent_callers_each_get_their_own_lines(self) -> None:
        server = await self.start_upstream(business)

        async def caller(index: int) -> list[tuple[int, Any]]:
            http = self.client_for_test()
            seen = []
            for turn in range(10):
                reply = await http.post("/request", f"LIST {(index + turn) % 4}\nGET {index}")
                seen.append((reply.status, reply.json()))
            return seen

        results = await concurrently(caller(index) for index in range(6))
        for index, seen in enumerate(results):
            self.assertEqual(seen, [
                (200, {"replies": [items((index + turn) % 4), [f"value of {index}", "OK"]]})
                for turn in range(10)])
        self.assertEqual(len(server.lines), 120)

    async def test_an_error_reply_gives_502_and_unsolicited_lines_are_events(self) -> None:
        server = await self.start_upstream(business)
        self.answer(await self.post("/request", "GET a\nBOGUS"), 502, {
            "error": "upstream_error", "message": PATTERN_ERROR,
            "replies": [["value of a", "OK"], ["ERR unknown BOGUS"]]})
        events = await self.event_client()
        self.assertEqual(server.push("NOTICE one", "NOTICE two"), 1)
        received = await self.events(events, "unsolicited", 2)
        self.assertEqual([event.data for event in received], ["NOTICE one", "NOTICE two"])
        await self.replies("GET b", [["value of b", "OK"]])


class TerminatorFenceTests(EndToEndCase):
    """A fence on a terminator protocol: ``ECHO <nonce>`` is answered
    ``OK <nonce>``; commands that answer nothing or many lines cannot shift
    anybody's replies."""

    bridge_args = ("--reply-framing", "terminator", "--reply-terminator", "^(OK|ERR)( .*)?$",
                   "--fence-line", "ECHO {nonce}", "--fence-expect", "^OK {nonce}$",
                   "--reply-timeout", "3")

    async def test_each_request_gets_exactly_its_own_replies(self) -> None:
        server = await self.start_upstream(business)
        await self.replies("LIST 3\nNOTE hi\nLIST 0", [items(3), items(0)])
        await self.replies("NOTE only", [])

        async def caller(index: int) -> list[tuple[int, Any]]:
            http = self.client_for_test()
            seen = []
            for turn in range(8):
                body = f"NOTE {index}\nLIST {(index + turn) % 4}" if turn % 2 else f"GET {index}"
                reply = await http.post("/request", body)
                seen.append((reply.status, reply.json()))
            return seen

        results = await concurrently(caller(index) for index in range(5))
        for index, seen in enumerate(results):
            self.assertEqual(seen, [
                (200, {"replies": [items((index + turn) % 4) if turn % 2
                                   else [f"value of {index}", "OK"]]})
                for turn in range(8)])

        lines = server.lines
        fences = [line for line in lines if line.startswith(b"ECHO ")]
        self.assertEqual(len(fences), 2 + 5 * 8)
        self.assertTrue(all(re.fullmatch(rb"ECHO fence-[0-9a-f]{16}", line) for line in fences))
        self.assertEqual(len(set(fences)), len(fences))
        self.assertEqual(lines[:6], [b"LIST 3", b"NOTE hi", b"LIST 0", fences[0], b"NOTE only",
                                     fences[1]])
        self.assertEqual((await self.counters())["desyncs"], 0)


class LineFenceTests(EndToEndCase):
    """A fence on the ``line`` framing: ``ECHO <nonce>`` is answered with the
    nonce.  The replies of a request are the lines before its fence reply,
    however many each command answers, late ones included."""

    bridge_args = ("--fence-line", "ECHO {nonce}", "--fence-expect", "^{nonce}$",
                   "--reply-timeout", "3")

    @staticmethod
    def answer_line(line: bytes) -> Any:
        word, _, argument = line.decode().partition(" ")
        if word == "LIST":
            return [f"item {i}" for i in range(int(argument))]
        if word == "ECHO":
            return argument
        if word == "NOTE":
            return None
        if word == "SLOW":  # answered late: later lines wait their turn
            return deferLater(reactor, 0.6, lambda: f"slow {argument}")
        return f"value of {argument}"

    async def test_commands_answering_zero_or_three_lines(self) -> None:
        server = await self.start_upstream(self.answer_line)
        await self.replies("LIST 3\nNOTE a\nLIST 0\nGET k",
                           ["item 0", "item 1", "item 2", "value of k"])
        await self.replies("NOTE b", [])
        await self.replies("GET j", ["value of j"])
        received = server.received
        nonces = NONCE.findall(received)
        self.assertEqual(received, b"LIST 3\r\nNOTE a\r\nLIST 0\r\nGET k\r\nECHO %s\r\n"
                                   b"NOTE b\r\nECHO %s\r\nGET j\r\nECHO %s\r\n" % tuple(nonces))
        self.assertEqual(len(set(nonces)), 3)

    async def test_late_replies_never_reach_the_next_request(self) -> None:
        await self.start_upstream(self.answer_line)
        before = await self.counters()
        self.answer(await self.post("/request?timeout=0.2", "SLOW a\nLIST 2"), 504, {
            "error": "reply_timeout", "message": "the upstream sent 0 replies within 0.2 s",
            "replies": []})
        # Sent at once (no waiting for the late replies): the fence tells them apart.
        await self.replies("LIST 1\nGET b", ["item 0", "value of b"])
        await self.counters_since(before, late_replies=3)

"""The pool: member selection, limits, readiness and discarded /send replies."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bridge.config import Config
from bridge.errors import BusyError, NotConnectedError, ReplyTimeoutError, UpstreamLostError
from bridge.upstream.lines import Lines
from bridge.upstream.pool import UpstreamPool
from tests.fakes_upstream import (
    CONNECT,
    REFUSE,
    FakeConnection,
    FakeEndpoint,
    LineLog,
    make_pool,
    texts,
)

BASE = Config().with_values(backoff_initial=1.0, backoff_factor=2.0, backoff_max=8.0)


def line(text: str) -> Lines:
    return Lines(1, text.encode("ascii") + b"\r\n")


class PoolTestCase(SynchronousTestCase):
    def start(
        self, config: Config, endpoint: FakeEndpoint | None = None
    ) -> tuple[UpstreamPool, FakeEndpoint, Clock, LineLog]:
        endpoint = endpoint if endpoint is not None else FakeEndpoint()
        pool, clock, log = make_pool(config, endpoint)
        pool.startService()
        self.addCleanup(self.stop, pool, clock)
        return pool, endpoint, clock, log

    def stop(self, pool: UpstreamPool, clock: Clock) -> None:
        self.successResultOf(pool.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])

    def connection_of(
        self, pool: UpstreamPool, endpoint: FakeEndpoint
    ) -> list[FakeConnection | None]:
        """The fake connection of each member, by member index (None if not connected)."""
        by_transport = {id(c.transport): c for c in endpoint.connections}
        result = []
        for member in pool.members:
            protocol = member.protocol
            result.append(by_transport[id(protocol.transport)] if protocol else None)
        return result

    def written(self, connections: list[FakeConnection | None]) -> list[bytes]:
        return [c.take() if c is not None else b"" for c in connections]


class SelectionTests(PoolTestCase):
    def test_ties_go_round_robin(self) -> None:
        pool, endpoint, _, _ = self.start(BASE.with_values(pool_size=3))
        connections = self.connection_of(pool, endpoint)
        for text in ("a", "b", "c", "d", "e"):
            pool.send(line(text))
        self.assertEqual(
            [c.transport.writes for c in connections],
            [[b"a\r\n", b"d\r\n"], [b"b\r\n", b"e\r\n"], [b"c\r\n"]],
        )

    def test_fewest_pending_wins(self) -> None:
        pool, endpoint, _, _ = self.start(BASE.with_values(pool_size=3))
        c0, c1, c2 = self.connection_of(pool, endpoint)
        r0 = pool.request(line("r0"), 5.0)
        r1 = pool.request(line("r1"), 5.0)
        r2 = pool.request(line("r2"), 5.0)
        self.assertEqual(self.written([c0, c1, c2]), [b"r0\r\n", b"r1\r\n", b"r2\r\n"])
        c1.feed(b"one\r\n")
        self.assertEqual(texts(self.successResultOf(r1)), [b"one"])
        self.assertEqual(pool.pending(), 2)

        r3 = pool.request(line("r3"), 5.0)  # only member 1 has nothing pending
        self.assertEqual(self.written([c0, c1, c2]), [b"", b"r3\r\n", b""])
        r4 = pool.request(line("r4"), 5.0)  # all tied at 1: round robin after member 1
        self.assertEqual(self.written([c0, c1, c2]), [b"", b"", b"r4\r\n"])
        c0.feed(b"zero\r\n")
        c1.feed(b"three\r\n")
        c2.feed(b"two\r\nfour\r\n")
        self.assertEqual(
            [texts(self.successResultOf(d)) for d in (r0, r2, r3, r4)],
            [[b"zero"], [b"two"], [b"three"], [b"four"]],
        )
        self.assertEqual(pool.pending(), 0)

    def test_disconnected_members_are_skipped(self) -> None:
        endpoint = FakeEndpoint(CONNECT, REFUSE, CONNECT)
        pool, endpoint, _, _ = self.start(BASE.with_values(pool_size=3), endpoint)
        c0, c1, c2 = self.connection_of(pool, endpoint)
        self.assertIsNone(c1)
        for text in ("a", "b", "c"):
            pool.send(line(text))
        self.assertEqual([c0.transport.writes, c2.transport.writes], [
            [b"a\r\n", b"c\r\n"], [b"b\r\n"],
        ])

    def test_all_lines_of_one_request_go_out_in_one_write_on_one_member(self) -> None:
        pool, endpoint, _, _ = self.start(BASE.with_values(pool_size=3))
        payload = b"MULTI\r\nSET a 1\r\nSET b 2\r\nEXEC\r\n"
        reply = pool.request(Lines(4, payload), 5.0)
        pool.send(Lines(2, b"x\r\ny\r\n"))
        writes = [c.transport.writes for c in endpoint.connections]
        self.assertEqual(writes, [[payload], [b"x\r\ny\r\n"], []])
        endpoint.connections[0].feed(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n")
        self.assertEqual(
            texts(self.successResultOf(reply)), [b"+OK", b"+QUEUED", b"+QUEUED", b"*2"]
        )


class LimitTests(SynchronousTestCase):
    def test_max_pending_gives_busy_too_many_pending(self) -> None:
        endpoint = FakeEndpoint()
        pool, clock, _ = make_pool(BASE.with_values(max_pending=2), endpoint)
        pool.startService()
        first = pool.request(line("1"), 5.0)
        second = pool.request(line("2"), 5.0)
        error = self.assertRaises(BusyError, pool.request, line("3"), 5.0)
        self.assertEqual(error.status, 429)
        self.assertEqual(error.code, "too_many_pending")
        self.assertEqual(
            error.message,
            "2 requests already await replies on the chosen connection "
            "(max_pending is 2); retry later",
        )
        self.assertEqual(error.retry_after(), 1)
        self.assertEqual(endpoint.last.written(), b"1\r\n2\r\n")  # nothing of the third

        endpoint.last.feed(b"one\r\n")
        self.assertEqual(texts(self.successResultOf(first)), [b"one"])
        third = pool.request(line("3"), 5.0)
        endpoint.last.feed(b"two\r\nthree\r\n")
        self.assertEqual(texts(self.successResultOf(second)), [b"two"])
        self.assertEqual(texts(self.successResultOf(third)), [b"three"])
        self.successResultOf(pool.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_max_pending_counts_per_connection(self) -> None:
        endpoint = FakeEndpoint()
        pool, clock, _ = make_pool(BASE.with_values(pool_size=2, max_pending=1), endpoint)
        pool.startService()
        first = pool.request(line("1"), 5.0)
        second = pool.request(line("2"), 5.0)
        self.assertRaises(BusyError, pool.request, line("3"), 5.0)
        self.assertEqual([c.written() for c in endpoint.connections], [b"1\r\n", b"2\r\n"])
        self.successResultOf(pool.stopService())
        self.failureResultOf(first, UpstreamLostError)
        self.failureResultOf(second, UpstreamLostError)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_connection_waiting_for_late_line_replies_takes_no_request(self) -> None:
        endpoint = FakeEndpoint()
        pool, clock, _ = make_pool(BASE, endpoint)
        pool.startService()
        first = pool.request(line("1"), 1.0)
        clock.advance(1.0)
        self.failureResultOf(first, ReplyTimeoutError)
        error = self.assertRaises(NotConnectedError, pool.request, line("2"), 5.0)
        self.assertEqual(error.status, 503)
        self.assertIn("waiting for the late replies", error.message)
        self.assertEqual(endpoint.last.take(), b"1\r\n")  # nothing of the second was sent
        endpoint.last.feed(b"late\r\n")
        second = pool.request(line("2"), 5.0)
        endpoint.last.feed(b"two\r\n")
        self.assertEqual(texts(self.successResultOf(second)), [b"two"])
        self.successResultOf(pool.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_timed_out_requests_still_count_as_pending(self) -> None:
        endpoint = FakeEndpoint()
        config = BASE.with_values(max_pending=1, fence_line="PING {nonce}",
                                  fence_expect="^PONG {nonce}$")
        pool, clock, _ = make_pool(config, endpoint)
        pool.startService()
        first = pool.request(line("1"), 1.0)
        clock.advance(1.0)
        self.failureResultOf(first, ReplyTimeoutError)
        self.assertRaises(BusyError, pool.request, line("2"), 5.0)  # its slot still waits
        endpoint.last.feed(b"late\r\nPONG n1\r\n")
        second = pool.request(line("2"), 5.0)
        endpoint.last.feed(b"two\r\nPONG n2\r\n")
        self.assertEqual(texts(self.successResultOf(second)), [b"two"])
        self.assertEqual(endpoint.last.written(), b"1\r\nPING n1\r\n2\r\nPING n2\r\n")
        self.successResultOf(pool.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])


class AvailabilityTests(PoolTestCase):
    def test_not_connected_when_no_member_is(self) -> None:
        config = BASE.with_values(pool_size=2, backoff_initial=2.0)
        pool, endpoint, clock, _ = self.start(config, FakeEndpoint(default=REFUSE))
        for call in (lambda: pool.send(line("a")), lambda: pool.request(line("a"), 5.0)):
            error = self.assertRaises(NotConnectedError, call)
            self.assertEqual(error.status, 503)
            self.assertEqual(
                error.message, "the upstream localhost:65432 is not connected (connection "
                "refused by localhost:65432; next attempt in 2.0 s); nothing was sent"
            )
            self.assertEqual(error.retry_in, 2.0)
            self.assertEqual(error.retry_after(), 2)
        clock.advance(1.5)
        self.assertEqual(self.assertRaises(NotConnectedError, pool.pick).retry_after(), 1)
        self.assertEqual(pool.retry_in(), 0.5)
        self.assertEqual(pool.state(), "waiting")
        self.assertEqual(endpoint.connections, [])

    def test_ready_needs_min_ready_members(self) -> None:
        config = BASE.with_values(pool_size=3, min_ready=2)
        endpoint = FakeEndpoint(CONNECT, REFUSE, REFUSE)
        pool, endpoint, clock, _ = self.start(config, endpoint)
        self.assertEqual(pool.connected_count(), 1)
        self.assertFalse(pool.ready())
        self.assertEqual(pool.state(), "waiting")
        clock.advance(1.0)
        self.assertEqual(pool.connected_count(), 3)
        self.assertTrue(pool.ready())
        self.assertEqual(pool.state(), "connected")

        endpoint.default = REFUSE
        endpoint.connections[1].peer_closes()
        self.assertTrue(pool.ready())
        endpoint.connections[2].peer_closes()
        self.assertEqual(pool.connected_count(), 1)
        self.assertFalse(pool.ready())
        pool.send(line("still works"))
        self.assertEqual(endpoint.connections[0].written(), b"still works\r\n")

    def test_totals_add_up_member_counters(self) -> None:
        pool, endpoint, _, _ = self.start(BASE.with_values(pool_size=2))
        pool.send(Lines(2, b"a\r\nb\r\n"))
        pool.send(line("c"))
        endpoint.connections[1].feed(b"hello\r\n")
        totals = pool.totals()
        self.assertEqual(totals.lines_sent, 3)
        self.assertEqual(totals.bytes_sent, 9)
        self.assertEqual(totals.connects, 2)
        self.assertEqual(totals.unsolicited, 1)


class DiscardSendRepliesTests(PoolTestCase):
    def test_send_replies_never_reach_a_request_caller(self) -> None:
        config = BASE.with_values(discard_send_replies=True)
        pool, endpoint, _, log = self.start(config)
        pool.send(Lines(2, b"SET a 1\r\nSET b 2\r\n"))
        reply = pool.request(line("GET a"), 5.0)
        self.assertEqual(pool.pending(), 2)
        self.assertEqual(endpoint.last.written(), b"SET a 1\r\nSET b 2\r\nGET a\r\n")
        endpoint.last.feed(b"+OK\r\n+OK\r\n")
        self.assertNoResult(reply)
        endpoint.last.feed(b"1\r\n")
        self.assertEqual(texts(self.successResultOf(reply)), [b"1"])
        self.assertEqual(log.events, [])  # discarded, not published as late replies
        self.assertEqual((pool.totals().discarded_replies, pool.totals().late_replies), (2, 0))
        self.assertEqual(pool.pending(), 0)

    def test_without_discard_a_send_reserves_nothing(self) -> None:
        pool, endpoint, _, log = self.start(BASE)
        pool.send(line("SET a 1"))
        self.assertEqual(pool.pending(), 0)
        endpoint.last.feed(b"+OK\r\n")
        self.assertEqual(log.events, [("unsolicited", "0", b"+OK")])

    def test_discarded_send_replies_count_towards_max_pending(self) -> None:
        config = BASE.with_values(discard_send_replies=True, max_pending=2)
        pool, endpoint, _, _ = self.start(config)
        pool.send(line("a"))
        pool.send(line("b"))
        error = self.assertRaises(BusyError, pool.send, line("c"))
        self.assertEqual(error.code, "too_many_pending")
        self.assertEqual(endpoint.last.written(), b"a\r\nb\r\n")

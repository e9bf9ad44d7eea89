"""One pool member: ClientService reconnects, backoff, connect timeout and the
synchronous "not connected" answer."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bridge.config import Config
from bridge.errors import NotConnectedError, UpstreamLostError
from bridge.upstream.pool import UpstreamPool
from tests.fakes_upstream import (
    HANG,
    REFUSE,
    REFUSED_MESSAGE,
    FakeEndpoint,
    make_member,
    make_pool,
    send_request,
    serving,
)

CONNECTED, CONNECTING, STOPPED, WAITING = "connected", "connecting", "stopped", "waiting"

CONFIG = Config().with_values(backoff_initial=1.0, backoff_factor=2.0, backoff_max=8.0)


class BackoffTests(SynchronousTestCase):
    def test_failed_attempts_wait_1_2_4_8_then_stay_at_backoff_max(self) -> None:
        member, endpoint, clock, _ = make_member(CONFIG, FakeEndpoint(default=REFUSE))
        member.start()
        seen = []
        for _ in range(6):
            self.assertEqual(member.state, WAITING)
            self.assertEqual(member.last_error, REFUSED_MESSAGE)
            delay = member.current_delay
            assert delay is not None
            self.assertEqual(member.retry_in(), delay)
            clock.advance(delay / 4)
            self.assertEqual(member.retry_in(), delay * 3 / 4)
            seen.append(delay)
            clock.advance(delay * 3 / 4)
        self.assertEqual(seen, [1.0, 2.0, 4.0, 8.0, 8.0, 8.0])
        self.assertEqual(endpoint.attempts, 7)
        self.assertEqual(member.counters.attempts, 7)
        self.assertEqual(member.attempts_since_success, 7)
        self.assertEqual(member.status()["retry_delay"], 8.0)
        self.successResultOf(member.stop())
        self.assertEqual(member.state, STOPPED)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_delay_starts_over_after_a_connection_is_lost(self) -> None:
        endpoint = FakeEndpoint(REFUSE, REFUSE, REFUSE)
        member, endpoint, clock, _ = make_member(CONFIG, endpoint)
        member.start()
        clock.advance(1.0)
        clock.advance(2.0)
        self.assertEqual(member.current_delay, 4.0)
        clock.advance(4.0)

        self.assertEqual(member.state, CONNECTED)
        self.assertIsNone(member.current_delay)
        self.assertIsNone(member.retry_in())
        self.assertEqual(member.attempts_since_success, 0)
        self.assertEqual(member.counters.connects, 1)
        self.assertEqual(member.connected_since, 7.0)

        clock.advance(100.0)
        endpoint.last.peer_closes()
        # A connection that was up a while: the first retry is at once
        # (jitter aside), the backoff starts over from the next failure.
        self.assertEqual(member.state, WAITING)
        self.assertIsNone(member.protocol)
        self.assertEqual(member.current_delay, 0.0)
        self.assertEqual(member.retry_in(), 0.0)
        self.assertEqual(member.last_error, "localhost:65432 closed the connection")
        self.assertEqual(member.counters.disconnects, 1)

        endpoint.default = REFUSE
        clock.advance(0.0)
        self.assertEqual(member.current_delay, 1.0)
        clock.advance(1.0)
        self.assertEqual(member.current_delay, 2.0)
        self.successResultOf(member.stop())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_client_service_reconnects_after_the_delay(self) -> None:
        member, endpoint, clock, _ = make_member(CONFIG)
        member.start()
        first = endpoint.last
        first.peer_closes()
        clock.advance(0.9)
        self.assertEqual(len(endpoint.connections), 1)
        self.assertEqual(member.state, WAITING)
        clock.advance(0.1)
        self.assertEqual(len(endpoint.connections), 2)
        self.assertEqual(member.state, CONNECTED)
        serving(member).write_lines(b"HELLO\r\n", 1)
        self.assertEqual(endpoint.last.written(), b"HELLO\r\n")
        self.assertEqual(first.written(), b"")
        self.assertEqual(member.counters.connects, 2)
        self.successResultOf(member.stop())
        self.assertEqual(clock.getDelayedCalls(), [])


class ConnectTimeoutTests(SynchronousTestCase):
    def test_an_attempt_that_never_completes_fails_after_connect_timeout(self) -> None:
        member, endpoint, clock, _ = make_member(CONFIG, FakeEndpoint(default=HANG))
        member.start()
        clock.advance(4.0)
        self.assertEqual(member.state, CONNECTING)
        self.assertEqual(member.retry_in(), 0.0)
        self.assertIsNone(member.last_error)

        clock.advance(1.0)
        self.assertEqual(member.state, WAITING)
        self.assertEqual(member.last_error, "connecting to localhost:65432 timed out after 5 s")
        self.assertEqual(member.current_delay, 1.0)
        self.assertEqual(member.retry_in(), 1.0)

        clock.advance(1.0)
        self.assertEqual(endpoint.attempts, 2)
        self.assertEqual(member.state, CONNECTING)
        clock.advance(5.0)
        self.assertEqual(member.current_delay, 2.0)
        self.successResultOf(member.stop())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_connect_timeout_is_configurable(self) -> None:
        config = CONFIG.with_values(connect_timeout=0.5)
        member, _, clock, _ = make_member(config, FakeEndpoint(default=HANG))
        member.start()
        clock.advance(0.5)
        self.assertEqual(member.last_error, "connecting to localhost:65432 timed out after 0.5 s")
        self.successResultOf(member.stop())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopping_during_an_attempt_cancels_it(self) -> None:
        member, endpoint, clock, _ = make_member(CONFIG, FakeEndpoint(default=HANG))
        member.start()
        clock.advance(2.0)
        self.successResultOf(member.stop())
        self.assertEqual(member.state, STOPPED)
        self.assertTrue(endpoint.hanging[0].called)
        self.assertEqual(clock.getDelayedCalls(), [])


class NotConnectedTests(SynchronousTestCase):
    """The member's side of the synchronous 503 (a pool of one asks it)."""

    def pool(self, config: Config, endpoint: FakeEndpoint) -> tuple[UpstreamPool, Clock]:
        pool, clock, _ = make_pool(config, endpoint)
        return pool, clock

    def test_send_raises_at_once_while_waiting(self) -> None:
        config = CONFIG.with_values(backoff_initial=2.5)
        pool, clock = self.pool(config, FakeEndpoint(default=REFUSE))
        pool.startService()
        error = self.assertRaises(NotConnectedError, pool.pick)
        self.assertEqual(error.status, 503)
        self.assertEqual(error.code, "upstream_unavailable")
        self.assertEqual(
            error.message, "the upstream localhost:65432 is not connected "
            f"({REFUSED_MESSAGE}; next attempt in 2.5 s); nothing was sent"
        )
        self.assertEqual(error.retry_in, 2.5)
        self.assertEqual(error.retry_after(), 3)
        clock.advance(2.2)
        self.assertEqual(self.assertRaises(NotConnectedError, pool.pick).retry_after(), 1)
        self.successResultOf(pool.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_not_connected_while_connecting_says_retry_after_1(self) -> None:
        pool, clock = self.pool(CONFIG, FakeEndpoint(default=HANG))
        pool.startService()
        error = self.assertRaises(NotConnectedError, pool.pick)
        self.assertEqual(
            error.message,
            "the upstream localhost:65432 is not connected (connecting now); nothing was sent"
        )
        self.assertEqual(error.retry_in, 0.0)
        self.assertEqual(error.retry_after(), 1)
        self.successResultOf(pool.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_not_connected_before_start_and_after_stop(self) -> None:
        pool, clock = self.pool(CONFIG, FakeEndpoint())
        error = self.assertRaises(NotConnectedError, pool.pick)
        self.assertIsNone(error.retry_in)
        self.assertEqual(error.retry_after(), 1)
        pool.startService()
        self.successResultOf(pool.stopService())
        error = self.assertRaises(NotConnectedError, pool.pick)
        self.assertEqual(error.message, "the upstream localhost:65432 is not connected "
                         "(stopped); nothing was sent")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_nothing_is_buffered_while_disconnected(self) -> None:
        member, endpoint, clock, _ = make_member(CONFIG, FakeEndpoint(REFUSE))
        member.start()
        self.assertIsNone(member.protocol)
        clock.advance(1.0)
        self.assertEqual(member.state, CONNECTED)
        connection = endpoint.last
        self.assertEqual(connection.written(), b"")
        serving(member).write_lines(b"A\r\nB\r\n", 2)
        self.assertEqual(connection.transport.writes, [b"A\r\nB\r\n"])
        self.assertEqual(member.counters.lines_sent, 2)
        self.assertEqual(member.counters.bytes_sent, 6)
        self.successResultOf(member.stop())
        self.assertEqual(clock.getDelayedCalls(), [])


class LifecycleTests(SynchronousTestCase):
    def test_stop_closes_the_connection_and_fails_pending_requests(self) -> None:
        member, endpoint, clock, _ = make_member(CONFIG)
        member.start()
        reply = send_request(serving(member), b"GET\r\n", 1, 5.0)
        stopped = member.stop()
        self.successResultOf(stopped)
        self.assertFalse(endpoint.last.open)
        self.failureResultOf(reply, UpstreamLostError)
        self.assertEqual(member.state, STOPPED)
        self.assertIsNone(member.protocol)
        clock.advance(60.0)
        self.assertEqual(endpoint.attempts, 1)  # no reconnect once stopped
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_status_while_connected(self) -> None:
        member, _, clock, _ = make_member(CONFIG)
        clock.advance(10.0)
        member.start()
        clock.advance(2.5)
        send_request(serving(member), b"GET\r\n", 1, 5.0).addErrback(lambda failure: None)
        self.assertEqual(
            member.status(),
            {
                "name": "0",
                "state": "connected",
                "address": "localhost:65432",
                "connected_since": 10.0,
                "connected_for": 2.5,
                "attempts_since_success": 0,
                "retry_delay": None,
                "retry_in": None,
                "last_error": None,
                "pending": 1,
                "waiting_for_late_replies": False,
            },
        )
        self.successResultOf(member.stop())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_unsolicited_lines_reach_the_listener_with_the_member_name(self) -> None:
        member, endpoint, clock, log = make_member(CONFIG)
        member.start()
        endpoint.last.feed(b"news\r\n")
        self.assertEqual(log.events, [("unsolicited", "0", b"news")])
        self.assertEqual(member.counters.unsolicited, 1)
        self.successResultOf(member.stop())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_startup_max_attempts_gives_up(self) -> None:
        config = CONFIG.with_values(startup_max_attempts=2)
        reasons: list[str] = []
        member, _, clock, _ = make_member(config, FakeEndpoint(default=REFUSE),
                                          on_give_up=reasons.append)
        member.start()
        self.assertEqual(reasons, [])
        clock.advance(1.0)
        self.assertEqual(
            reasons,
            [
                "could not connect to localhost:65432 after 2 attempts "
                f"(startup_max_attempts); last error: {REFUSED_MESSAGE}"
            ],
        )
        self.successResultOf(member.stop())
        self.assertEqual(clock.getDelayedCalls(), [])

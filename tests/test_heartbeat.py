"""Heartbeats find half-open connections: idle -> line written; silence -> reconnect."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bridge.config import Config
from bridge.errors import UpstreamLostError
from bridge.upstream.member import UpstreamMember
from tests.fakes_upstream import FakeEndpoint, LineLog, make_member, send_request, serving

CONNECTED, STOPPED, WAITING = "connected", "stopped", "waiting"

CONFIG = Config().with_values(
    heartbeat_interval=10.0,
    heartbeat_timeout=3.0,
    heartbeat_expect="^\\+PONG",
    backoff_initial=1.0,
    backoff_factor=2.0,
    backoff_max=8.0,
)


class HeartbeatTestCase(SynchronousTestCase):
    def start(
        self, config: Config = CONFIG
    ) -> tuple[UpstreamMember, FakeEndpoint, Clock, LineLog]:
        member, endpoint, clock, log = make_member(config)
        member.start()
        self.assertEqual(member.state, CONNECTED)
        return member, endpoint, clock, log

    def finish(self, member: UpstreamMember, clock: Clock) -> None:
        self.successResultOf(member.stop())
        self.assertEqual(member.state, STOPPED)
        self.assertEqual(clock.getDelayedCalls(), [])


class IdleTests(HeartbeatTestCase):
    def test_heartbeat_is_written_after_the_idle_interval(self) -> None:
        member, endpoint, clock, log = self.start()
        connection = endpoint.last
        clock.advance(9.9)
        self.assertEqual(connection.written(), b"")
        clock.advance(0.1)
        self.assertEqual(connection.take(), b"PING\r\n")

        connection.feed(b"+PONG\r\n")
        self.assertEqual(log.events, [])  # the heartbeat reply is not an event
        self.assertEqual(member.counters.heartbeat_failures, 0)
        clock.advance(9.9)
        self.assertEqual(connection.written(), b"")
        clock.advance(0.1)
        self.assertEqual(connection.take(), b"PING\r\n")
        connection.feed(b"+PONG\r\n")
        self.assertTrue(connection.open)
        self.finish(member, clock)

    def test_heartbeat_line_and_delimiter_are_configurable(self) -> None:
        config = CONFIG.with_values(heartbeat_line="NOOP", delimiter="lf", heartbeat_expect=None)
        member, endpoint, clock, _ = self.start(config)
        clock.advance(10.0)
        self.assertEqual(endpoint.last.take(), b"NOOP\n")
        endpoint.last.feed(b"anything\n")  # no heartbeat_expect: any reply will do
        self.assertTrue(endpoint.last.open)
        self.assertEqual(member.counters.heartbeat_failures, 0)
        self.finish(member, clock)

    def test_no_heartbeat_without_heartbeat_interval(self) -> None:
        member, endpoint, clock, _ = make_member(Config())
        member.start()
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(3600.0)
        self.assertEqual(endpoint.last.written(), b"")
        self.finish(member, clock)


class ActivityTests(HeartbeatTestCase):
    def test_writes_and_reads_postpone_the_heartbeat(self) -> None:
        member, endpoint, clock, _ = self.start()
        connection = endpoint.last
        clock.advance(6.0)
        serving(member).write_lines(b"SET a 1\r\n", 1)
        self.assertEqual(connection.take(), b"SET a 1\r\n")
        clock.advance(6.0)  # t=12
        connection.feed(b"+OK\r\n")  # unsolicited, but activity all the same
        clock.advance(9.9)  # t=21.9
        self.assertEqual(connection.written(), b"")
        clock.advance(0.1)  # t=22: ten seconds after the last activity
        self.assertEqual(connection.take(), b"PING\r\n")
        connection.feed(b"+PONG\r\n")
        self.finish(member, clock)

    def test_no_heartbeat_while_a_request_waits(self) -> None:
        member, endpoint, clock, _ = self.start()
        connection = endpoint.last
        clock.advance(1.0)
        reply = send_request(serving(member), b"SLOW\r\n", 1, 30.0)
        self.assertEqual(connection.take(), b"SLOW\r\n")
        clock.advance(14.0)  # t=15: idle for 14 s, but a reply is awaited
        self.assertEqual(connection.written(), b"")
        connection.feed(b"done\r\n")
        self.assertEqual(self.successResultOf(reply), [b"done"])
        clock.advance(9.9)
        self.assertEqual(connection.written(), b"")
        clock.advance(0.1)  # t=25
        self.assertEqual(connection.take(), b"PING\r\n")
        connection.feed(b"+PONG\r\n")
        self.finish(member, clock)


class SilentPeerTests(HeartbeatTestCase):
    def test_silent_peer_is_disconnected_and_client_service_reconnects(self) -> None:
        member, endpoint, clock, _ = self.start()
        first = endpoint.last
        clock.advance(10.0)
        self.assertEqual(first.take(), b"PING\r\n")
        clock.advance(2.9)
        self.assertTrue(first.open)
        clock.advance(0.1)

        self.assertFalse(first.open)
        self.assertTrue(first.transport.aborted)
        self.assertEqual(member.counters.heartbeat_failures, 1)
        self.assertEqual(member.counters.disconnects, 1)
        self.assertEqual(member.last_error, "closed by the bridge: no heartbeat reply within 3 s")
        # The connection had been up 13 s: the new one is made at once.
        self.assertEqual(len(endpoint.connections), 2)
        self.assertEqual(member.state, CONNECTED)
        second = endpoint.last
        first.feed(b"+PONG\r\n")  # too late, and on a dead connection: goes nowhere
        clock.advance(10.0)  # t=23
        self.assertEqual(second.take(), b"PING\r\n")
        self.assertEqual(first.written(), b"")
        second.feed(b"+PONG\r\n")
        self.assertEqual(member.counters.heartbeat_failures, 1)
        self.finish(member, clock)

    def test_unexpected_heartbeat_reply_closes_the_connection(self) -> None:
        member, endpoint, clock, _ = self.start()
        clock.advance(10.0)
        endpoint.last.feed(b"-ERR unknown command\r\n")
        self.assertFalse(endpoint.last.open)
        self.assertTrue(endpoint.last.transport.aborted)
        self.assertEqual(member.counters.heartbeat_failures, 1)
        self.assertEqual(member.state, WAITING)
        self.finish(member, clock)

    def test_requests_behind_an_unanswered_heartbeat_fail_with_502(self) -> None:
        member, endpoint, clock, _ = self.start()
        clock.advance(10.0)
        reply = send_request(serving(member), b"GET\r\n", 1, 30.0)
        clock.advance(3.0)
        error = self.failureResultOf(reply, UpstreamLostError).value
        self.assertEqual(error.status, 502)
        self.assertEqual(endpoint.connections[0].written(), b"PING\r\nGET\r\n")
        self.finish(member, clock)

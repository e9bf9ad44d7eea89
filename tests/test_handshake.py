"""Handshake lines: a member is ready only after every reply matched."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from bridge.config import Config
from bridge.upstream.handshake import Handshake, HandshakeError, mask
from bridge.upstream.member import UpstreamMember
from tests.fakes_upstream import (
    REFUSE,
    FakeEndpoint,
    LineLog,
    connected_protocol,
    make_member,
    send_request,
    serving,
)

CONNECTED, CONNECTING, STOPPED, WAITING = "connected", "connecting", "stopped", "waiting"

CONFIG = Config().with_values(
    handshake=("AUTH secret", "SELECT 2"),
    handshake_expect="^\\+OK",
    backoff_initial=1.0,
    backoff_factor=2.0,
    backoff_max=8.0,
)
PATTERN = repr(b"^\\+OK")  # how the error message shows handshake_expect


class MaskTests(SynchronousTestCase):
    def test_arguments_are_hidden(self) -> None:
        self.assertEqual(mask("AUTH secret"), "AUTH ***")
        self.assertEqual(mask("AUTH user secret"), "AUTH ***")
        self.assertEqual(mask("PING"), "PING")


class HandshakeTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.logged: list[str] = []  # at every level
        self.said: list[str] = []  # above debug (which adds the state machines' transitions)
        self.levels: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            text = formatEvent(event) or ""
            self.logged.append(text)
            if event["log_level"] > LogLevel.debug:
                self.said.append(text)
                self.levels.append(event["log_level"].name)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def start(
        self, endpoint: FakeEndpoint | None = None
    ) -> tuple[UpstreamMember, FakeEndpoint, Clock, LineLog]:
        member, endpoint, clock, log = make_member(CONFIG, endpoint)
        member.start()
        return member, endpoint, clock, log

    def assert_secret_never_shown(self, member: UpstreamMember) -> None:
        self.assertNotIn("secret", member.last_error or "")
        self.assertNotIn("secret", repr(member.status()))
        self.assertEqual([text for text in self.logged if "secret" in text], [])

    def finish(self, member: UpstreamMember, clock: Clock) -> None:
        self.successResultOf(member.stop())
        self.assertEqual(member.state, STOPPED)
        self.assertEqual(clock.getDelayedCalls(), [])


class HandshakeSuccessTests(HandshakeTestCase):
    def test_member_is_ready_only_after_every_reply_matched(self) -> None:
        member, endpoint, clock, log = self.start()
        connection = endpoint.last
        self.assertEqual(connection.take(), b"AUTH secret\r\n")
        self.assertEqual(member.state, CONNECTING)
        self.assertIsNone(member.protocol)

        connection.feed(b"+OK\r\n")
        self.assertEqual(connection.take(), b"SELECT 2\r\n")
        self.assertEqual(member.state, CONNECTING)
        self.assertIsNone(member.protocol)

        connection.feed(b"+OK\r\n")
        self.assertEqual(member.state, CONNECTED)
        self.assertIsNotNone(member.protocol)
        self.assertEqual(member.counters.connects, 1)
        self.assertEqual(member.counters.handshake_failures, 0)
        self.assertIsNone(member.last_error)
        self.assertEqual(log.events, [])  # handshake replies are not events

        reply = send_request(serving(member), b"GET k\r\n", 1, 5.0)
        connection.feed(b"v\r\n")
        self.assertEqual(self.successResultOf(reply), [b"v"])
        self.assert_secret_never_shown(member)
        self.finish(member, clock)

    def test_success_resets_the_backoff(self) -> None:
        member, endpoint, clock, _ = self.start(FakeEndpoint(REFUSE, REFUSE))
        clock.advance(1.0)
        self.assertEqual(member.current_delay, 2.0)
        clock.advance(2.0)
        endpoint.last.feed(b"+OK\r\n+OK\r\n")
        self.assertEqual(member.state, CONNECTED)
        self.assertIsNone(member.current_delay)
        self.assertEqual(member.attempts_since_success, 0)

        endpoint.last.peer_closes()
        self.assertEqual(member.state, WAITING)
        self.assertEqual(member.current_delay, 1.0)
        clock.advance(1.0)
        self.assertEqual(endpoint.last.take(), b"AUTH secret\r\n")  # every connection
        self.finish(member, clock)

    def test_without_expect_any_reply_is_accepted(self) -> None:
        config = CONFIG.with_values(handshake_expect=None)
        member, endpoint, clock, _ = make_member(config)
        member.start()
        endpoint.last.feed(b"-ERR whatever\r\nanything\r\n")
        self.assertEqual(member.state, CONNECTED)
        self.finish(member, clock)


class HandshakeFailureTests(HandshakeTestCase):
    def test_failing_reply_closes_the_connection_and_masks_the_secret(self) -> None:
        member, endpoint, clock, log = self.start()
        connection = endpoint.last
        connection.feed(b"-ERR invalid password\r\n")

        self.assertFalse(connection.open)
        self.assertTrue(connection.transport.aborted)
        self.assertEqual(connection.written(), b"AUTH secret\r\n")  # SELECT never sent
        self.assertIsNone(member.protocol)
        self.assertEqual(member.state, WAITING)
        self.assertEqual(member.counters.handshake_failures, 1)
        self.assertEqual(member.counters.connects, 0)
        self.assertEqual(member.counters.disconnects, 0)
        self.assertEqual(
            member.last_error,
            f"handshake line 1 (AUTH ***) got b'-ERR invalid password', "
            f"which does not match {PATTERN}",
        )
        self.assertEqual(member.current_delay, 1.0)
        self.assertEqual(log.events, [])
        # Said once, at warn level, with the next attempt.
        ours = [text for text in self.said if text.startswith("upstream 0:")]
        self.assertEqual(ours, ["upstream 0: connecting to localhost:65432 (attempt 1)",
                                f"upstream 0: {member.last_error}; next attempt in 1 s"])
        self.assertEqual(self.levels[-2:], ["warn", "info"])  # ClientService's own line last
        self.assert_secret_never_shown(member)

        clock.advance(1.0)  # ClientService tries again, and backs off further
        self.assertEqual(len(endpoint.connections), 2)
        endpoint.last.feed(b"+OK\r\n-ERR no such db\r\n")
        self.assertEqual(
            member.last_error,
            f"handshake line 2 (SELECT ***) got b'-ERR no such db', which does not match {PATTERN}",
        )
        self.assertEqual(member.counters.handshake_failures, 2)
        self.assertEqual(member.current_delay, 2.0)
        self.assert_secret_never_shown(member)
        self.finish(member, clock)

    def test_reply_timeout_fails_and_backs_off(self) -> None:
        member, endpoint, clock, _ = self.start()
        connection = endpoint.last
        clock.advance(4.9)
        self.assertTrue(connection.open)
        self.assertEqual(member.state, CONNECTING)
        clock.advance(0.1)

        self.assertFalse(connection.open)
        self.assertTrue(connection.transport.aborted)
        self.assertEqual(member.state, WAITING)
        self.assertEqual(member.counters.handshake_failures, 1)
        self.assertEqual(
            member.last_error,
            "handshake line 1 (AUTH ***) failed: the upstream sent 0 of 1 replies within 5 s",
        )
        self.assertEqual(member.current_delay, 1.0)
        self.assertEqual(member.retry_in(), 1.0)

        clock.advance(1.0)
        self.assertEqual(len(endpoint.connections), 2)
        clock.advance(5.0)
        self.assertEqual(member.counters.handshake_failures, 2)
        self.assertEqual(member.current_delay, 2.0)
        self.assert_secret_never_shown(member)
        self.finish(member, clock)

    def test_handshake_timeout_is_configurable(self) -> None:
        config = CONFIG.with_values(handshake_timeout=0.25)
        member, endpoint, clock, _ = make_member(config)
        member.start()
        clock.advance(0.25)
        self.assertFalse(endpoint.last.open)
        self.assertEqual(
            member.last_error,
            "handshake line 1 (AUTH ***) failed: the upstream sent 0 of 1 replies within 0.25 s",
        )
        self.finish(member, clock)

    def test_peer_closing_during_the_handshake(self) -> None:
        # ClientService has no transition for a loss before prepareConnection
        # succeeded; a NoTransition error would be logged and fail this test.
        member, endpoint, clock, _ = self.start()
        endpoint.last.feed(b"+OK\r\n")
        endpoint.last.peer_closes()
        self.assertEqual(member.state, WAITING)
        self.assertEqual(member.counters.handshake_failures, 1)
        self.assertEqual(member.counters.disconnects, 0)
        self.assertEqual(
            member.last_error,
            "handshake line 2 (SELECT ***) failed: the upstream connection closed before "
            "every reply arrived; the lines may or may not have been processed",
        )
        self.assertEqual(member.current_delay, 1.0)
        clock.advance(1.0)
        endpoint.last.feed(b"+OK\r\n+OK\r\n")
        self.assertEqual(member.state, CONNECTED)
        self.finish(member, clock)

    def test_stopping_during_the_handshake(self) -> None:
        member, endpoint, clock, _ = self.start()
        self.successResultOf(member.stop())
        self.assertEqual(member.state, STOPPED)
        self.assertFalse(endpoint.last.open)
        self.assertIsNone(member.protocol)
        clock.advance(60.0)
        self.assertEqual(len(endpoint.connections), 1)
        self.assertEqual(clock.getDelayedCalls(), [])


class HandshakeRunTests(SynchronousTestCase):
    """Handshake.run on a bare protocol."""

    def test_each_line_waits_for_the_previous_reply(self) -> None:
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock)
        handshake = Handshake(["HELLO there", "READY"], "^OK", 5.0, b"\n")
        self.assertTrue(handshake)
        done = handshake.run(protocol)
        self.assertEqual(transport.value(), b"HELLO there\n")
        protocol.dataReceived(b"OK hi\n")
        self.assertEqual(transport.value(), b"HELLO there\nREADY\n")
        self.assertNoResult(done)
        protocol.dataReceived(b"OK\n")
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_no_lines_is_false(self) -> None:
        self.assertFalse(Handshake([], "^OK", 5.0, b"\r\n"))

    def test_mismatch_fails_with_handshake_error(self) -> None:
        clock = Clock()
        protocol, _, _ = connected_protocol(clock)
        done = Handshake(["LOGIN bob hunter2"], "^OK", 5.0, b"\r\n").run(protocol)
        protocol.dataReceived(b"NO\r\n")
        error = self.failureResultOf(done, HandshakeError).value
        self.assertEqual(
            str(error), "handshake line 1 (LOGIN ***) got b'NO', which does not match b'^OK'"
        )
        self.assertEqual(clock.getDelayedCalls(), [])

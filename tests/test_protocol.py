"""The line protocol of one upstream connection: framing and reply correlation
(section 6 of the engineering guide)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from bridge.errors import ReplyTimeoutError, UpstreamLostError
from bridge.upstream.replies.frames import Frame
from bridge.upstream.slots import CHECK, REQUEST, ReplySlot
from tests.fakes_upstream import CLOSED_MESSAGE, connected_protocol, send_request, texts

STALE_MESSAGE = (
    "the bridge closed the upstream connection (out of step: the oldest awaited reply is "
    "more than 15 s late (stale_reply_timeout)) before every reply arrived; the lines may "
    "or may not have been processed"
)
LOST_MESSAGE = (
    "the upstream connection closed before every reply arrived; "
    "the lines may or may not have been processed"
)


def chunked(data: bytes, rng: random.Random, largest: int) -> list[bytes]:
    """``data`` cut into pieces of 1..largest bytes."""
    pieces = []
    while data:
        size = rng.randint(1, largest)
        pieces.append(data[:size])
        data = data[size:]
    return pieces


class PipelinedCorrelationTests(SynchronousTestCase):
    def check_pipeline(self, seed: int) -> None:
        rng = random.Random(seed)
        clock = Clock()
        protocol, transport, log = connected_protocol(clock)
        expected_writes: list[bytes] = []
        expected_replies: list[list[bytes]] = []
        deferreds: list[Deferred[list[bytes]]] = []
        for i in range(50):
            count = rng.randint(1, 3)
            payload = b"".join(b"GET %d.%d\r\n" % (i, j) for j in range(count))
            expected_writes.append(payload)
            expected_replies.append([b"value %d.%d" % (i, j) for j in range(count)])
            deferreds.append(send_request(protocol, payload, count, 5.0))
        self.assertEqual(transport.writes, expected_writes)
        self.assertEqual(protocol.pending, 50)

        stream = b"".join(
            line + rng.choice([b"\r\n", b"\n"])
            for replies in expected_replies
            for line in replies
        )
        for piece in chunked(stream, rng, 17):
            protocol.dataReceived(piece)
            clock.advance(0.01)  # well inside every timeout

        for deferred, replies in zip(deferreds, expected_replies, strict=True):
            self.assertEqual(self.successResultOf(deferred), replies)
        self.assertEqual(log.events, [])
        self.assertEqual(protocol.pending, 0)
        self.assertEqual(protocol.counters.lines_sent, len(stream.splitlines()))
        self.assertEqual(protocol.counters.frames_received, len(stream.splitlines()))
        self.assertEqual(protocol.counters.bytes_sent, len(b"".join(expected_writes)))
        self.assertEqual(protocol.counters.unsolicited, 0)
        self.assertEqual(protocol.counters.late_replies, 0)
        self.assertTrue(transport.connected)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_fifty_pipelined_requests_each_get_their_own_replies(self) -> None:
        for seed in range(20):
            self.check_pipeline(seed)

    def test_replies_split_inside_the_crlf(self) -> None:
        clock = Clock()
        protocol, _, _ = connected_protocol(clock)
        first = send_request(protocol, b"A\r\n", 1, 5.0)
        second = send_request(protocol, b"B\r\nC\r\n", 2, 5.0)
        for piece in (b"+a", b"\r", b"\n+b\r", b"\n", b"+c", b"\n"):
            protocol.dataReceived(piece)
        self.assertEqual(self.successResultOf(first), [b"+a"])
        self.assertEqual(self.successResultOf(second), [b"+b", b"+c"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_empty_lines_are_replies(self) -> None:
        clock = Clock()
        protocol, _, _ = connected_protocol(clock)
        request = send_request(protocol, b"A\r\nB\r\n", 2, 5.0)
        protocol.dataReceived(b"\r\n\n")
        self.assertEqual(self.successResultOf(request), [b"", b""])
        self.assertEqual(clock.getDelayedCalls(), [])


class TimeoutTests(SynchronousTestCase):
    def test_late_reply_is_discarded_and_next_request_gets_its_own(self) -> None:
        clock = Clock()
        protocol, transport, log = connected_protocol(clock)
        first = send_request(protocol, b"SLOW\r\n", 1, 5.0)
        clock.advance(4.5)
        self.assertNoResult(first)
        clock.advance(0.5)
        error = self.failureResultOf(first, ReplyTimeoutError).value
        self.assertEqual(error.message, "the upstream sent 0 of 1 replies within 5 s")
        self.assertEqual(texts(error.replies), [])
        self.assertEqual(error.status, 504)
        self.assertEqual(protocol.pending, 1)  # the slot stays for the late reply

        second = send_request(protocol, b"FAST\r\n", 1, 5.0)
        protocol.dataReceived(b"slow answer\r\n")
        self.assertNoResult(second)
        self.assertEqual(log.events, [("late_reply", b"slow answer")])
        self.assertEqual(protocol.counters.late_replies, 1)

        protocol.dataReceived(b"fast answer\r\n")
        self.assertEqual(self.successResultOf(second), [b"fast answer"])
        self.assertEqual(transport.value(), b"SLOW\r\nFAST\r\n")
        self.assertEqual(protocol.pending, 0)
        self.assertEqual(protocol.counters.unsolicited, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_partial_replies_come_with_the_timeout_and_the_rest_is_discarded(self) -> None:
        clock = Clock()
        protocol, _, log = connected_protocol(clock)
        first = send_request(protocol, b"A\r\nB\r\nC\r\n", 3, 2.0)
        protocol.dataReceived(b"a\r\n")
        clock.advance(2.0)
        error = self.failureResultOf(first, ReplyTimeoutError).value
        self.assertEqual(error.message, "the upstream sent 1 of 3 replies within 2 s")
        self.assertEqual(texts(error.replies), [b"a"])

        second = send_request(protocol, b"D\r\n", 1, 2.0)
        protocol.dataReceived(b"b\nc\nd\n")
        self.assertEqual(self.successResultOf(second), [b"d"])
        self.assertEqual(log.events, [("late_reply", b"b"), ("late_reply", b"c")])
        self.assertEqual(protocol.counters.late_replies, 2)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_each_request_has_its_own_timeout(self) -> None:
        clock = Clock()
        protocol, _, _ = connected_protocol(clock)
        short = send_request(protocol, b"A\r\n", 1, 1.0)
        long = send_request(protocol, b"B\r\n", 1, 10.0)
        clock.advance(1.0)
        self.failureResultOf(short, ReplyTimeoutError)
        self.assertNoResult(long)
        protocol.dataReceived(b"a\r\nb\r\n")
        self.assertEqual(self.successResultOf(long), [b"b"])
        self.assertEqual(clock.getDelayedCalls(), [])


class CancellationTests(SynchronousTestCase):
    def test_cancel_frees_the_slot_but_keeps_its_place(self) -> None:
        clock = Clock()
        protocol, _, log = connected_protocol(clock)
        first = send_request(protocol, b"A\r\nB\r\n", 2, 5.0)
        protocol.dataReceived(b"a\r\n")
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertEqual(protocol.pending, 1)

        second = send_request(protocol, b"C\r\n", 1, 5.0)
        clock.advance(5.0)  # the cancelled request's timer is gone: nothing fires twice
        self.failureResultOf(second, ReplyTimeoutError)

        third = send_request(protocol, b"D\r\n", 1, 5.0)
        protocol.dataReceived(b"b\r\nc\r\nd\r\n")
        self.assertEqual(self.successResultOf(third), [b"d"])
        self.assertEqual(log.events, [("late_reply", b"b"), ("late_reply", b"c")])
        self.assertEqual(protocol.pending, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel_releases_replies_and_timer(self) -> None:
        clock = Clock()
        slot = ReplySlot(REQUEST, 3, 5.0)
        slot.start_timer(clock)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        one = Frame(b"one\r\n", "one", b"one")
        slot.take(one)
        self.assertEqual(slot.frames, [one])
        assert slot.deferred is not None
        slot.deferred.cancel()
        self.failureResultOf(slot.deferred, CancelledError)
        self.assertEqual(slot.frames, [])
        self.assertTrue(slot.abandoned)
        self.assertEqual(clock.getDelayedCalls(), [])
        slot.take(Frame(b"two\r\n", "two", b"two"))
        slot.take(Frame(b"three\r\n", "three", b"three"))
        self.assertTrue(slot.complete_by_count)  # the slot still counts its replies
        self.assertEqual(slot.frames, [])


class ConnectionLostTests(SynchronousTestCase):
    def test_every_pending_request_fails_with_502(self) -> None:
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock)
        answered = send_request(protocol, b"A\r\n", 1, 5.0)
        partial = send_request(protocol, b"B\r\nC\r\n", 2, 5.0)
        waiting = send_request(protocol, b"D\r\n", 1, 5.0)
        protocol.dataReceived(b"a\r\nb\r\n")
        self.assertEqual(self.successResultOf(answered), [b"a"])

        transport.loseConnection()

        partial_error = self.failureResultOf(partial, UpstreamLostError).value
        self.assertEqual(partial_error.status, 502)
        self.assertEqual(partial_error.code, "upstream_lost")
        self.assertEqual(partial_error.message, LOST_MESSAGE)
        self.assertEqual(texts(partial_error.replies), [b"b"])
        waiting_error = self.failureResultOf(waiting, UpstreamLostError).value
        self.assertEqual(waiting_error.status, 502)
        self.assertEqual(texts(waiting_error.replies), [])
        self.successResultOf(protocol.when_closed())
        self.assertEqual(protocol.pending, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lost_listeners_hear_the_reason(self) -> None:
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock)
        reasons: list[Failure] = []
        protocol.on_lost(reasons.append)
        transport.loseConnection()
        self.assertEqual([r.getErrorMessage() for r in reasons], [CLOSED_MESSAGE])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_expecting_replies_on_a_lost_connection_fails_at_once(self) -> None:
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock)
        transport.loseConnection()
        error = self.failureResultOf(protocol.await_greeting(5.0), UpstreamLostError).value
        self.assertEqual(error.message, "the upstream connection is closed")
        self.assertEqual(error.status, 502)
        self.assertEqual(clock.getDelayedCalls(), [])


class StaleConnectionTests(SynchronousTestCase):
    def test_unanswered_head_slot_aborts_and_fails_pending(self) -> None:
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock, stale_timeout=15.0)
        head = send_request(protocol, b"A\r\n", 1, 5.0)
        behind = send_request(protocol, b"B\r\n", 1, 30.0)
        clock.advance(5.0)
        self.failureResultOf(head, ReplyTimeoutError)
        clock.advance(9.9)
        self.assertTrue(transport.connected)
        self.assertNoResult(behind)

        clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.assertFalse(transport.connected)
        self.successResultOf(protocol.when_closed())
        error = self.failureResultOf(behind, UpstreamLostError).value
        self.assertEqual(error.status, 502)
        self.assertEqual(error.message, STALE_MESSAGE)
        self.assertEqual(protocol.counters.desyncs, 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_head_with_a_longer_timeout_is_not_stale_before_its_timeout(self) -> None:
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock, stale_timeout=15.0)
        request = send_request(protocol, b"A\r\n", 1, 40.0)
        clock.advance(39.0)
        self.assertTrue(transport.connected)
        protocol.dataReceived(b"a\r\n")
        self.assertEqual(self.successResultOf(request), [b"a"])
        self.assertEqual(protocol.counters.desyncs, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_each_reply_restarts_the_stale_timer(self) -> None:
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock, stale_timeout=15.0)
        first = send_request(protocol, b"A\r\n", 1, 5.0)
        second = send_request(protocol, b"B\r\n", 1, 30.0)
        clock.advance(10.0)
        self.failureResultOf(first, ReplyTimeoutError)
        protocol.dataReceived(b"late a\r\n")  # the head moves on at t=10
        clock.advance(29.0)  # the stale timer restarted at t=10 with the new head's 30 s
        self.assertTrue(transport.connected)
        protocol.dataReceived(b"b\r\n")
        # second timed out at t=30 (30 s after it was sent), its reply is late
        self.failureResultOf(second, ReplyTimeoutError)
        self.assertTrue(transport.connected)
        self.assertEqual(protocol.counters.desyncs, 0)
        self.assertEqual(clock.getDelayedCalls(), [])


class UnsolicitedTests(SynchronousTestCase):
    def test_lines_nobody_waits_for_are_counted_and_published(self) -> None:
        clock = Clock()
        protocol, transport, log = connected_protocol(clock)
        protocol.dataReceived(b"hello\r\nworld\n")
        self.assertEqual(log.events, [("unsolicited", b"hello"), ("unsolicited", b"world")])
        self.assertEqual(protocol.counters.unsolicited, 2)
        self.assertEqual(protocol.counters.frames_received, 2)

        request = send_request(protocol, b"PING\r\n", 1, 5.0)
        protocol.dataReceived(b"PONG\r\nextra\r\n")
        self.assertEqual(self.successResultOf(request), [b"PONG"])
        self.assertEqual(log.events[2:], [("unsolicited", b"extra")])
        self.assertEqual(protocol.counters.unsolicited, 3)
        self.assertTrue(transport.connected)
        self.assertEqual(clock.getDelayedCalls(), [])


class LineTooLongTests(SynchronousTestCase):
    def test_a_line_of_exactly_max_line_bytes_is_accepted(self) -> None:
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock, max_line_bytes=10)
        request = send_request(protocol, b"A\r\nB\r\n", 2, 5.0)
        protocol.dataReceived(b"x" * 10 + b"\r\n" + b"y" * 10 + b"\n")
        self.assertEqual(self.successResultOf(request), [b"x" * 10, b"y" * 10])
        self.assertTrue(transport.connected)
        self.assertEqual(protocol.counters.desyncs, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_complete_line_too_long_resets_the_connection(self) -> None:
        clock = Clock()
        protocol, transport, log = connected_protocol(clock, max_line_bytes=10)
        request = send_request(protocol, b"A\r\nB\r\n", 2, 5.0)
        protocol.dataReceived(b"ok\r\n" + b"x" * 11 + b"\r\nnever\r\n")
        self.assertTrue(transport.aborted)
        self.assertFalse(transport.connected)
        self.assertEqual(protocol.counters.desyncs, 1)
        self.assertEqual(protocol.counters.frames_received, 1)
        error = self.failureResultOf(request, UpstreamLostError).value
        self.assertEqual(error.status, 502)
        self.assertEqual(texts(error.replies), [b"ok"])
        self.assertEqual(log.events, [])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_partial_line_too_long_resets_the_connection(self) -> None:
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock, max_line_bytes=10)
        request = send_request(protocol, b"A\r\n", 1, 5.0)
        protocol.dataReceived(b"x" * 6)
        protocol.dataReceived(b"x" * 5)
        self.assertTrue(transport.connected)  # 11 bytes may still be 10 + CR
        protocol.dataReceived(b"x")
        self.assertTrue(transport.aborted)
        self.assertFalse(transport.connected)
        self.assertEqual(protocol.counters.desyncs, 1)
        self.failureResultOf(request, UpstreamLostError)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_long_tail_after_complete_lines_resets_the_connection(self) -> None:
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock, max_line_bytes=10)
        request = send_request(protocol, b"A\r\n", 1, 5.0)
        protocol.dataReceived(b"a\r\n" + b"z" * 20)
        self.assertEqual(self.successResultOf(request), [b"a"])
        self.assertTrue(transport.aborted)
        self.assertEqual(protocol.counters.desyncs, 1)
        self.assertEqual(clock.getDelayedCalls(), [])


class ReentrancyTests(SynchronousTestCase):
    """Callbacks of a completed request may close the connection or write again."""

    def test_closing_the_connection_from_a_reply_callback(self) -> None:
        clock = Clock()
        protocol, transport, log = connected_protocol(clock)
        first = send_request(protocol, b"A\r\n", 1, 5.0)
        second = send_request(protocol, b"B\r\n", 1, 5.0)
        first.addCallback(lambda replies: protocol.abort("test") or replies)
        protocol.dataReceived(b"a\r\nb\r\n")
        self.assertEqual(self.successResultOf(first), [b"a"])
        self.failureResultOf(second, UpstreamLostError)
        self.assertEqual(log.events, [])
        self.assertEqual(protocol.pending, 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(transport.connected)

    def test_writing_a_new_request_from_a_reply_callback(self) -> None:
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock)
        follow_up: list[Deferred[list[bytes]]] = []
        first = send_request(protocol, b"A\r\n", 1, 5.0)
        first.addCallback(
            lambda replies: follow_up.append(send_request(protocol, b"B\r\n", 1, 5.0)) or replies
        )
        protocol.dataReceived(b"a\r\nb\r\n")
        self.assertEqual(self.successResultOf(first), [b"a"])
        self.assertEqual(self.successResultOf(follow_up[0]), [b"b"])
        self.assertEqual(transport.value(), b"A\r\nB\r\n")
        self.assertEqual(protocol.pending, 0)
        self.assertEqual(clock.getDelayedCalls(), [])


_actions = st.lists(
    st.one_of(
        st.tuples(st.just("data"), st.binary(max_size=40)),
        st.tuples(st.just("data"), st.sampled_from([b"\n", b"\r\n", b"\r", b"x\r\n"])),
        st.tuples(st.just("request"), st.integers(min_value=1, max_value=3)),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 2.0, 10.0])),
        st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=20)),
    ),
    max_size=60,
)


class NeverRaisesTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(_actions)
    def test_no_input_bytes_make_the_protocol_raise(self, actions: list[tuple]) -> None:
        clock = Clock()
        protocol, _, _ = connected_protocol(clock, max_line_bytes=8, stale_timeout=6.0)
        requests: list[Deferred[list[bytes]]] = []
        closed = protocol.when_closed()
        for kind, value in actions:
            if kind == "data":
                protocol.dataReceived(value)
            elif kind == "request" and not closed.called:
                deferred = send_request(protocol, b"Q\r\n" * value, value, 3.0)
                deferred.addErrback(lambda failure: None)
                requests.append(deferred)
            elif kind == "advance":
                clock.advance(value)
            elif kind == "cancel" and requests:
                requests[value % len(requests)].cancel()
            self.assertGreaterEqual(protocol.pending, 0)
        clock.advance(60.0)
        self.assertEqual(clock.getDelayedCalls(), [])
        for deferred in requests:
            self.assertTrue(deferred.called)


class SendErrorLogBudgetTests(SynchronousTestCase):
    """Error replies to /send lines are logged a few a second at most:
    anyone who may POST /send can make the upstream answer errors."""

    def test_error_replies_are_counted_and_published_but_logged_within_a_budget(self) -> None:
        clock = Clock()
        protocol, _transport, log = connected_protocol(clock)
        protocol.is_error = lambda frame: frame.text.startswith(b"-")
        with capturedLogs() as events:
            for _second in range(2):
                for i in range(10):
                    protocol.submit(b"BAD %d\r\n" % i, 1, mode=CHECK, expected=1, timeout=5.0)
                    protocol.dataReceived(b"-ERR no %d\r\n" % i)
                clock.advance(1)
        warnings = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual(len(warnings), 6)  # 3 in each second, of 10
        self.assertEqual(protocol.counters.send_errors, 20)
        self.assertEqual([entry[0] for entry in log.events], ["send_error"] * 20)

"""Reply slots on one connection: fences, send_replies, suspect connections,
out-of-step detection (section 6 of the engineering guide)."""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bridge.errors import ReplyTimeoutError, UpstreamLostError
from bridge.upstream.fence import NONE, OTHER, OWN, Fence
from bridge.upstream.protocol import UpstreamProtocol
from bridge.upstream.replies.frames import Frame, Plan
from bridge.upstream.slots import CHECK, DISCARD, REQUEST
from tests.fakes_upstream import (
    COUNTING_NONCE,
    RecordingTransport,
    connected_protocol,
    counting_nonces,
    texts,
)

CRLF = b"\r\n"


def line_frame(text: bytes) -> Frame:
    return Frame(text + CRLF, text.decode(), text)


def echo_fence() -> Fence:
    return Fence("ECHO {nonce}", "^{nonce}$", CRLF, counting_nonces(), COUNTING_NONCE)


class FenceMatchTests(SynchronousTestCase):
    def test_own_other_and_no_fence_reply(self) -> None:
        fence = echo_fence()
        self.assertEqual(fence.next(), ("n1", b"ECHO n1\r\n"))
        self.assertEqual(fence.match(line_frame(b"n1"), "n1"), OWN)
        self.assertEqual(fence.match(line_frame(b"n7"), "n1"), OTHER)
        self.assertEqual(fence.match(line_frame(b"hello world"), "n1"), NONE)

    def test_a_fence_without_nonce_matches_any_reply_of_its_shape(self) -> None:
        fence = Fence("mn", "^MN$", CRLF)
        self.assertEqual(fence.next()[1], b"mn\r\n")
        self.assertEqual(fence.match(line_frame(b"MN"), "whatever"), OWN)
        self.assertEqual(fence.match(line_frame(b"STORED"), "whatever"), NONE)

    def test_the_nonce_may_appear_twice(self) -> None:
        fence = Fence("PING {nonce}", "^PONG {nonce} {nonce}$", CRLF, counting_nonces(),
                      COUNTING_NONCE)
        nonce, _ = fence.next()
        self.assertEqual(fence.match(line_frame(b"PONG n1 n1"), nonce), OWN)
        self.assertEqual(fence.match(line_frame(b"PONG n1 n2"), nonce), NONE)


class FencedRequestTests(SynchronousTestCase):
    def fenced(self) -> tuple[UpstreamProtocol, RecordingTransport, Clock]:
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock, fence=echo_fence())
        return protocol, transport, clock

    def test_replies_are_every_frame_before_the_fence_reply(self) -> None:
        protocol, transport, clock = self.fenced()
        first = protocol.submit(b"GET a\r\n", 1, mode=REQUEST, expected=None, timeout=5.0)
        second = protocol.submit(b"SET b 1\r\n", 1, mode=REQUEST, expected=None, timeout=5.0)
        assert first is not None and second is not None
        self.assertEqual(transport.value(), b"GET a\r\nECHO n1\r\nSET b 1\r\nECHO n2\r\n")
        # GET answers two lines, SET answers nothing: neither shifts the other.
        protocol.dataReceived(b"$1\r\nx\r\nn1\r\nn2\r\n")
        self.assertEqual(texts(self.successResultOf(first)), [b"$1", b"x"])
        self.assertEqual(texts(self.successResultOf(second)), [])
        self.assertEqual(protocol.counters.fences, 2)
        self.assertEqual(protocol.pending, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_late_reply_stays_with_its_request_after_a_timeout(self) -> None:
        protocol, transport, clock = self.fenced()
        slow = protocol.submit(b"SLOW\r\n", 1, mode=REQUEST, expected=None, timeout=1.0)
        assert slow is not None
        clock.advance(1.0)
        self.failureResultOf(slow, ReplyTimeoutError)
        self.assertFalse(protocol.suspect)  # the fence tells late replies apart
        fast = protocol.submit(b"FAST\r\n", 1, mode=REQUEST, expected=None, timeout=1.0)
        assert fast is not None
        protocol.dataReceived(b"slow 1\r\nslow 2\r\nn1\r\nfast\r\nn2\r\n")
        self.assertEqual(texts(self.successResultOf(fast)), [b"fast"])
        self.assertEqual(transport.value(), b"SLOW\r\nECHO n1\r\nFAST\r\nECHO n2\r\n")
        self.assertEqual(protocol.counters.late_replies, 2)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_another_requests_fence_reply_is_out_of_step(self) -> None:
        protocol, transport, clock = self.fenced()
        first = protocol.submit(b"A\r\n", 1, mode=REQUEST, expected=None, timeout=5.0)
        second = protocol.submit(b"B\r\n", 1, mode=REQUEST, expected=None, timeout=5.0)
        assert first is not None and second is not None
        protocol.dataReceived(b"a\r\nn2\r\n")
        self.assertTrue(transport.aborted)
        self.assertEqual(protocol.counters.desyncs, 1)
        error = self.failureResultOf(first, UpstreamLostError).value
        self.assertEqual(error.message, (
            "the bridge closed the upstream connection (out of step: the fence reply of "
            "another request arrived) before every reply arrived; the lines may or may not "
            "have been processed"))
        self.assertEqual(texts(error.replies), [b"a"])
        self.failureResultOf(second, UpstreamLostError)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_known_count_is_verified_against_the_fence(self) -> None:
        protocol, transport, _ = self.fenced()
        short = protocol.submit(b"A\r\nB\r\n", 2, mode=REQUEST, expected=2, timeout=5.0)
        assert short is not None
        protocol.dataReceived(b"a\r\nn1\r\n")  # one reply where two were due
        self.assertTrue(transport.aborted)
        self.assertEqual(protocol.close_reason,
                         "out of step: the fence reply came after 1 of 2 replies")
        self.failureResultOf(short, UpstreamLostError)

    def test_an_extra_reply_where_the_fence_reply_was_due_is_out_of_step(self) -> None:
        protocol, transport, _ = self.fenced()
        one = protocol.submit(b"A\r\n", 1, mode=REQUEST, expected=1, timeout=5.0)
        assert one is not None
        protocol.dataReceived(b"a\r\nsurprise\r\n")
        self.assertTrue(transport.aborted)
        self.assertEqual(protocol.close_reason,
                         "out of step: a reply arrived where the fence reply was due: "
                         "b'surprise'")
        self.failureResultOf(one, UpstreamLostError)

    def test_handshake_and_heartbeat_questions_are_not_fenced(self) -> None:
        protocol, transport, _ = self.fenced()
        answer = protocol.ask(b"PING\r\n", 5.0)
        protocol.dataReceived(b"PONG\r\n")
        self.assertEqual(texts(self.successResultOf(answer)), [b"PONG"])
        self.assertEqual(transport.value(), b"PING\r\n")


class SuspectConnectionTests(SynchronousTestCase):
    """line framing without a fence cannot tell a late reply from the next
    request's: after a request gave up, the connection is suspect until its
    replies came, or it is closed as stale."""

    def test_a_timeout_makes_the_connection_suspect_until_the_late_reply(self) -> None:
        clock = Clock()
        protocol, _, _ = connected_protocol(clock)
        replies = protocol.submit(b"A\r\n", 1, mode=REQUEST, expected=1, timeout=1.0)
        assert replies is not None
        self.assertFalse(protocol.suspect)
        clock.advance(1.0)
        self.failureResultOf(replies, ReplyTimeoutError)
        self.assertTrue(protocol.suspect)
        protocol.dataReceived(b"late\r\n")
        self.assertFalse(protocol.suspect)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_cancelled_request_makes_it_suspect_too(self) -> None:
        clock = Clock()
        protocol, _, _ = connected_protocol(clock)
        replies = protocol.submit(b"A\r\n", 1, mode=REQUEST, expected=1, timeout=5.0)
        assert replies is not None
        replies.cancel()
        self.failureResultOf(replies, CancelledError)
        self.assertTrue(protocol.suspect)

    def test_a_reply_that_never_comes_closes_the_connection_within_stale_timeout(
        self,
    ) -> None:
        """The trial: PING plus an empty line (Redis answers one of the two),
        then steady traffic; the connection is closed stale_reply_timeout after
        the request that gave up became the oldest, whatever else happens."""
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock, stale_timeout=15.0)
        first = protocol.submit(b"PING\r\n\r\n", 2, mode=REQUEST, expected=2, timeout=5.0)
        assert first is not None
        protocol.dataReceived(b"+PONG\r\n")
        clock.advance(5.0)
        self.failureResultOf(first, ReplyTimeoutError)
        self.assertTrue(protocol.suspect)
        for _ in range(19):
            clock.advance(0.5)  # the pool writes nothing on a suspect connection
            self.assertTrue(transport.connected)
        clock.advance(0.5)
        self.assertTrue(transport.aborted)
        self.assertEqual(protocol.counters.desyncs, 1)
        self.assertEqual(protocol.close_reason, (
            "out of step: the oldest awaited reply is more than 15 s late "
            "(stale_reply_timeout)"))

    def test_replies_to_earlier_slots_do_not_extend_the_heads_deadline(self) -> None:
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock, stale_timeout=15.0)
        head = protocol.submit(b"A\r\nB\r\n", 2, mode=REQUEST, expected=2, timeout=5.0)
        assert head is not None
        head.addErrback(lambda failure: None)
        for _ in range(14):
            clock.advance(1.0)
        protocol.dataReceived(b"a\r\n")  # progress on the head, not completion
        clock.advance(1.0)
        self.assertTrue(transport.aborted)


class SendRepliesTests(SynchronousTestCase):
    def test_discarded_replies_are_counted_not_published(self) -> None:
        clock = Clock()
        protocol, _, log = connected_protocol(clock)
        self.assertIsNone(protocol.submit(b"RPUSH l 1\r\nRPUSH l 2\r\n", 2, mode=DISCARD,
                                          expected=2, timeout=5.0))
        protocol.dataReceived(b":1\r\n:2\r\n")
        self.assertEqual(log.events, [])
        self.assertEqual((protocol.counters.discarded_replies, protocol.counters.late_replies),
                         (2, 0))
        self.assertEqual(protocol.pending, 0)

    def test_checked_error_replies_are_counted_and_published_with_their_line(self) -> None:
        clock = Clock()
        protocol, _, log = connected_protocol(clock)
        protocol.is_error = lambda frame: frame.text.startswith(b"-")
        protocol.submit(b"A\r\n\r\nB\r\nC\r\n", 4, mode=CHECK, expected=3, timeout=5.0,
                        plan=Plan(3, [1, 3, 4]))
        protocol.dataReceived(b"+OK\r\n-ERR wrong\r\n-ERR worse\r\n")
        self.assertEqual(log.events, [("send_error", b"-ERR wrong", 3),
                                      ("send_error", b"-ERR worse", 4)])
        self.assertEqual(protocol.counters.send_errors, 2)
        self.assertEqual(protocol.counters.discarded_replies, 3)

    def test_nothing_expected_completes_at_once(self) -> None:
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock)
        replies = protocol.submit(b"\r\n", 1, mode=REQUEST, expected=0, timeout=5.0)
        assert replies is not None
        self.assertEqual(self.successResultOf(replies), [])
        self.assertEqual((protocol.pending, transport.value()), (0, b"\r\n"))
        self.assertEqual(clock.getDelayedCalls(), [])


class AcceptanceTests(SynchronousTestCase):
    def test_a_refused_intermediate_reply_puts_the_connection_out_of_step(self) -> None:
        """SMTP DATA answered 554: the message lines already written would be
        read as commands."""
        clock = Clock()
        protocol, transport, _ = connected_protocol(clock)
        plan = Plan(2, [1, 3], {0: lambda frame: frame.text.startswith(b"3")})
        replies = protocol.submit(b"DATA\r\nhello\r\n.\r\n", 3, mode=REQUEST, expected=2,
                                  timeout=5.0, plan=plan)
        assert replies is not None
        protocol.dataReceived(b"554 no valid recipients\r\n")
        self.assertEqual(texts(self.successResultOf(replies)), [b"554 no valid recipients"])
        self.assertTrue(transport.aborted)
        self.assertEqual(protocol.close_reason, (
            "out of step: reply b'554 no valid recipients' to line 1 means the lines written "
            "after it will be misread"))


class UnsolicitedTests(SynchronousTestCase):
    def test_pushes_are_never_replies(self) -> None:
        clock = Clock()
        protocol, _, log = connected_protocol(clock)
        replies = protocol.submit(b"GET a\r\n", 1, mode=REQUEST, expected=1, timeout=5.0)
        assert replies is not None
        push = Frame(b">2\r\n...", ["invalidate", "a"], b"", push=True)
        protocol.frame_received(push)
        protocol.frame_received(line_frame(b"value"))
        self.assertEqual(texts(self.successResultOf(replies)), [b"value"])
        self.assertEqual(log.events, [("unsolicited", b"")])
        self.assertEqual(protocol.counters.unsolicited, 1)

"""GET /events: events as Server-Sent Events, replay, and backpressure.

Every stream runs through a real BridgeSite HTTP channel on a
ClientSocket: a StringTransport that pauses and resumes its producer as
Twisted's TCP transport does (pause past 64 KiB unsent, resume only once the
peer took everything), so pausing, finishing, closing and aborting are the
real twisted.web paths.  Time is the bridge's Clock (stall timer, keep-alive)
and the site's MemoryReactorClock (the channel's abort timer).
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.testing import MemoryReactorClock

from bridge.app.service import BridgeService
from bridge.config import Config
from bridge.http.events import MAX_QUEUED_BYTES, MiB
from bridge.http.sse import CONNECTED, KEEPALIVE, format_event
from tests.fakes_http import Bridge, BridgeTestCase
from tests.http_harness import CLIENT, ClientSocket
from tests.http_wire import dechunk, split_response

#: What Twisted's TCP transport sends per reactor iteration at most.
SEND_LIMIT = 128 * 1024
END_OF_BODY = b"0\r\n\r\n"


class Stream:
    """One GET /events over a real HTTP channel of a BridgeSite."""

    def __init__(
        self, bridge: Bridge, last_event_id: bytes | None = None, buffer_size: int = 64 * 1024,
        version: bytes = b"HTTP/1.1",
    ) -> None:
        self.bridge = bridge
        # The channel's timers (the abort after a drop) on a reactor of their
        # own: the bridge's Clock holds only the hub's (stall, keep-alive).
        self.reactor = MemoryReactorClock()
        self.site = bridge.site(reactor=self.reactor)
        self.channel = self.site.buildProtocol(CLIENT)
        assert self.channel is not None
        self.transport = ClientSocket(buffer_size, peerAddress=CLIENT)
        self.transport.protocol = self.channel
        self.channel.makeConnection(self.transport)
        header = b"" if last_event_id is None else b"Last-Event-ID: " + last_event_id + b"\r\n"
        self.channel.dataReceived(
            b"GET /events " + version + b"\r\nHost: bridge\r\n" + header + b"\r\n")

    @property
    def status(self) -> bytes:
        return split_response(self.transport.value())[0]

    @property
    def headers(self) -> dict[bytes, list[bytes]]:
        return split_response(self.transport.value())[1]

    @property
    def raw_body(self) -> bytes:
        return split_response(self.transport.value())[2]

    @property
    def body(self) -> bytes:
        """The event-stream bytes written so far (de-chunked)."""
        return dechunk(self.raw_body)

    @property
    def ended(self) -> bool:
        """The chunked body ended properly."""
        return self.raw_body.endswith(END_OF_BODY)

    def read(self, limit: int | None = None) -> int:
        """The client reads (the socket takes up to ``limit`` bytes)."""
        return self.transport.take(limit)

    def hang_up(self) -> None:
        self.transport.peer_closes()


def event(number: int, line: str | None = None, kind: str = "unsolicited") -> bytes:
    return format_event(kind, f"b1-{number}", [f"line {number}" if line is None else line])


def events(numbers: Sequence[int]) -> bytes:
    return b"".join(event(number) for number in numbers)


def dropped(why: str) -> bytes:
    return f"event: dropped\ndata: {why}\n\n".encode()


def stalled(seconds: int, backlog: int) -> bytes:
    return dropped(f"the connection took nothing for {seconds} s while more than {backlog} "
                   "events waited")


def publish(bridge: Bridge, numbers: Sequence[int]) -> None:
    for number in numbers:
        bridge.events.publish("unsolicited", [f"line {number}"])


class EventsTestCase(BridgeTestCase):
    def assertSameBytes(self, actual: bytes, expected: bytes) -> None:
        """Equal; on failure show where they part, not megabytes of both."""
        if actual == expected:
            return
        pairs = zip(actual, expected, strict=False)
        at = next((i for i, (a, b) in enumerate(pairs) if a != b),
                  min(len(actual), len(expected)))
        self.fail(f"{len(actual)} bytes, expected {len(expected)}; they differ at {at}: "
                  f"{actual[at - 80:at + 80]!r} instead of {expected[at - 80:at + 80]!r}")


class StreamTests(EventsTestCase):
    def test_stream_headers_and_greeting(self) -> None:
        bridge = self.bridge()
        stream = Stream(bridge)
        self.assertEqual(stream.status, b"HTTP/1.1 200 OK")
        headers = stream.headers
        self.assertEqual(headers[b"content-type"], [b"text/event-stream; charset=utf-8"])
        self.assertEqual(headers[b"cache-control"], [b"no-cache"])
        self.assertEqual(headers[b"x-accel-buffering"], [b"no"])
        self.assertEqual(headers[b"transfer-encoding"], [b"chunked"])
        self.assertEqual(stream.body, CONNECTED)
        self.assertEqual(bridge.events.subscribers, 1)

    def test_unsolicited_upstream_lines_are_published_one_event_each(self) -> None:
        bridge = self.bridge()
        stream = Stream(bridge)
        bridge.reply(b"first\r\nsecond\nthi\rrd\r\ncaf\xe9\r\n")
        self.assertEqual(
            stream.body,
            CONNECTED + event(1, "first") + event(2, "second") + event(3, "thi\rrd")
            + event(4, "caf\ufffd"),
        )
        self.assertEqual(bridge.pool.totals().unsolicited, 4)
        self.assertEqual(bridge.events.published, 4)

    def test_one_event_of_several_lines(self) -> None:
        bridge = self.bridge()
        stream = Stream(bridge)
        bridge.events.publish("unsolicited", ["250-mx.example.org", "250-SIZE 10\r", "250 OK"])
        bridge.events.publish("unsolicited", ['["message","news","a\\\\b"]'])
        self.assertEqual(
            stream.body,
            CONNECTED
            + b"event: unsolicited\nid: b1-1\n"
              b"data: 250-mx.example.org\ndata: 250-SIZE 10\\r\ndata: 250 OK\n\n"
            + b'event: unsolicited\nid: b1-2\ndata: ["message","news","a\\\\\\\\b"]\n\n',
        )

    def test_ids_carry_the_boot_token(self) -> None:
        bridge = self.bridge(boot="9f3ac01b")
        stream = Stream(bridge)
        bridge.events.publish("unsolicited", ["x"])
        self.assertEqual(stream.body,
                         CONNECTED + b"event: unsolicited\nid: 9f3ac01b-1\ndata: x\n\n")

    def test_late_replies_are_published_as_late_reply(self) -> None:
        bridge = self.bridge(reply_timeout=1.0)
        stream = Stream(bridge)
        pending = self.start_request(bridge, "POST", "/request", data=b"GET a\n")
        bridge.clock.advance(1.0)
        self.assertEqual(self.finish(bridge, pending).code, 504)
        bridge.reply(b"too late\r\n")
        self.assertEqual(stream.body, CONNECTED + event(1, "too late", "late_reply"))

    def test_fan_out_to_every_subscriber(self) -> None:
        bridge = self.bridge()
        streams = [Stream(bridge) for _ in range(3)]
        self.assertEqual(bridge.events.subscribers, 3)
        publish(bridge, [1, 2])
        self.assertEqual([stream.body for stream in streams], [CONNECTED + events([1, 2])] * 3)

    def test_a_client_that_hangs_up_is_removed(self) -> None:
        bridge = self.bridge()
        leaving, staying = Stream(bridge), Stream(bridge)
        publish(bridge, [1])
        leaving.hang_up()
        self.assertEqual(bridge.events.subscribers, 1)
        before = leaving.transport.value()
        publish(bridge, [2])
        self.assertEqual(leaving.transport.value(), before)
        self.assertEqual(staying.body, CONNECTED + events([1, 2]))
        self.assertEqual(bridge.events.dropped, 0)

    def test_a_paused_client_that_hangs_up_leaves_no_timer(self) -> None:
        bridge = self.bridge(max_event_backlog=1)
        stream = Stream(bridge, buffer_size=0)
        publish(bridge, [1, 2, 3])  # paused after 1; 2 and 3 wait; the stall timer runs
        self.assertEqual(len(bridge.clock.getDelayedCalls()), 2)  # stall + keep-alive
        stream.hang_up()
        self.assertEqual((bridge.events.subscribers, bridge.clock.getDelayedCalls()), (0, []))

    def test_close_all_ends_every_stream_properly(self) -> None:
        bridge = self.bridge()
        streams = [Stream(bridge), Stream(bridge)]
        publish(bridge, [1])
        bridge.events.close_all()
        self.assertEqual(bridge.events.subscribers, 0)
        for stream in streams:
            self.assertTrue(stream.ended)
            self.assertEqual(stream.body, CONNECTED + event(1))
            self.assertTrue(stream.transport.disconnecting)
            stream.read()
            self.assertEqual((stream.transport.connected, stream.transport.aborted),
                             (False, False))
        self.assertEqual(bridge.events.dropped, 0)


class KeepaliveTests(EventsTestCase):
    def test_keepalive_every_heartbeat(self) -> None:
        bridge = self.bridge(event_heartbeat=5.0)
        first = Stream(bridge)
        bridge.clock.advance(4.9)
        self.assertEqual(first.body, CONNECTED)
        bridge.clock.advance(0.1)
        self.assertEqual(first.body, CONNECTED + KEEPALIVE)
        second = Stream(bridge)
        bridge.clock.advance(5.0)
        self.assertEqual(first.body, CONNECTED + KEEPALIVE + KEEPALIVE)
        self.assertEqual(second.body, CONNECTED + KEEPALIVE)
        self.assertEqual(KEEPALIVE, b": keep-alive\n\n")

    def test_no_keepalive_while_bytes_wait(self) -> None:
        bridge = self.bridge(event_heartbeat=5.0)
        stream = Stream(bridge, buffer_size=0)
        publish(bridge, [1, 2])
        bridge.clock.advance(5.0)
        self.assertEqual(stream.body, CONNECTED + event(1))
        stream.read()
        self.assertEqual(stream.body, CONNECTED + events([1, 2]))
        stream.read()
        bridge.clock.advance(5.0)
        self.assertEqual(stream.body, CONNECTED + events([1, 2]) + KEEPALIVE)

    def test_keepalive_timer_stops_with_the_last_subscriber(self) -> None:
        bridge = self.bridge(event_heartbeat=5.0)
        first, second = Stream(bridge), Stream(bridge)
        self.assertEqual(len(bridge.clock.getDelayedCalls()), 1)
        first.hang_up()
        self.assertEqual(len(bridge.clock.getDelayedCalls()), 1)
        second.hang_up()
        self.assertEqual(bridge.clock.getDelayedCalls(), [])
        self.assertEqual(bridge.events.subscribers, 0)


class ReplayTests(EventsTestCase):
    def test_no_last_event_id_gets_live_events_only(self) -> None:
        bridge = self.bridge()
        publish(bridge, [1, 2])
        stream = Stream(bridge)
        publish(bridge, [3])
        self.assertEqual(stream.body, CONNECTED + event(3))

    def test_kept_events_after_last_event_id_then_live_ones(self) -> None:
        bridge = self.bridge()
        publish(bridge, range(1, 6))
        stream = Stream(bridge, b"b1-2")
        self.assertEqual(stream.body, CONNECTED + events([3, 4, 5]))
        publish(bridge, [6])
        self.assertEqual(stream.body, CONNECTED + events([3, 4, 5, 6]))

    def test_last_event_id_of_the_newest_event(self) -> None:
        bridge = self.bridge()
        publish(bridge, [1, 2])
        stream = Stream(bridge, b"b1-2")
        publish(bridge, [3])
        self.assertEqual(stream.body, CONNECTED + event(3))

    def test_gap_when_the_bridge_restarted(self) -> None:
        bridge = self.bridge()
        publish(bridge, [1, 2])
        stream = Stream(bridge, b"a0-17")
        self.assertEqual(
            stream.body,
            CONNECTED
            + b"event: gap\nid: b1-0\ndata: the bridge restarted after event a0-17; "
              b"the events that followed it in that run are lost\n\n"
            + events([1, 2]),
        )

    def test_gap_when_events_are_no_longer_kept(self) -> None:
        bridge = self.bridge(event_replay=3)
        publish(bridge, range(1, 11))
        stream = Stream(bridge, b"b1-2")
        publish(bridge, [11])
        self.assertEqual(
            stream.body,
            CONNECTED
            + b"event: gap\nid: b1-7\ndata: events after b1-2 are no longer kept; "
              b"5 were missed\n\n"
            + events([8, 9, 10, 11]),
        )

    def test_gap_when_the_id_is_malformed(self) -> None:
        bridge = self.bridge()
        publish(bridge, [1])
        stream = Stream(bridge, b"17")
        self.assertEqual(
            stream.body,
            CONNECTED
            + b"event: gap\nid: b1-0\ndata: Last-Event-ID '17' is not an event id of this "
              b"bridge; earlier events may have been missed\n\n"
            + event(1),
        )

    def test_no_replay_with_event_replay_zero(self) -> None:
        bridge = self.bridge(event_replay=0)
        publish(bridge, [1, 2])
        caught_up, behind = Stream(bridge, b"b1-2"), Stream(bridge, b"b1-1")
        self.assertEqual(caught_up.body, CONNECTED)
        self.assertEqual(
            behind.body,
            CONNECTED + b"event: gap\nid: b1-2\ndata: events after b1-1 are no longer kept; "
                        b"1 were missed\n\n",
        )

    def test_replay_waits_for_a_paused_connection(self) -> None:
        bridge = self.bridge()
        publish(bridge, range(1, 6))
        stream = Stream(bridge, b"b1-0", buffer_size=0)
        self.assertEqual(stream.body, CONNECTED + event(1))
        stream.read()
        self.assertEqual(stream.body, CONNECTED + events(range(1, 6)))


class BackpressureTests(EventsTestCase):
    def test_a_paused_subscriber_is_kept_until_the_stall_time(self) -> None:
        bridge = self.bridge(max_event_backlog=3, event_stall_timeout=10.0)
        stream = Stream(bridge, buffer_size=0)
        publish(bridge, range(1, 1001))  # 1 is written, then the transport pauses it
        bridge.clock.advance(9.9)
        self.assertEqual((bridge.events.subscribers, stream.body), (1, CONNECTED + event(1)))
        stream.read()
        self.assertEqual(stream.body, CONNECTED + events(range(1, 1001)))
        self.assertEqual((bridge.events.subscribers, bridge.events.dropped), (1, 0))

    def test_a_stalled_subscriber_is_dropped_with_a_last_event_and_a_proper_end(self) -> None:
        bridge = self.bridge(max_event_backlog=3, event_stall_timeout=10.0, event_heartbeat=60.0)
        slow, fast = Stream(bridge, buffer_size=0), Stream(bridge)
        publish(bridge, range(1, 5))  # 1 written; 2, 3, 4 wait: not more than 3
        bridge.clock.advance(20.0)
        self.assertEqual(bridge.events.subscribers, 2)
        publish(bridge, [5])  # more than 3 wait now: paused for 20 s, dropped at once
        self.assertEqual((bridge.events.subscribers, bridge.events.dropped), (1, 1))
        self.assertEqual(slow.body, CONNECTED + event(1) + stalled(10, 3))
        self.assertTrue(slow.ended)
        self.assertTrue(slow.raw_body.endswith(b"\r\n" + stalled(10, 3) + b"\r\n" + END_OF_BODY))
        self.assertTrue(slow.transport.disconnecting)
        self.assertFalse(slow.transport.aborted)
        slow.read()  # the client takes the rest: a clean close, no abort left behind
        self.assertEqual((slow.transport.connected, slow.transport.aborted), (False, False))
        self.assertEqual(slow.site.reactor.getDelayedCalls(), [])
        publish(bridge, [6])
        self.assertEqual(fast.body, CONNECTED + events(range(1, 7)))
        self.assertEqual(slow.body, CONNECTED + event(1) + stalled(10, 3))

    def test_a_dropped_subscriber_that_never_reads_is_aborted(self) -> None:
        bridge = self.bridge(max_event_backlog=1, event_stall_timeout=4.0)
        stream = Stream(bridge, buffer_size=0)
        publish(bridge, range(1, 4))
        bridge.clock.advance(4.0)
        self.assertEqual(stream.body, CONNECTED + event(1) + stalled(4, 1))
        self.assertTrue(stream.ended)
        stream.site.reactor.advance(3.9)
        self.assertFalse(stream.transport.aborted)
        stream.site.reactor.advance(0.1)
        self.assertTrue(stream.transport.aborted)
        self.assertEqual(stream.site.reactor.getDelayedCalls(), [])

    def test_an_http_10_stream_ends_by_closing(self) -> None:
        bridge = self.bridge(max_event_backlog=1, event_stall_timeout=1.0)
        stream = Stream(bridge, buffer_size=0, version=b"HTTP/1.0")
        publish(bridge, [1, 2, 3])
        bridge.clock.advance(1.0)
        self.assertEqual(stream.raw_body, CONNECTED + event(1) + stalled(1, 1))
        self.assertTrue(stream.transport.disconnecting)
        stream.read()
        self.assertEqual((stream.transport.connected, stream.transport.aborted), (False, False))
        self.assertEqual(stream.site.reactor.getDelayedCalls(), [])

    def test_the_stall_clock_starts_at_the_pause_not_at_the_backlog(self) -> None:
        bridge = self.bridge(max_event_backlog=3, event_stall_timeout=10.0)
        stream = Stream(bridge, buffer_size=0)
        publish(bridge, [1, 2, 3])  # paused at 0 with 2 waiting
        bridge.clock.advance(9.0)
        publish(bridge, [4, 5])  # 4 waiting: dropped at 10, not at 19
        bridge.clock.advance(0.9)
        self.assertEqual(bridge.events.subscribers, 1)
        bridge.clock.advance(0.1)
        self.assertEqual(bridge.events.dropped, 1)
        self.assertEqual(stream.body, CONNECTED + event(1) + stalled(10, 3))

    def test_dropped_at_once_when_the_backlog_passes_after_the_stall_time(self) -> None:
        bridge = self.bridge(max_event_backlog=3, event_stall_timeout=10.0)
        stream = Stream(bridge, buffer_size=0)
        publish(bridge, [1])
        bridge.clock.advance(30.0)
        publish(bridge, [2, 3, 4])
        self.assertEqual(bridge.events.subscribers, 1)
        publish(bridge, [5])
        self.assertEqual(bridge.events.dropped, 1)
        self.assertEqual(stream.body, CONNECTED + event(1) + stalled(10, 3))

    def test_each_resume_restarts_the_stall_clock(self) -> None:
        bridge = self.bridge(max_event_backlog=3, event_stall_timeout=10.0)
        stream = Stream(bridge, buffer_size=0)
        publish(bridge, range(1, 6))
        bridge.clock.advance(9.0)
        stream.read()  # everything taken: resumed, catches up, paused again at 9
        self.assertEqual(stream.body, CONNECTED + events(range(1, 6)))
        publish(bridge, range(6, 10))
        bridge.clock.advance(9.9)
        self.assertEqual(bridge.events.subscribers, 1)
        bridge.clock.advance(0.1)
        self.assertEqual(bridge.events.dropped, 1)

    def test_a_burst_of_100000_events_reaches_a_reader_that_keeps_up(self) -> None:
        """The trial's case, twenty times over: one upstream read brings a
        burst; the socket then takes what Twisted sends per iteration."""
        bridge = self.bridge(max_event_backlog=10, event_stall_timeout=1.0)
        stream = Stream(bridge)
        count = 100_000
        bridge.reply(b"".join(b"line %d\r\n" % number for number in range(1, count + 1)))
        self.assertEqual(bridge.events.published, count)
        iterations = 0
        while stream.transport.unsent:
            stream.read(SEND_LIMIT)
            bridge.clock.advance(0.01)
            iterations += 1
        self.assertSameBytes(stream.body, CONNECTED + events(range(1, count + 1)))
        self.assertEqual((bridge.events.subscribers, bridge.events.dropped), (1, 0))
        self.assertGreater(iterations, 20)  # the burst really was spread over iterations

    def test_bursts_between_reads_reach_a_reader_that_keeps_up(self) -> None:
        bridge = self.bridge(max_event_backlog=10, event_stall_timeout=1.0)
        stream = Stream(bridge)
        for burst in range(100):
            publish(bridge, range(burst * 1000 + 1, burst * 1000 + 1001))
            stream.read(SEND_LIMIT)
            bridge.clock.advance(0.01)
        while stream.transport.unsent:
            stream.read(SEND_LIMIT)
            bridge.clock.advance(0.01)
        self.assertSameBytes(stream.body, CONNECTED + events(range(1, 100_001)))
        self.assertEqual(bridge.events.dropped, 0)

    def test_a_slow_reader_that_keeps_reading_is_not_dropped(self) -> None:
        bridge = self.bridge(max_event_backlog=10, event_stall_timeout=10.0,
                             event_heartbeat=1000.0)
        stream = Stream(bridge)
        publish(bridge, range(1, 20_001))  # about a megabyte
        seconds = 0
        while stream.transport.unsent:
            stream.read(32 * 1024)  # 32 KiB a second: resumed every few seconds
            bridge.clock.advance(1.0)
            seconds += 1
        self.assertSameBytes(stream.body, CONNECTED + events(range(1, 20_001)))
        self.assertEqual(bridge.events.dropped, 0)
        self.assertGreater(seconds, 20)

    def test_a_reader_that_takes_nothing_for_the_stall_time_is_dropped(self) -> None:
        bridge = self.bridge(max_event_backlog=10, event_stall_timeout=10.0)
        stream = Stream(bridge)
        publish(bridge, range(1, 20_001))
        for _ in range(30):
            stream.read(1024)  # a kilobyte a second: the buffer never empties
            bridge.clock.advance(1.0)
        self.assertEqual((bridge.events.subscribers, bridge.events.dropped), (0, 1))
        self.assertTrue(stream.body.endswith(stalled(10, 10)))
        self.assertTrue(stream.ended)

    def test_more_than_64_mib_waiting_drops_at_once(self) -> None:
        self.assertEqual(MAX_QUEUED_BYTES, 64 * MiB)
        bridge = self.bridge(max_event_backlog=1_000_000, event_replay=0)
        stream = Stream(bridge, buffer_size=0)
        line = "x" * MiB
        publish_line = bridge.events.publish
        publish_line("unsolicited", [line])  # written; the transport pauses it
        waiting = 0
        while waiting + len(event(bridge.events.published + 1, line)) <= MAX_QUEUED_BYTES:
            number = bridge.events.published + 1
            publish_line("unsolicited", [line])
            waiting += len(event(number, line))
        self.assertEqual((bridge.events.subscribers, bridge.events.published), (1, 64))
        publish_line("unsolicited", [line])  # one more is over the cap
        self.assertEqual((bridge.events.subscribers, bridge.events.dropped), (0, 1))
        self.assertEqual(
            stream.body,
            CONNECTED + event(1, line)
            + dropped("more than 64 MiB of events waited for the client"),
        )
        self.assertTrue(stream.ended)

    def test_status_and_metrics_count_subscribers_published_and_dropped(self) -> None:
        bridge = self.bridge(max_event_backlog=1, event_stall_timeout=1.0)
        slow, _ = Stream(bridge, buffer_size=0), Stream(bridge)
        publish(bridge, [1, 2, 3])
        bridge.clock.advance(1.0)
        document = self.call(bridge, "GET", "/status").json()
        self.assertEqual(document["events"], {"subscribers": 1, "published": 3, "dropped": 1})
        slow.read()


class EndToEndTests(EventsTestCase):
    def test_events_from_the_upstream_until_the_client_hangs_up(self) -> None:
        bridge = self.bridge()
        stream = Stream(bridge, last_event_id=b"b1-0")
        self.assertEqual(stream.status, b"HTTP/1.1 200 OK")
        self.assertEqual(stream.headers[b"content-type"], [b"text/event-stream; charset=utf-8"])
        self.assertEqual(stream.body, CONNECTED)
        bridge.reply(b"PUBLISH news hello\r\n")
        self.assertEqual(stream.body, CONNECTED + event(1, "PUBLISH news hello"))
        stream.hang_up()
        self.assertEqual(bridge.events.subscribers, 0)
        bridge.reply(b"nobody listens\r\n")
        self.assertEqual(stream.body, CONNECTED + event(1, "PUBLISH news hello"))
        self.assertEqual(bridge.upstream.value(), b"")

    def test_a_dropped_stream_ends_for_the_client(self) -> None:
        bridge = self.bridge(max_event_backlog=1, event_stall_timeout=2.0)
        stream = Stream(bridge, buffer_size=0)
        publish(bridge, [1, 2, 3])
        bridge.clock.advance(2.0)
        self.assertTrue(stream.ended)  # the body ended, no reset
        self.assertTrue(stream.body.endswith(stalled(2, 1)))


class ServiceTests(EventsTestCase):
    def test_each_process_draws_its_own_boot_token(self) -> None:
        boots = {BridgeService(Config(), MemoryReactorClock()).events.boot for _ in range(3)}
        self.assertEqual(len(boots), 3)
        for boot in boots:
            self.assertRegex(boot, r"^[0-9a-f]{8}$")
        self.assertEqual(BridgeService(Config(), MemoryReactorClock(), boot="b7").events.boot,
                         "b7")

"""GET /events: unsolicited upstream lines as Server-Sent Events.

Subscriber-level tests run GET /events through a real BridgeSite HTTP channel
on a StringTransportWithDisconnection, so pausing (the socket's producer is
the subscriber), aborting and disconnecting are the real paths.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransportWithDisconnection

from bridge.http.events import KEEPALIVE, format_event
from tests.fakes_http import CLIENT_ADDRESS, Bridge, BridgeTestCase
from tests.http_harness import dechunk, split_response

CONNECTED = b": connected\n\n"


class FormatEventTests(BridgeTestCase):
    def test_plain_line(self) -> None:
        self.assertEqual(
            format_event("unsolicited", "0", 7, b"hello world"),
            b"event: unsolicited\nid: 0.7\ndata: hello world\n\n",
        )

    def test_kind_and_member_name(self) -> None:
        self.assertEqual(
            format_event("late_reply", "3", 12, b"+OK"),
            b"event: late_reply\nid: 3.12\ndata: +OK\n\n",
        )

    def test_empty_line(self) -> None:
        self.assertEqual(
            format_event("unsolicited", "0", 1, b""), b"event: unsolicited\nid: 0.1\ndata: \n\n"
        )

    def test_cr_is_escaped(self) -> None:
        self.assertEqual(
            format_event("unsolicited", "0", 1, b"a\rb"),
            b"event: unsolicited\nid: 0.1\ndata: a\\rb\n\n",
        )

    def test_backslash_is_escaped(self) -> None:
        # A literal backslash-r must stay distinguishable from an escaped CR.
        self.assertEqual(
            format_event("unsolicited", "0", 1, b"a\\rb\\"),
            b"event: unsolicited\nid: 0.1\ndata: a\\\\rb\\\\\n\n",
        )

    def test_cr_cannot_inject_fields_or_events(self) -> None:
        event = format_event("unsolicited", "0", 1, b"x\rdata: evil\r\revent: forged\rid: 99")
        self.assertNotIn(b"\r", event)
        self.assertEqual(event.count(b"\n\n"), 1)
        self.assertTrue(event.endswith(b"\n\n"))
        self.assertEqual(
            event.split(b"\n"),
            [
                b"event: unsolicited",
                b"id: 0.1",
                b"data: x\\rdata: evil\\r\\revent: forged\\rid: 99",
                b"",
                b"",
            ],
        )

    def test_invalid_utf8_is_replaced(self) -> None:
        self.assertEqual(
            format_event("unsolicited", "0", 2, b"caf\xe9 \xff"),
            "event: unsolicited\nid: 0.2\ndata: caf\ufffd \ufffd\n\n".encode(),
        )


class Stream:
    """One GET /events over a real HTTP channel of a BridgeSite."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        site = bridge.site()
        self.channel = site.buildProtocol(CLIENT_ADDRESS)
        assert self.channel is not None
        self.transport = StringTransportWithDisconnection(peerAddress=CLIENT_ADDRESS)
        self.transport.protocol = self.channel
        self.channel.makeConnection(self.transport)
        self.channel.dataReceived(b"GET /events HTTP/1.1\r\nHost: bridge\r\n\r\n")

    @property
    def status(self) -> bytes:
        return split_response(self.transport.value())[0]

    @property
    def headers(self) -> dict[bytes, list[bytes]]:
        return split_response(self.transport.value())[1]

    @property
    def body(self) -> bytes:
        """The event-stream bytes received so far (de-chunked)."""
        return dechunk(split_response(self.transport.value())[2])

    def pause(self) -> None:
        """The client stopped reading: the socket buffer is full."""
        assert self.transport.producer is not None
        self.transport.producer.pauseProducing()

    def resume(self) -> None:
        assert self.transport.producer is not None
        self.transport.producer.resumeProducing()

    def hang_up(self) -> None:
        self.transport.loseConnection()


def event(sequence: int, line: bytes, kind: str = "unsolicited") -> bytes:
    return format_event(kind, "0", sequence, line)


class SubscriberTests(BridgeTestCase):
    def test_stream_headers_and_greeting(self) -> None:
        bridge = self.bridge()
        stream = Stream(bridge)
        self.assertEqual(stream.status, b"HTTP/1.1 200 OK")
        headers = stream.headers
        self.assertEqual(headers[b"content-type"], [b"text/event-stream; charset=utf-8"])
        self.assertEqual(headers[b"cache-control"], [b"no-cache"])
        self.assertEqual(headers[b"x-accel-buffering"], [b"no"])
        self.assertEqual(stream.body, CONNECTED)
        self.assertEqual(bridge.events.subscribers, 1)
        self.assertFalse(stream.transport.disconnecting)

    def test_unsolicited_upstream_lines_are_published(self) -> None:
        bridge = self.bridge()
        stream = Stream(bridge)
        bridge.reply(b"first\r\nsecond\nthi\rrd\r\n")
        self.assertEqual(
            stream.body,
            CONNECTED + event(1, b"first") + event(2, b"second") + event(3, b"thi\rrd"),
        )
        self.assertEqual(bridge.pool.totals().unsolicited, 3)

    def test_late_replies_are_published_as_late_reply(self) -> None:
        bridge = self.bridge(reply_timeout=1.0)
        stream = Stream(bridge)
        pending = self.start_request(bridge, "POST", "/request", data=b"GET a\n")
        bridge.clock.advance(1.0)
        self.assertEqual(self.finish(bridge, pending).code, 504)
        bridge.reply(b"too late\r\n")
        self.assertEqual(stream.body, CONNECTED + event(1, b"too late", "late_reply"))

    def test_fan_out_to_every_subscriber(self) -> None:
        bridge = self.bridge()
        streams = [Stream(bridge) for _ in range(3)]
        self.assertEqual(bridge.events.subscribers, 3)
        bridge.reply(b"one\n")
        bridge.reply(b"two\n")
        expected = CONNECTED + event(1, b"one") + event(2, b"two")
        self.assertEqual([stream.body for stream in streams], [expected] * 3)
        self.assertEqual(bridge.events.published, 2)

    def test_disconnected_subscriber_is_removed(self) -> None:
        bridge = self.bridge()
        leaving, staying = Stream(bridge), Stream(bridge)
        bridge.reply(b"one\n")
        leaving.hang_up()
        self.assertEqual(bridge.events.subscribers, 1)
        before = leaving.transport.value()
        bridge.reply(b"two\n")
        self.assertEqual(leaving.transport.value(), before)
        self.assertEqual(staying.body, CONNECTED + event(1, b"one") + event(2, b"two"))

    def test_paused_subscriber_catches_up_on_resume(self) -> None:
        bridge = self.bridge(max_event_backlog=3)
        stream = Stream(bridge)
        stream.pause()
        bridge.reply(b"a\nb\nc\n")  # exactly max_event_backlog behind: kept
        self.assertEqual(stream.body, CONNECTED)
        stream.resume()
        self.assertEqual(stream.body, CONNECTED + event(1, b"a") + event(2, b"b") + event(3, b"c"))
        bridge.reply(b"d\n")
        self.assertTrue(stream.body.endswith(event(4, b"d")))
        self.assertEqual((bridge.events.subscribers, bridge.events.dropped), (1, 0))

    def test_slow_subscriber_is_dropped_at_max_backlog(self) -> None:
        bridge = self.bridge(max_event_backlog=3)
        slow, fast = Stream(bridge), Stream(bridge)
        slow.pause()
        bridge.reply(b"a\nb\nc\n")
        self.assertEqual(bridge.events.subscribers, 2)
        self.assertFalse(slow.transport.disconnecting)
        bridge.reply(b"d\n")  # one more than the backlog allows
        self.assertEqual((bridge.events.subscribers, bridge.events.dropped), (1, 1))
        self.assertTrue(slow.transport.disconnected)  # aborted, not flushed
        self.assertEqual(slow.body, CONNECTED)
        bridge.reply(b"e\n")
        self.assertEqual(
            fast.body,
            CONNECTED + b"".join(event(n, line) for n, line in enumerate(
                [b"a", b"b", b"c", b"d", b"e"], 1)),
        )

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

    def test_keepalive_timer_stops_with_the_last_subscriber(self) -> None:
        bridge = self.bridge(event_heartbeat=5.0)
        first, second = Stream(bridge), Stream(bridge)

        def keepalives() -> int:
            return sum(call.func.__name__ == "_keepalive"
                       for call in bridge.clock.getDelayedCalls())

        self.assertEqual(keepalives(), 1)
        first.hang_up()
        self.assertEqual(keepalives(), 1)
        second.hang_up()
        self.assertEqual(bridge.clock.getDelayedCalls(), [])
        self.assertEqual(bridge.events.subscribers, 0)

    def test_keepalives_count_towards_the_backlog(self) -> None:
        bridge = self.bridge(event_heartbeat=1.0, max_event_backlog=2)
        stream = Stream(bridge)
        stream.pause()
        bridge.clock.advance(1.0)
        bridge.clock.advance(1.0)
        self.assertEqual(bridge.events.subscribers, 1)
        bridge.clock.advance(1.0)
        self.assertEqual((bridge.events.subscribers, bridge.events.dropped), (0, 1))
        self.assertEqual(bridge.clock.getDelayedCalls(), [])

    def test_close_all_ends_every_stream(self) -> None:
        bridge = self.bridge()
        streams = [Stream(bridge), Stream(bridge)]
        bridge.events.close_all()
        self.assertEqual(bridge.events.subscribers, 0)
        self.assertEqual([s.transport.disconnected for s in streams], [True, True])

    def test_status_counts_subscribers(self) -> None:
        bridge = self.bridge(max_event_backlog=1)
        slow, _ = Stream(bridge), Stream(bridge)
        slow.pause()
        bridge.reply(b"a\nb\n")
        document = self.call(bridge, "GET", "/status").json()
        self.assertEqual(document["events"], {"subscribers": 1, "published": 2, "dropped": 1})


class EndToEndTests(BridgeTestCase):
    def test_events_then_the_client_leaves(self) -> None:
        bridge = self.bridge()
        stream = Stream(bridge)
        bridge.reply(b"PUBLISH news hello\r\n")
        self.assertEqual(stream.body, CONNECTED + event(1, b"PUBLISH news hello"))
        stream.hang_up()
        self.assertEqual(bridge.events.subscribers, 0)
        bridge.reply(b"nobody listens\r\n")
        self.assertEqual(stream.body, CONNECTED + event(1, b"PUBLISH news hello"))
        self.assertEqual(bridge.upstream.value(), b"")
        self.assertEqual(bridge.clock.getDelayedCalls(), [])

"""Write backpressure: each upstream connection's protocol is its transport's
push producer; a paused one is congested, takes no traffic while more than
write_low_water bytes wait, and the HTTP side answers 429 upstream_congested
when every connected member is congested."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bridge.twisted_private import unsent_bytes
from bridge.upstream.protocol import Counters, UpstreamProtocol
from tests.fakes_upstream import line_framing
from tests.http_harness import HarnessTestCase, Response, SocketTransport


def congested(high_water: int) -> dict[str, str]:
    return {
        "error": "upstream_congested",
        "message": f"every upstream connection has more than write_high_water ({high_water}) "
                   "bytes waiting to be sent; retry later",
    }


class Buffers:
    """Has the attributes of a socket transport that unsent_bytes reads."""

    def __init__(self, data: bytes = b"", offset: int = 0, temporary: int = 0) -> None:
        self.dataBuffer = data
        self.offset = offset
        self._tempDataLen = temporary
        self.socket = object()


class Layer:
    """A protocol-over-transport layer (e.g. TLS) in front of the socket."""

    def __init__(self, transport: object) -> None:
        self.transport = transport


class UnsentBytesTests(SynchronousTestCase):
    def test_socket_buffers(self) -> None:
        self.assertEqual(unsent_bytes(Buffers(b"0123456789", 3, 5)), 12)
        self.assertEqual(unsent_bytes(Buffers(b"0123456789", 10, 0)), 0)
        self.assertEqual(unsent_bytes(Buffers(b"", 0, 7)), 7)
        self.assertEqual(unsent_bytes(Buffers()), 0)

    def test_under_other_layers(self) -> None:
        self.assertEqual(unsent_bytes(Layer(Buffers(b"abc", 1, 10))), 12)
        self.assertEqual(unsent_bytes(Layer(Layer(Buffers(b"abcd", 0, 0)))), 4)

    def test_transports_without_buffers(self) -> None:
        self.assertEqual(unsent_bytes(object()), 0)
        self.assertEqual(unsent_bytes(Layer(object())), 0)


class ProducerTests(SynchronousTestCase):
    def connect(self) -> tuple[UpstreamProtocol, SocketTransport]:
        protocol = UpstreamProtocol(
            clock=Clock(), counters=Counters(), framing=line_framing(1000), stale_timeout=10,
            on_frame=lambda kind, frame, line: None, write_high_water=100, write_low_water=40,
        )
        transport = SocketTransport()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def test_registered_as_streaming_producer(self) -> None:
        protocol, transport = self.connect()
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)
        # The transport pauses it past write_high_water.
        self.assertEqual(transport.bufferSize, 100)

    def test_pause_marks_congested_until_low_water(self) -> None:
        protocol, transport = self.connect()
        self.assertFalse(protocol.is_congested())
        transport.kernel_full = True
        protocol.write_lines(b"x" * 100 + b"\r\n", 1)
        self.assertTrue(transport.producerPaused)
        self.assertTrue(protocol.paused)
        self.assertEqual(protocol.unsent(), 102)
        self.assertTrue(protocol.is_congested())
        transport.kernel_takes(61)  # 41 left
        self.assertTrue(protocol.is_congested())
        transport.kernel_takes(1)  # 40 left: at write_low_water
        self.assertFalse(protocol.is_congested())
        self.assertFalse(protocol.congested)
        self.assertEqual(protocol.unsent(), 40)

    def test_resume_clears_congestion(self) -> None:
        protocol, transport = self.connect()
        transport.kernel_full = True
        protocol.write_lines(b"z" * 60 + b"\n", 1)  # under high water, over low water
        self.assertFalse(protocol.is_congested())
        protocol.pauseProducing()
        self.assertFalse(protocol.is_congested())  # paused, but not past write_high_water
        protocol.write_lines(b"z" * 60 + b"\n", 1)  # 122 waiting
        self.assertTrue(protocol.is_congested())
        protocol.resumeProducing()
        self.assertFalse(protocol.is_congested())
        self.assertFalse(protocol.congested)

    def test_paused_with_little_unsent_is_not_congested(self) -> None:
        protocol, _ = self.connect()
        protocol.pauseProducing()
        self.assertTrue(protocol.paused)
        self.assertFalse(protocol.is_congested())  # 0 bytes waiting <= write_low_water

    def test_drained_buffer_resumes(self) -> None:
        protocol, transport = self.connect()
        transport.kernel_full = True
        protocol.write_lines(b"y" * 200 + b"\n", 1)
        self.assertTrue(protocol.is_congested())
        transport.kernel_takes(201)
        self.assertFalse(transport.producerPaused)
        self.assertFalse(protocol.paused)
        self.assertFalse(protocol.congested)

    def test_one_iteration_may_send_a_whole_high_water_mark(self) -> None:
        """Twisted sends at most SEND_LIMIT (128 KiB) per reactor iteration; with
        many bulk requests per iteration that alone would fill the buffer."""
        protocol = UpstreamProtocol(
            clock=Clock(), counters=Counters(), framing=line_framing(1000), stale_timeout=10,
            on_frame=lambda kind, frame, line: None, write_high_water=4 * 1024 * 1024,
            write_low_water=1024,
        )
        transport = SocketTransport()
        transport.SEND_LIMIT = 128 * 1024  # type: ignore[attr-defined]
        transport.bufferSize = 65536  # type: ignore[attr-defined]
        protocol.makeConnection(transport)
        self.assertEqual(transport.SEND_LIMIT, 4 * 1024 * 1024)  # type: ignore[attr-defined]
        self.assertEqual(transport.bufferSize, 65536)  # also the recv() size: left alone

    def test_stop_producing_keeps_the_connection(self) -> None:
        protocol, transport = self.connect()
        protocol.stopProducing()
        self.assertNoResult(protocol.when_closed())
        self.assertTrue(transport.connected)


class CongestionTests(HarnessTestCase):
    def assertCongested(self, response: Response, high_water: int = 100) -> None:
        self.assertJSONResponse(response, 429, congested(high_water))
        self.assertEqual(response.headers[b"retry-after"], [b"1"])

    def test_congested_member_refuses_with_429(self) -> None:
        harness = self.harness(write_high_water=100, write_low_water=40)
        upstream = harness.upstream
        upstream.kernel_full = True
        big = b"x" * 99 + b"\n"  # 101 bytes with CRLF
        self.assertJSONResponse(harness.call("POST", "/send", big), 202, {"sent": 1})
        self.assertTrue(upstream.producerPaused)
        self.assertCongested(harness.call("POST", "/send", b"more\n"))
        self.assertCongested(harness.call("POST", "/request", b"GET a\n"))
        self.assertCongested(harness.call(
            "POST", "/send", b'{"lines": ["a"]}', {"Content-Type": "application/json"}))
        self.assertEqual(upstream.value(), b"x" * 99 + b"\r\n")
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        # Congested is not down: the bridge stays ready.
        self.assertEqual(harness.call("GET", "/readyz").status, 200)
        status = harness.call("GET", "/status").json()
        self.assertEqual((status["unsent_bytes"], status["state"], status["congested"]),
                         (101, "connected", 1))
        # Still above write_low_water: still congested.
        upstream.kernel_takes(60)
        self.assertCongested(harness.call("POST", "/send", b"more\n"))
        self.assertEqual(harness.call("GET", "/status").json()["congested"], 1)
        # At write_low_water it takes traffic again, before the transport resumes it.
        upstream.kernel_takes(1)
        self.assertTrue(upstream.producerPaused)
        self.assertJSONResponse(harness.call("POST", "/send", b"more\n"), 202, {"sent": 1})
        self.assertEqual(upstream.value(), b"x" * 99 + b"\r\nmore\r\n")
        self.assertEqual(harness.call("GET", "/status").json()["congested"], 0)
        upstream.kernel_takes(1000)
        self.assertFalse(upstream.producerPaused)
        waiting = harness.start("POST", "/request", b"GET a\n")
        upstream.peer_sends(b"1\r\n")
        self.assertJSONResponse(waiting.response(), 200, {"replies": ["1"]})

    def test_traffic_goes_to_the_uncongested_member(self) -> None:
        harness = self.harness(pool_size=2, write_high_water=100, write_low_water=40)
        first, second = harness.upstreams
        first.kernel_full = True
        second.kernel_full = True
        # Round robin: the first /send goes to member 0 and congests it.
        self.assertEqual(harness.call("POST", "/send", b"a" * 120 + b"\n").status, 202)
        self.assertEqual(first.value(), b"a" * 120 + b"\r\n")
        self.assertTrue(first.producerPaused)
        for number in range(3):
            self.assertEqual(harness.call("POST", "/send", b"b%d\n" % number).status, 202)
        waiting = harness.start("POST", "/request", b"GET c\n")
        self.assertEqual(first.value(), b"a" * 120 + b"\r\n")
        self.assertEqual(second.value(), b"b0\r\nb1\r\nb2\r\nGET c\r\n")
        second.peer_sends(b"C\r\n")
        self.assertJSONResponse(waiting.response(), 200, {"replies": ["C"]})
        # Both congested: 429.
        self.assertEqual(harness.call("POST", "/send", b"d" * 100 + b"\n").status, 202)
        self.assertTrue(second.producerPaused)
        self.assertCongested(harness.call("POST", "/send", b"e\n"))
        self.assertCongested(harness.call("POST", "/request", b"e\n"))
        # The first drains: traffic goes there again.
        first.kernel_takes(1000)
        self.assertEqual(harness.call("POST", "/send", b"f\n").status, 202)
        self.assertEqual(first.value(), b"a" * 120 + b"\r\nf\r\n")
        self.assertEqual(second.value(), b"b0\r\nb1\r\nb2\r\nGET c\r\n" + b"d" * 100 + b"\r\n")

    def test_a_disconnected_member_is_not_congested_but_unavailable(self) -> None:
        harness = self.harness(pool_size=2, connect=1, write_high_water=100,
                               write_low_water=40)
        harness.upstream.kernel_full = True
        self.assertEqual(harness.call("POST", "/send", b"a" * 120 + b"\n").status, 202)
        # One member connected and congested, the other not connected: 429, not 503.
        self.assertCongested(harness.call("POST", "/send", b"b\n"))

    def test_a_new_connection_starts_uncongested(self) -> None:
        harness = self.harness(write_high_water=100, write_low_water=40, backoff_initial=1)
        harness.upstream.kernel_full = True
        self.assertEqual(harness.call("POST", "/send", b"a" * 120 + b"\n").status, 202)
        self.assertCongested(harness.call("POST", "/send", b"b\n"))
        harness.upstream.peer_closes()
        self.assertEqual(harness.call("POST", "/send", b"b\n").status, 503)
        harness.reactor.advance(2)
        fresh = harness.connect_upstream()
        self.assertJSONResponse(harness.call("POST", "/send", b"b\n"), 202, {"sent": 1})
        self.assertEqual(fresh.value(), b"b\r\n")

    def test_many_small_writes_congest_too(self) -> None:
        harness = self.harness(write_high_water=100, write_low_water=40)
        harness.upstream.kernel_full = True
        accepted = 0
        while True:
            response = harness.call("POST", "/send", b"0123456789\n")
            if response.status != 202:
                break
            accepted += 1
        self.assertCongested(response)
        # 12 bytes a line: the ninth (108 bytes unsent) passed write_high_water.
        self.assertEqual(accepted, 9)
        self.assertEqual(harness.upstream.value(), b"0123456789\r\n" * 9)

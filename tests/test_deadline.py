"""request_timeout (slowloris guard) and body limits on the served HTTP side:
the bridge's real BridgeSite, fed raw bytes over a StringTransport, with the
Clock as the site's reactor, for hot routes, Klein's routes and chunked bodies."""

from __future__ import annotations

from tests.http_harness import (
    Client,
    Harness,
    HarnessTestCase,
    chunked,
    http_request,
    timed_out,
    too_large,
)

TIMEOUT = 10.0
ELEVEN = "the body is 11 bytes; max_body_bytes is 10"


#: Requests cut short, each with the lane it is on.
PARTIAL = [
    b"P",
    b"POST /send HTTP/1.1\r\n",
    b"POST /send HTTP/1.1\r\nHost: b\r\nContent-Length: 10\r\n",
    b"POST /send HTTP/1.1\r\nHost: b\r\nContent-Length: 10\r\n\r\nabc\n",
    b"GET /status HTTP/1.1\r\nHost: b\r\n",
    b"POST /send HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabc\n\r\n",
    b"POST /status HTTP/1.1\r\nHost: b\r\nContent-Length: 10\r\n\r\nabc",
]


class DeadlineTests(HarnessTestCase):
    def harness(self, connect: int | None = None, **values: object) -> Harness:
        values.setdefault("request_timeout", TIMEOUT)
        return super().harness(connect, **values)

    def assertOpen(self, client: Client) -> None:
        self.assertFalse(client.closing)

    def assertClosedAfter(self, harness: Harness, client: Client, seconds: float,
                          answered: bool = False) -> None:
        """Still open ``seconds - 0.01`` from now; closed at ``seconds``,
        with the 408 added to what was written if ``answered``; aborted a
        second later."""
        before = client.transport.value()
        harness.reactor.advance(seconds - 0.01)
        self.assertFalse(client.closing)
        self.assertEqual(client.transport.value(), before)
        harness.reactor.advance(0.01)
        answer = timed_out(harness.reactor) if answered else b""
        self.assertEqual(client.transport.value(), before + answer)
        self.assertTrue(client.closing)
        # A client that does not read its 408 either is cut off a second later.
        self.assertFalse(client.transport.disconnected)
        harness.reactor.advance(1)
        self.assertTrue(client.transport.disconnected)

    def test_partial_requests_get_408(self) -> None:
        harness = self.harness()
        for data in PARTIAL:
            with self.subTest(data=data):
                client = harness.client()
                client.send(data)
                self.assertClosedAfter(harness, client, TIMEOUT, answered=True)
        self.assertEqual(harness.upstream.value(), b"")
        self.assertEqual(harness.service.lifecycle.inflight, 0)

    def test_trickling_does_not_extend_the_deadline(self) -> None:
        harness = self.harness()
        client = harness.client()
        request = http_request("POST", "/send", b"x\n")
        for byte in request[:9]:
            client.send(bytes([byte]))
            harness.reactor.advance(1)
        self.assertOpen(client)
        client.send(request[9:10])
        self.assertClosedAfter(harness, client, 1, answered=True)
        self.assertEqual(harness.upstream.value(), b"")

    def test_trickling_a_chunked_body(self) -> None:
        harness = self.harness()
        client = harness.client()
        client.send(http_request("POST", "/send", None, {"Transfer-Encoding": "chunked"}))
        for _ in range(5):
            harness.reactor.advance(1)
            client.send(b"1\r\na\r\n")
        self.assertClosedAfter(harness, client, TIMEOUT - 5, answered=True)
        self.assertEqual(harness.upstream.value(), b"")

    def test_idle_connection_is_closed_without_an_answer(self) -> None:
        harness = self.harness()
        client = harness.client()
        self.assertClosedAfter(harness, client, TIMEOUT)
        self.assertEqual(client.transport.value(), b"")

    def test_request_in_time_is_answered_and_the_deadline_rearmed(self) -> None:
        harness = self.harness()
        client = harness.client()
        harness.reactor.advance(TIMEOUT - 1)
        client.send(http_request("POST", "/send", b"a\n"))
        self.assertEqual([r.status for r in client.responses()], [202])
        harness.reactor.advance(TIMEOUT - 1)  # idle since the answer, not since connecting
        self.assertOpen(client)
        client.send(http_request("POST", "/send", b"b\n"))
        self.assertEqual([r.status for r in client.responses()], [202, 202])
        self.assertEqual(harness.upstream.value(), b"a\r\nb\r\n")
        self.assertClosedAfter(harness, client, TIMEOUT)
        self.assertEqual([r.status for r in client.responses()], [202, 202])

    def test_rearmed_after_a_chunked_request(self) -> None:
        harness = self.harness()
        client = harness.client()
        harness.reactor.advance(3)
        client.send(chunked("POST", "/send", b"a\n"))
        harness.reactor.advance(TIMEOUT - 1)
        client.send(http_request("GET", "/status"))
        self.assertEqual([r.status for r in client.responses()], [202, 200])
        self.assertClosedAfter(harness, client, TIMEOUT)

    def test_waiting_for_replies_is_not_a_slow_client(self) -> None:
        harness = self.harness(reply_timeout=30)
        client = harness.start("POST", "/request", b"GET a\n")
        other = harness.client()
        other.send(chunked("POST", "/request", b"GET b\n"))
        harness.reactor.advance(25)
        self.assertOpen(client)
        self.assertOpen(other)
        harness.upstream.peer_sends(b"A\r\nB\r\n")
        self.assertJSONResponse(client.response(), 200, {"replies": ["A"]})
        self.assertJSONResponse(other.response(), 200, {"replies": ["B"]})
        self.assertClosedAfter(harness, client, TIMEOUT)
        self.assertTrue(other.closing)  # idle since its answer too

    def test_pipelined_requests(self) -> None:
        harness = self.harness()
        client = harness.client()
        client.send(http_request("POST", "/send", b"a\n") + http_request("POST", "/send", b"b\n")
                    + b"POST /send HTTP/1.1\r\n")
        self.assertEqual([r.status for r in client.responses()], [202, 202])
        answered = client.transport.value()
        self.assertClosedAfter(harness, client, TIMEOUT, answered=True)
        self.assertTrue(client.transport.value().startswith(answered))
        self.assertEqual(harness.upstream.value(), b"a\r\nb\r\n")


    def test_slow_head_then_slow_chunked_body(self) -> None:
        harness = self.harness()
        client = harness.client()
        head = http_request("POST", "/send", None, {"Transfer-Encoding": "chunked"})
        client.send(head[:-2])
        harness.reactor.advance(TIMEOUT - 1)
        client.send(head[-2:] + b"1\r\na\r\n")  # the head is complete; the body is late
        self.assertClosedAfter(harness, client, 1, answered=True)
        self.assertEqual(harness.upstream.value(), b"")

    def test_slow_head_of_another_route(self) -> None:
        harness = self.harness()
        client = harness.client()
        harness.reactor.advance(TIMEOUT - 2)
        client.send(http_request("POST", "/status", None, {"Content-Length": "5"}) + b"ab")
        self.assertClosedAfter(harness, client, 2, answered=True)


class BodyLimitTests(HarnessTestCase):
    def test_declared_length_over_the_limit(self) -> None:
        harness = self.harness(max_body_bytes=10)
        for method, path in (("POST", "/send"), ("POST", "/request"), ("POST", "/status"),
                             ("PUT", "/send")):
            with self.subTest(path=path):
                client = harness.client()
                # Only the head: the answer must not wait for the body.
                client.send(http_request(method, path, None, {"Content-Length": "11"}))
                self.assertEqual(client.transport.value(),
                                 too_large(harness.reactor, ELEVEN))
                self.assertTrue(client.closing)
                # Even if more arrived before the close took effect, it is ignored.
                client.channel.dataReceived(
                    b"0123456789\n" + http_request("POST", "/send", b"x\n"))
                self.assertEqual(client.transport.value(),
                                 too_large(harness.reactor, ELEVEN))
        self.assertEqual(harness.upstream.value(), b"")
        self.assertEqual(harness.service.lifecycle.inflight, 0)

    def test_huge_declared_length(self) -> None:
        harness = self.harness()
        client = harness.client()
        client.send(http_request("POST", "/send", None, {"Content-Length": "99999999999"}))
        self.assertEqual(
            client.transport.value(),
            too_large(harness.reactor, "the body is 99999999999 bytes; max_body_bytes is 1048576"),
        )
        self.assertEqual(harness.upstream.value(), b"")

    def test_at_the_limit(self) -> None:
        harness = self.harness(max_body_bytes=10)
        self.assertJSONResponse(harness.call("POST", "/send", b"012345678\n"), 202, {"sent": 1})
        self.assertEqual(harness.upstream.value(), b"012345678\r\n")

    def test_chunked_body_is_cut_off(self) -> None:
        harness = self.harness(max_body_bytes=10)
        client = harness.client()
        client.send(http_request("POST", "/send", None, {"Transfer-Encoding": "chunked"}))
        client.send(b"6\r\nabcde\n\r\n")
        self.assertEqual(client.transport.value(), b"")
        client.send(b"5\r\nfghi\n\r\n")  # 11 bytes
        refused = too_large(harness.reactor, "the body is over max_body_bytes (10 bytes)")
        self.assertEqual(client.transport.value(), refused)
        self.assertTrue(client.closing)
        client.channel.dataReceived(b"1\r\nj\r\n0\r\n\r\n")
        self.assertEqual(client.transport.value(), refused)
        self.assertEqual(harness.upstream.value(), b"")

    def test_chunked_body_at_the_limit(self) -> None:
        harness = self.harness(max_body_bytes=10)
        client = harness.client()
        client.send(http_request("POST", "/send", None, {"Transfer-Encoding": "chunked"})
                    + b"6\r\nabcde\n\r\n4\r\nfgh\n\r\n0\r\n\r\n")
        self.assertJSONResponse(client.response(), 202, {"sent": 2})
        self.assertEqual(harness.upstream.value(), b"abcde\r\nfgh\r\n")

    def test_413_is_counted(self) -> None:
        harness = self.harness(max_body_bytes=10)
        harness.client().send(http_request("POST", "/send", None, {"Content-Length": "11"}))
        client = harness.client()
        client.send(http_request("POST", "/send", None, {"Transfer-Encoding": "chunked"})
                    + b"b\r\n0123456789\n\r\n")
        self.assertTrue(client.closing)
        metrics = harness.call("GET", "/metrics").body
        self.assertIn(b'bridge_http_requests_total{code="413",route="/send"} 2.0\n', metrics)


"""The HTTP fast lane (bridge.http.fasthttp) on the bridge's real BridgeSite.

Raw HTTP bytes go into ``site.buildProtocol(...)`` over a StringTransport;
the whole bridge (Gate, API, Lifecycle, Metrics, pool, line protocol) runs
for real on a MemoryReactorClock, its upstream a StringTransport.  Most
hand-off tests are differential: the same bytes go to a bridge with the fast
lane and to one without it, and everything a client or the upstream could
observe must be the same, apart from Date and Server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from bridge.http.fasthttp import FastChannel
from bridge.http.web import DeadlineChannel, too_large_response
from tests.fakes_fasthttp import (
    DATE,
    Client,
    Side,
    answer,
    http,
    json_answer,
    normalised,
    served_by_twisted_web,
    split_answers,
)
from tests.fakes_http import timed_out

SENT_1 = json_answer(b"202 Accepted", {"sent": 1})
HEALTHY = json_answer(b"200 OK", {"status": "ok"})
READY = json_answer(
    b"200 OK", {"ready": True, "state": "connected", "connected": 1, "pool_size": 1}
)


class FastLaneTestCase(SynchronousTestCase):
    def side(self, fast_lane: bool = True, **values: Any) -> Side:
        side = Side(fast_lane, **values)
        self.addCleanup(self.close, side)
        return side

    def close(self, side: Side) -> None:
        """End everything; no timer of any kind may be left behind."""
        side.close()
        self.assertEqual(side.reactor.getDelayedCalls(), [])

    def assertFastLane(self, client: Client) -> None:
        """The connection is still the fast lane's (never handed off)."""
        self.assertIsInstance(client.channel, FastChannel)
        self.assertIsNone(client.channel._delegate)


# -- 1. what the fast lane answers itself -------------------------------------------


class FastPathTests(FastLaneTestCase):
    def test_send_keeps_the_connection_open(self) -> None:
        side = self.side()
        client = side.client()
        client.send(http("POST", "/send", b"a\nb\n"))
        self.assertEqual(client.received, json_answer(b"202 Accepted", {"sent": 2}))
        self.assertEqual(side.written, b"a\r\nb\r\n")
        self.assertFalse(client.closing)
        client.send(http("POST", "/send", b"c"))
        self.assertEqual(
            client.received, json_answer(b"202 Accepted", {"sent": 2}) + SENT_1
        )
        self.assertEqual(side.written, b"a\r\nb\r\nc\r\n")
        self.assertFalse(client.closing)
        self.assertFastLane(client)
        self.assertEqual(side.inflight, 0)
        self.assertEqual(side.service.http_counts, {"requests": 2})
        self.assertTrue(side.metric('bridge_http_requests_total{code="202",route="/send"} 2.0'))

    def test_request_is_answered_when_the_upstream_replies(self) -> None:
        side = self.side()
        client = side.client()
        client.send(http("POST", "/request", b"GET a\nGET b\n"))
        self.assertEqual((client.received, side.written), (b"", b"GET a\r\nGET b\r\n"))
        self.assertEqual(side.inflight, 1)
        side.reply(b"A\r\n")
        self.assertEqual(client.received, b"")
        side.reply(b"B\r\n")
        self.assertEqual(client.received, json_answer(b"200 OK", {"replies": ["A", "B"]}))
        self.assertEqual(side.inflight, 0)
        self.assertFalse(client.closing)
        self.assertTrue(side.metric('bridge_replies_total{outcome="ok"} 1.0'))
        self.assertTrue(
            side.metric('bridge_http_requests_total{code="200",route="/request"} 1.0')
        )

    def test_request_as_text(self) -> None:
        side = self.side()
        client = side.client()
        client.send(http("POST", "/request", b"GET a\n", "Accept: text/plain"))
        side.reply(b"A\r\n")
        self.assertEqual(
            client.received,
            answer(b"200 OK", b"A\r\n", [(b"Content-Type", b"text/plain; charset=utf-8")]),
        )

    def test_probes(self) -> None:
        side = self.side()
        client = side.client()
        client.send(http("GET", "/healthz"))
        client.send(http("GET", "/readyz"))
        self.assertEqual(client.received, HEALTHY + READY)
        self.assertFalse(client.closing)
        self.assertFastLane(client)
        self.assertEqual(side.inflight, 0)

    def test_readyz_while_the_upstream_is_down(self) -> None:
        side = self.side()
        side.upstream.loseConnection()
        client = side.client()
        client.send(http("GET", "/readyz"), http("GET", "/healthz"))
        self.assertEqual(
            client.received,
            json_answer(
                b"503 Service Unavailable",
                {"ready": False, "state": "waiting", "retry_in": 1.0, "connected": 0,
                 "pool_size": 1},
            ) + HEALTHY,
        )

    def test_send_while_the_upstream_is_down(self) -> None:
        side = self.side(connect=False)
        client = side.client()
        client.send(http("POST", "/send", b"a\n"))
        self.assertEqual(
            client.received,
            json_answer(
                b"503 Service Unavailable",
                {"error": "upstream_unavailable",
                 "message": "the upstream tcp:127.0.0.1:7000 is not connected (connecting "
                            "now); nothing was sent"},
                (b"Retry-After", b"1"),
            ),
        )
        self.assertEqual((side.written, side.inflight), (b"", 0))

    def test_connection_close_is_honoured(self) -> None:
        side = self.side()
        client = side.client()
        client.send(http("POST", "/send", b"a\n", "Connection: close"))
        self.assertEqual(
            client.received,
            answer(b"202 Accepted", b'{"sent": 1}',
                   [(b"Connection", b"close"), (b"Content-Type", b"application/json")]),
        )
        self.assertTrue(client.closing)
        client.send(http("POST", "/send", b"b\n"))  # after the close: ignored
        self.assertEqual(side.written, b"a\r\n")
        self.assertEqual(client.received.count(b"HTTP/1.1"), 1)

    def test_connection_close_on_a_waiting_request(self) -> None:
        side = self.side()
        client = side.client()
        client.send(http("POST", "/request", b"q\n", "Connection: Close"))
        self.assertFalse(client.closing)
        side.reply(b"r\r\n")
        self.assertEqual(
            client.received,
            answer(b"200 OK", b'{"replies": ["r"]}',
                   [(b"Connection", b"close"), (b"Content-Type", b"application/json")]),
        )
        self.assertTrue(client.closing)

    def test_request_timeout_from_the_query_string(self) -> None:
        side = self.side()
        client = side.client()
        client.send(http("POST", "/request?timeout=0.5", b"q\n"))
        side.reactor.advance(0.49)
        self.assertEqual(client.received, b"")
        side.reactor.advance(0.01)
        self.assertEqual(
            client.received,
            json_answer(b"504 Gateway Time-out",
                        {"error": "reply_timeout",
                         "message": "the upstream sent 0 of 1 replies within 0.5 s",
                         "replies": []}),
        )
        self.assertEqual(side.inflight, 0)
        self.assertTrue(side.metric('bridge_replies_total{outcome="timeout"} 1.0'))
        # The slot stays: the late reply is discarded, the next request gets its own.
        side.reply(b"late\r\n")
        client.send(http("POST", "/request", b"q2\n"))
        side.reply(b"mine\r\n")
        self.assertTrue(client.received.endswith(b'{"replies": ["mine"]}'))
        self.assertEqual(side.service.pool.totals().late_replies, 1)

    def test_invalid_timeout_in_the_query_string(self) -> None:
        side = self.side()
        client = side.client()
        client.send(http("POST", "/request?timeout=0", b"q\n"))
        self.assertEqual(
            client.received,
            json_answer(b"400 Bad Request",
                        {"error": "invalid_timeout",
                         "message": "timeout must be positive, got '0'"}),
        )
        self.assertEqual(side.written, b"")

    def test_token_is_checked(self) -> None:
        side = self.side(token="s3cret")
        client = side.client()
        client.send(
            http("POST", "/send", b"a\n"),
            http("POST", "/send", b"b\n", "Authorization: Bearer s3cret"),
            http("GET", "/healthz"),
        )
        unauthorized = json.dumps(
            {"error": "unauthorized",
             "message": "this route needs 'Authorization: Bearer <token>'"}
        ).encode()
        self.assertEqual(
            client.received,
            answer(b"401 Unauthorized", unauthorized,
                   [(b"WWW-Authenticate", b'Bearer realm="bridge"'),
                    (b"Content-Type", b"application/json")])
            + SENT_1 + HEALTHY,
        )
        self.assertEqual(side.written, b"b\r\n")

    def test_shutting_down_refuses_and_closes(self) -> None:
        side = self.side()
        side.service.lifecycle.shutdown()
        client = side.client()
        client.send(http("POST", "/send", b"a\n"), http("GET", "/healthz"))
        body = json.dumps({"error": "shutting_down",
                           "message": "the bridge is shutting down and takes no new work"})
        self.assertEqual(
            client.received,
            answer(b"503 Service Unavailable", body.encode(),
                   [(b"Connection", b"close"), (b"Content-Type", b"application/json"),
                    (b"Retry-After", b"1")]),
        )  # and the probe after it is never read
        self.assertTrue(client.closing)
        self.assertEqual((side.written, side.inflight), (b"", 0))

    def test_shutting_down_with_connection_close_sends_one_connection_header(self) -> None:
        side = self.side()
        side.service.lifecycle.shutdown()
        client = side.client()
        client.send(http("POST", "/request", b"q\n", "Connection: close"))
        self.assertEqual(client.received.count(b"\r\nConnection: close\r\n"), 1)
        self.assertEqual(client.received.lower().count(b"\r\nconnection:"), 1)
        self.assertTrue(client.closing)

    def test_date_follows_the_site_clock(self) -> None:
        side = self.side()
        client = side.client()
        side.reactor.advance(21)
        client.send(http("GET", "/healthz"))
        self.assertEqual(
            client.received,
            json_answer(b"200 OK", {"status": "ok"}, date=b"Tue, 14 Nov 2023 22:13:41 GMT"),
        )


# -- 2. pipelining ------------------------------------------------------------------


class PipeliningTests(FastLaneTestCase):
    def test_answers_in_request_order_one_at_a_time(self) -> None:
        """A /request, a /send and a probe in one read: the /send's line is
        written only once the /request is answered; answers keep their order."""
        side = self.side()
        client = side.client()
        client.send(
            http("POST", "/request", b"q\n")
            + http("POST", "/send", b"s\n")
            + http("GET", "/healthz")
        )
        self.assertEqual((side.written, client.received), (b"q\r\n", b""))
        side.reply(b"r\r\n")
        self.assertEqual(side.written, b"q\r\ns\r\n")
        self.assertEqual(
            client.received,
            json_answer(b"200 OK", {"replies": ["r"]}) + SENT_1 + HEALTHY,
        )
        self.assertEqual(side.inflight, 0)
        self.assertFastLane(client)

    def test_two_requests_in_a_row(self) -> None:
        side = self.side()
        client = side.client()
        client.send(http("POST", "/request", b"q1\n") + http("POST", "/request", b"q2\n"))
        self.assertEqual(side.written, b"q1\r\n")
        side.reply(b"r1\r\n")
        self.assertEqual(side.written, b"q1\r\nq2\r\n")
        side.reply(b"r2\r\n")
        self.assertEqual(
            client.received,
            json_answer(b"200 OK", {"replies": ["r1"]})
            + json_answer(b"200 OK", {"replies": ["r2"]}),
        )

    def test_many_sends_in_one_read(self) -> None:
        side = self.side()
        client = side.client()
        client.send(b"".join(http("POST", "/send", b"%d\n" % n) for n in range(50)))
        self.assertEqual(client.received, SENT_1 * 50)
        self.assertEqual(side.written, b"".join(b"%d\r\n" % n for n in range(50)))

    def test_requests_split_anywhere(self) -> None:
        data = http("POST", "/send", b"a\r\nb") + http("GET", "/readyz")
        for cut in range(1, len(data)):
            with self.subTest(cut=cut):
                side = Side()
                client = side.client()
                client.send(data[:cut], data[cut:])
                self.assertEqual(
                    client.received, json_answer(b"202 Accepted", {"sent": 2}) + READY
                )
                self.assertEqual(side.written, b"a\r\nb\r\n")
                self.close(side)

    def test_reading_pauses_while_a_pipelining_client_is_far_ahead(self) -> None:
        side = self.side()
        client = side.client()
        client.send(http("POST", "/request", b"q\n"))
        many = http("POST", "/send", b"s\n") * 300  # more than 16 KiB
        client.send(many[:8000])
        self.assertEqual(client.transport.producerState, "producing")
        client.send(many[8000:])
        self.assertEqual(client.transport.producerState, "paused")
        side.reply(b"r\r\n")
        self.assertEqual(client.transport.producerState, "producing")
        self.assertEqual(client.received.count(b"HTTP/1.1 202 Accepted"), 300)
        self.assertEqual(side.written, b"q\r\n" + b"s\r\n" * 300)


# -- 3. hand-off to twisted.web: differential ------------------------------------------


@dataclass
class Observed:
    """Everything a client and the upstream saw, normalised."""

    answers: bytes
    closing: bool  # the server closed the connection before the deadline
    upstream: bytes
    counts: list[str]  # request and reply counters
    raw: bytes
    handed_off: bool  # the connection ended up twisted.web's


def closed(client: Client) -> None:
    """A socket's close completes at once (the answers are small): the
    protocol hears connectionLost, as it would from a real transport."""
    if client.closing:
        client.lose()


def drive(side: Side, pieces: list[bytes], waits: list[bool] | None = None) -> Observed:
    """Feed ``pieces`` to one new connection.  After each piece, while reply
    lines are awaited, either the upstream replies (r1, r2...) or, when
    ``waits`` says so, a second passes.  Then the deadline is let expire."""
    client = side.client()
    choices = iter(waits or [])
    replies = 0
    for piece in pieces:
        if client.gone:
            break  # a closed socket reads nothing more
        client.send(piece)
        for _ in range(60):
            closed(client)
            if not side.awaited():
                break
            if next(choices, False):
                side.reactor.advance(1.0)
            else:
                replies += 1
                side.reply(b"r%d\r\n" % replies)
    closing = client.closing
    side.reactor.advance(side.config.request_timeout + 2)
    closed(client)
    counts = [
        line for line in side.service.metrics.render().decode().splitlines()
        if line.startswith(("bridge_http_requests_total", "bridge_replies_total"))
    ]
    counts.append(f"http_counts {side.service.http_counts}")
    return Observed(
        normalised(client.received), closing, side.written, counts, client.received,
        getattr(client.channel, "_delegate", None) is not None,
    )


class DifferentialTestCase(FastLaneTestCase):
    def both(
        self, pieces: bytes | list[bytes], waits: list[bool] | None = None, **values: Any
    ) -> tuple[Observed, Observed]:
        if isinstance(pieces, bytes):
            pieces = [pieces]
        fast = drive(self.side(True, **values), pieces, waits)
        web = drive(self.side(False, **values), pieces, waits)
        return fast, web

    def assertSame(self, fast: Observed, web: Observed) -> None:
        self.assertEqual(
            (fast.answers, fast.closing, fast.upstream, fast.counts),
            (web.answers, web.closing, web.upstream, web.counts),
        )

    def assertBadRequest(self, observed: Observed) -> None:
        """twisted.web's answer to malformed HTTP: one 400, then the close."""
        self.assertEqual(status_lines(observed), [b"HTTP/1.1 400 Bad Request"])
        self.assertTrue(observed.closing)

    def handed_off(self, pieces: bytes | list[bytes], **values: Any) -> Observed:
        """Same observations with and without the fast lane, which handed the
        connection to twisted.web before answering anything itself."""
        fast, web = self.both(pieces, **values)
        self.assertSame(fast, web)
        self.assertTrue(fast.handed_off)
        self.assertNotIn(b"\r\nDate: " + DATE, fast.raw)  # no answer of its own
        return fast


def status_lines(observed: Observed) -> list[bytes]:
    return [status for status, _, _ in split_answers(observed.answers)]


def body_of(observed: Observed) -> Any:
    """The JSON body of the last answer."""
    return json.loads(split_answers(observed.answers)[-1][2])


class HandOffTests(DifferentialTestCase):
    def test_other_routes(self) -> None:
        status = self.handed_off(http("GET", "/status"))
        self.assertEqual(status_lines(status), [b"HTTP/1.1 200 OK"])
        self.assertEqual(body_of(status)["state"], "connected")
        missing = self.handed_off(http("GET", "/nope"))
        self.assertEqual(
            missing.answers,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 51\r\n"
            b"Content-Type: application/json\r\n\r\n"
            b'{"error": "not_found", "message": "no route /nope"}',
        )

    def test_wrong_method_on_a_hot_route(self) -> None:
        observed = self.handed_off(http("PUT", "/send", b"a\n"))
        self.assertEqual(status_lines(observed), [b"HTTP/1.1 405 Method Not Allowed"])
        self.assertIn(b"\r\nAllow: POST\r\n", observed.answers)
        self.assertEqual(body_of(observed)["error"], "method_not_allowed")
        self.assertEqual(observed.upstream, b"")
        probe = self.handed_off(http("POST", "/healthz", b""))
        self.assertIn(b"\r\nAllow: GET, HEAD\r\n", probe.answers)

    def test_head_of_a_probe(self) -> None:
        observed = self.handed_off(http("HEAD", "/healthz"))
        self.assertEqual(status_lines(observed), [b"HTTP/1.1 200 OK"])
        self.assertTrue(observed.answers.endswith(b"\r\n\r\n"))

    def test_lowercase_method(self) -> None:
        observed = self.handed_off(http("post", "/send", b"a\n"))
        self.assertEqual(status_lines(observed), [b"HTTP/1.1 202 Accepted"])

    def test_chunked_body(self) -> None:
        observed = self.handed_off(
            http("POST", "/send", None, "Transfer-Encoding: chunked")
            + b"4\r\nabc\n\r\n2\r\nde\r\n0\r\n\r\n"
        )
        self.assertEqual(status_lines(observed), [b"HTTP/1.1 202 Accepted"])
        self.assertEqual(observed.upstream, b"abc\r\nde\r\n")

    def test_expect_100_continue(self) -> None:
        head = http("POST", "/send", None, "Expect: 100-continue", "Content-Length: 2")
        observed = self.handed_off([head, b"a\n"])
        self.assertEqual(
            status_lines(observed), [b"HTTP/1.1 100 Continue", b"HTTP/1.1 202 Accepted"]
        )
        self.assertEqual(observed.upstream, b"a\r\n")

    def test_http_1_0(self) -> None:
        observed = self.handed_off(
            http("POST", "/send", b"a\n", version="HTTP/1.0") + http("POST", "/send", b"b\n")
        )
        self.assertEqual(status_lines(observed), [b"HTTP/1.0 202 Accepted"])
        self.assertTrue(observed.closing)
        self.assertEqual(observed.upstream, b"a\r\n")

    def test_duplicate_content_length(self) -> None:
        observed = self.handed_off(
            http("POST", "/send", b"a\n", "Content-Length: 2")
        )
        self.assertBadRequest(observed)
        self.assertTrue(observed.closing)
        self.assertEqual(observed.upstream, b"")

    def test_header_folding(self) -> None:
        observed = self.handed_off(
            b"POST /send HTTP/1.1\r\nHost: b\r\nX-Long: a\r\n  b\r\n"
            b"Content-Length: 2\r\n\r\na\n"
        )
        self.assertEqual(status_lines(observed), [b"HTTP/1.1 202 Accepted"])
        self.assertEqual(observed.upstream, b"a\r\n")

    def test_absolute_form_target(self) -> None:
        observed = self.handed_off(http("POST", "http://x/send", b"a\n"))
        self.assertEqual(status_lines(observed), [b"HTTP/1.1 404 Not Found"])
        self.assertEqual(body_of(observed)["message"], "no route http://x/send")
        self.assertEqual(observed.upstream, b"")

    def test_header_block_over_16_kib(self) -> None:
        """twisted.web drops the connection without an answer; so must the fast
        lane, whether the head comes in one piece or in several."""
        data = http("POST", "/send", b"a\n", "X-Big: " + "x" * 16400)
        for pieces in ([data], [data[:9000], data[9000:]]):
            observed = self.handed_off(pieces)
            self.assertEqual((observed.answers, observed.closing), (b"", True))
            self.assertEqual(observed.upstream, b"")

    def test_header_block_just_under_the_limit(self) -> None:
        data = http("POST", "/send", b"a\n", "X-Big: " + "x" * 16000)
        fast, web = self.both(data)
        self.assertSame(fast, web)
        self.assertFalse(fast.handed_off)
        self.assertEqual(status_lines(fast), [b"HTTP/1.1 202 Accepted"])

    def test_fast_request_then_a_hand_off_on_one_connection(self) -> None:
        fast, web = self.both(
            http("POST", "/send", b"a\n") + http("GET", "/nope") + http("POST", "/send", b"b\n")
        )
        self.assertSame(fast, web)
        first, _, rest = fast.raw.partition(b'{"sent": 1}')
        self.assertEqual(first + b'{"sent": 1}', SENT_1)  # the fast lane's own answer
        self.assertTrue(served_by_twisted_web(rest))  # the next ones are twisted.web's
        self.assertEqual(
            status_lines(fast),
            [b"HTTP/1.1 202 Accepted", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 202 Accepted"],
        )
        self.assertEqual(fast.upstream, b"a\r\nb\r\n")

    def test_hand_off_after_a_waiting_request(self) -> None:
        side = self.side()
        client = side.client()
        client.send(http("POST", "/request", b"q\n") + http("GET", "/nope"))
        self.assertEqual(client.received, b"")
        self.assertFastLane(client)
        side.reply(b"r\r\n")
        self.assertIsInstance(client.channel._delegate, DeadlineChannel)
        answers = client.received.split(b"HTTP/1.1 ")
        self.assertEqual(
            [a.partition(b"\r\n")[0] for a in answers], [b"", b"200 OK", b"404 Not Found"]
        )
        self.assertEqual(side.inflight, 0)

    # Requests the fast lane once served although twisted.web refuses them or
    # reads them differently: each must now be handed off.

    def test_query_string_is_read_as_twisted_web_reads_it(self) -> None:
        """Blank values are kept; ``;`` separates too; a key without ``=`` is
        ignored.  The fast lane serves these itself."""
        for target, error in [("/request?timeout=", "invalid_timeout"),
                              ("/request?timeout=&x=1", "invalid_timeout"),
                              ("/request?a=1;timeout=x", "invalid_timeout"),
                              ("/request?timeout", None)]:
            with self.subTest(target=target):
                fast, web = self.both(http("POST", target, b"q\n"))
                self.assertSame(fast, web)
                self.assertFalse(fast.handed_off)
                if error is None:
                    self.assertEqual(body_of(fast), {"replies": ["r1"]})
                else:
                    self.assertEqual(body_of(fast)["error"], error)
                    self.assertEqual(fast.upstream, b"")

    def test_header_name_that_is_not_a_token(self) -> None:
        for header in ("X(y): z", "X y: z", "X\ty: z", "Foo\nX: z", "X\x7f: z", ": z"):
            with self.subTest(header=header):
                observed = self.handed_off(http("POST", "/send", b"a\n", header))
                self.assertBadRequest(observed)
                self.assertEqual(observed.upstream, b"")

    def test_connection_options_with_close(self) -> None:
        observed = self.handed_off(
            http("POST", "/send", b"a\n", "Connection: keep-alive, close")
            + http("POST", "/send", b"b\n")
        )
        self.assertEqual(status_lines(observed), [b"HTTP/1.1 202 Accepted"])
        self.assertIn(b"\r\nConnection: close\r\n", observed.answers)
        self.assertTrue(observed.closing)
        self.assertEqual(observed.upstream, b"a\r\n")

    def test_request_target_with_control_or_non_ascii_bytes(self) -> None:
        for query in (b"\x01", b"\xff", b"a\tb", b"\x7f"):
            with self.subTest(query=query):
                data = b"POST /send?" + query + b" HTTP/1.1\r\nContent-Length: 2\r\n\r\na\n"
                self.handed_off(data)

    def test_bad_request_line_is_judged_before_the_headers(self) -> None:
        """twisted.web answers a bad request line as soon as it is complete; the
        fast lane hands the connection over then, not when the head is done."""
        for line in (b"POST /send HTTP/1.2\r\n", b"GET /send\r\n", b"POST /send?\x01 HTTP/1.1\r\n"):
            with self.subTest(line=line):
                side = self.side()
                client = side.client()
                client.send(line)
                self.assertIsInstance(client.channel._delegate, DeadlineChannel)
                self.assertTrue(client.received.startswith(b"HTTP/1.1 400 Bad Request\r\n"))
                self.assertTrue(client.closing)

    def test_bad_header_line_is_judged_before_the_end_of_the_head(self) -> None:
        """twisted.web judges a header line when the next one begins; the fast
        lane hands the connection over once the line is complete, so the client
        gets twisted.web's 400 at the same moment, and not a 408 later."""
        pieces = [b"POST /send HTTP/1.1\r\nX y: z\r\n", b"Content-Length: 2\r\n"]
        fast, web = self.both(pieces)
        self.assertSame(fast, web)
        self.assertTrue(fast.handed_off)
        self.assertBadRequest(fast)
        side = self.side()
        client = side.client()
        client.send(pieces[0])
        self.assertIsInstance(client.channel._delegate, DeadlineChannel)
        self.assertEqual(client.received, b"")  # twisted.web has not judged it yet
        client.send(pieces[1])
        self.assertTrue(client.received.startswith(b"HTTP/1.1 400 Bad Request\r\n"))

    def test_good_request_line_waits_for_the_headers(self) -> None:
        side = self.side()
        client = side.client()
        client.send(b"POST /send HTTP/1.1\r\nHost: b\r\n", b"Content-Length: 2\r\n\r\na\n")
        self.assertEqual(client.received, SENT_1)
        self.assertFastLane(client)

    def test_too_many_headers(self) -> None:
        """twisted.web takes at most 500 header lines (here Host, Content-Length
        and X-n)."""
        headers = [f"X-{n}: v" for n in range(499)]
        observed = self.handed_off(http("POST", "/send", b"a\n", *headers))
        self.assertBadRequest(observed)
        fast, web = self.both(http("POST", "/send", b"a\n", *headers[:498]))
        self.assertSame(fast, web)
        self.assertFalse(fast.handed_off)


# -- 4. the body limit --------------------------------------------------------------------


class BodyLimitTests(FastLaneTestCase):
    def test_declared_length_over_the_limit(self) -> None:
        side = self.side(max_body_bytes=10)
        client = side.client()
        client.send(http("POST", "/send", None, "Content-Length: 11"))
        refused = too_large_response("the body is 11 bytes; max_body_bytes is 10")
        self.assertEqual(client.received, refused)
        self.assertTrue(client.closing)
        client.send(b"0123456789\n" + http("POST", "/send", b"x\n"))
        self.assertEqual((client.received, side.written), (refused, b""))
        self.assertEqual(side.inflight, 0)
        self.assertTrue(side.metric('bridge_http_requests_total{code="413",route="/send"} 1.0'))
        self.assertFastLane(client)

    def test_too_large_after_a_served_request(self) -> None:
        side = self.side(max_body_bytes=10)
        client = side.client()
        client.send(
            http("POST", "/send", b"a\n") + http("POST", "/request", b"0123456789\n")
        )
        self.assertEqual(
            client.received,
            SENT_1 + too_large_response("the body is 11 bytes; max_body_bytes is 10"),
        )
        self.assertEqual(side.written, b"a\r\n")

    def test_body_at_exactly_the_limit(self) -> None:
        side = self.side(max_body_bytes=10)
        client = side.client()
        client.send(http("POST", "/send", b"012345678\n"))
        self.assertEqual(client.received, SENT_1)
        self.assertEqual(side.written, b"012345678\r\n")
        self.assertFalse(client.closing)


# -- 5. the request deadline --------------------------------------------------------------


TIMEOUT = 10.0




class DeadlineTests(FastLaneTestCase):
    def assertClosesIn(self, side: Side, client: Client, seconds: float,
                       added: bytes = b"") -> None:
        """Open until ``seconds`` from now; then closed, with ``added`` written;
        aborted a second later."""
        before = client.received
        side.reactor.advance(seconds - 0.01)
        self.assertEqual((client.closing, client.received), (False, before))
        side.reactor.advance(0.01)
        self.assertEqual((client.closing, client.received), (True, before + added))
        self.assertFalse(client.transport.disconnected)
        side.reactor.advance(1.0)
        self.assertTrue(client.transport.disconnected)

    def test_half_a_request_then_silence(self) -> None:
        for half in (b"POST /se", http("POST", "/send", b"abc\n")[:-2]):
            with self.subTest(half=half):
                side = self.side(request_timeout=TIMEOUT)
                client = side.client()
                side.reactor.advance(3)
                client.send(half)
                self.assertClosesIn(side, client, TIMEOUT - 3, timed_out())
                self.assertEqual((side.written, side.inflight), (b"", 0))
                self.assertFastLane(client)

    def test_first_bytes_then_silence_on_either_lane(self) -> None:
        """Bytes of a request line, no CRLF yet: 408 from the fast lane and from
        twisted.web alike (DeadlineChannel counts LineReceiver's buffer)."""
        for fast_lane in (True, False):
            with self.subTest(fast_lane=fast_lane):
                side = self.side(fast_lane, request_timeout=TIMEOUT)
                client = side.client()
                client.send(b"P")
                self.assertClosesIn(side, client, TIMEOUT, timed_out())

    def test_idle_keep_alive_connection(self) -> None:
        side = self.side(request_timeout=TIMEOUT)
        client = side.client()
        side.reactor.advance(TIMEOUT - 1)
        client.send(http("POST", "/send", b"a\n"))
        self.assertEqual(
            client.received,
            json_answer(b"202 Accepted", {"sent": 1}, date=b"Tue, 14 Nov 2023 22:13:29 GMT"),
        )
        self.assertClosesIn(side, client, TIMEOUT)  # from the answer; no 408

    def test_idle_connection_that_never_sent_anything(self) -> None:
        side = self.side(request_timeout=TIMEOUT)
        client = side.client()
        self.assertClosesIn(side, client, TIMEOUT)

    def test_a_long_request_is_not_cut(self) -> None:
        side = self.side(request_timeout=TIMEOUT)
        client = side.client()
        client.send(http("POST", "/request?timeout=25", b"q\n"))
        side.reactor.advance(TIMEOUT * 2)
        self.assertEqual((client.received, client.closing), (b"", False))
        side.reply(b"r\r\n")
        self.assertEqual(
            client.received,
            json_answer(b"200 OK", {"replies": ["r"]}, date=b"Tue, 14 Nov 2023 22:13:40 GMT"),
        )
        self.assertClosesIn(side, client, TIMEOUT)

    def test_deadline_runs_on_across_a_hand_off(self) -> None:
        side = self.side(request_timeout=TIMEOUT)
        client = side.client()
        side.reactor.advance(4)
        client.send(b"POST /send HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na")
        self.assertIsInstance(client.channel._delegate, DeadlineChannel)
        self.assertClosesIn(side, client, TIMEOUT - 4, timed_out())


# -- 6. the client goes away --------------------------------------------------------------


class DisconnectTests(FastLaneTestCase):
    def test_client_leaves_while_its_request_waits(self) -> None:
        side = self.side()
        events = side.client()  # an /events subscriber, on twisted.web after the hand-off
        events.send(http("GET", "/events"))
        client = side.client()
        client.send(http("POST", "/request", b"q1\n"))
        self.assertEqual(side.inflight, 1)
        client.lose()
        self.assertEqual(side.inflight, 0)
        self.assertEqual(client.received, b"")
        self.assertTrue(side.metric('bridge_replies_total{outcome="cancelled"} 1.0'))
        side.reply(b"late\r\n")  # fills the abandoned slot
        self.assertEqual(side.service.pool.totals().late_replies, 1)
        self.assertIn(b"event: late_reply\n", events.received)
        self.assertIn(b"data: late\n\n", events.received)
        other = side.client()
        other.send(http("POST", "/request", b"q2\n"))
        side.reply(b"mine\r\n")
        self.assertEqual(other.received, json_answer(b"200 OK", {"replies": ["mine"]}))
        self.assertEqual(side.written, b"q1\r\nq2\r\n")
        self.assertEqual(side.inflight, 0)

    def test_client_leaves_with_requests_pipelined_behind(self) -> None:
        side = self.side()
        client = side.client()
        client.send(http("POST", "/request", b"q\n") + http("POST", "/send", b"s\n"))
        client.lose()
        side.reply(b"r\r\n")
        self.assertEqual((client.received, side.written, side.inflight), (b"", b"q\r\n", 0))

    def test_client_leaves_after_a_hand_off(self) -> None:
        side = self.side()
        client = side.client()
        client.send(http("POST", "/send", None, "Transfer-Encoding: chunked") + b"2\r\na")
        client.lose()
        self.assertEqual((side.written, side.inflight), (b"", 0))


# -- 7. differential property test ---------------------------------------------------------


# Each part of a request is plain most of the time and odd now and then, so
# that a conversation usually has requests the fast lane serves before (if
# ever) one it hands to twisted.web.

PLAIN_LINES = st.sampled_from([
    ("POST", "/send"), ("POST", "/send"), ("POST", "/request"), ("POST", "/request"),
    ("GET", "/healthz"), ("GET", "/readyz"), ("POST", "/request?timeout=0.5"),
    ("POST", "/send?x=1"), ("POST", "/request?timeout=2&x"),
])
ODD_LINES = st.tuples(
    st.sampled_from(["POST", "GET", "PUT", "HEAD", "post", "DELETE", "GET\t", ""]),
    st.sampled_from([
        "/send", "/request", "/healthz", "/readyz", "/status", "/nope", "/send/", "//send",
        "http://x/send", "/send#f", "/SEND", "*", "/send?\x01", "/send?\xe9", "/send?a b",
        "/request?timeout=abc", "/request?timeout=", "/request?timeout",
        "/request?a=1;timeout=0", "/request?timeout=0%2E5", "/readyz?x",
    ]),
)
PLAIN_VERSIONS = st.just("HTTP/1.1")
ODD_VERSIONS = st.sampled_from(["HTTP/1.0", "HTTP/1.2", "http/1.1", "HTTP/1.1 ", ""])
PLAIN_HEADERS = st.sampled_from([
    "Connection: keep-alive", "Content-Type: text/plain", "Content-Type: application/json",
    "Accept: text/plain", "Accept: */*", "User-Agent: curl/8.5.0", "X-Empty:",
    "Connection: close", "X-Tab:\tv\t", "X-Obs: caf\xe9", "Authorization: Bearer s3cret",
])
ODD_HEADERS = st.sampled_from([
    "Connection: Keep-Alive, close", "Connection: close, keep-alive", "Connection:",
    "Connection: Close",
    "Expect: 100-continue", " folded", "\tfolded", "X y: z", "X(y): z", "X :z",
    "Transfer-Encoding: identity", "Trailer: x", "TE: trailers", "Upgrade: h2c",
    "X-Nul: a\x00b", "X-Cr: a\rb", "host: again", "Host: twice", "no colon",
    "Authorization: Bearer wrong", "Authorization: bearer  s3cret ",
])
PLAIN_FRAMINGS = st.sampled_from(["length", "length", "length", "none-if-empty"])
ODD_FRAMINGS = st.sampled_from(
    ["chunked", "more", "less", "twice", "padded", "plus", "garbage", "chunked+length",
     "zero-pad", "none"]
)
WORD = st.text(alphabet="abc xyz", min_size=1, max_size=8)
PLAIN_BODIES = st.lists(st.tuples(WORD, st.sampled_from(["\n", "\r\n"])), max_size=3).map(
    lambda lines: "".join(word + end for word, end in lines).encode()
)


@st.composite
def odd_bodies(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        parts = draw(st.lists(
            st.tuples(st.text(alphabet="ab {}\"\\é", max_size=10),
                      st.sampled_from(["\n", "\r\n", "\r", ""])),
            max_size=4,
        ))
        return "".join(part + end for part, end in parts).encode("utf-8")
    document = draw(st.sampled_from([
        {"lines": ["a", "b"]}, {"lines": []}, {"lines": "a"}, {"lines": ["a\nb"]},
        {"line": "x"}, ["a"], {"lines": ["é", ""]}, {"lines": ["x" * 20]},
    ]))
    return json.dumps(document).encode()


def pick(draw: st.DrawFn, odd: bool, plain: st.SearchStrategy[Any],
         unusual: st.SearchStrategy[Any]) -> Any:
    return draw(unusual if odd else plain)


def chunk(body: bytes) -> bytes:
    if not body:
        return b"0\r\n\r\n"
    middle = len(body) // 2
    parts = [part for part in (body[:middle], body[middle:]) if part]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A plain request to a hot route, or one that differs from it in one
    respect (about a third of them)."""
    odd = draw(st.sampled_from([""] * 9 + ["line", "version", "header", "body", "framing"]))
    method, target = pick(draw, odd == "line", PLAIN_LINES, ODD_LINES)
    version = pick(draw, odd == "version", PLAIN_VERSIONS, ODD_VERSIONS)
    headers = ["Host: bridge.test"] if draw(st.integers(0, 9)) else []
    headers += draw(st.lists(PLAIN_HEADERS, max_size=2))
    if odd == "header":
        headers.append(draw(ODD_HEADERS))
    body = pick(draw, odd == "body", PLAIN_BODIES, odd_bodies())
    framing = pick(draw, odd == "framing", PLAIN_FRAMINGS, ODD_FRAMINGS)
    size = len(body)
    headers += {
        "length": [f"Content-Length: {size}"],
        "none-if-empty": [] if size == 0 else [f"Content-Length: {size}"],
        "none": [],
        "chunked": ["Transfer-Encoding: chunked"],
        "more": [f"Content-Length: {size + 1}"],
        "less": [f"Content-Length: {max(size - 1, 0)}"],
        "twice": [f"Content-Length: {size}"] * 2,
        "padded": [f"Content-Length:  {size} "],
        "plus": [f"Content-Length: +{size}"],
        "garbage": ["Content-Length: 1x"],
        "chunked+length": ["Transfer-Encoding: chunked", f"Content-Length: {size}"],
        "zero-pad": [f"Content-Length: 0{size}"],
    }[framing]
    if draw(st.booleans()):
        headers = draw(st.permutations(headers))
    line = " ".join(part for part in (method, target, version) if part)
    head = "\r\n".join([line, *headers]) + "\r\n\r\n"
    payload = chunk(body) if framing.startswith("chunked") else body
    if framing == "none":
        payload = b""
    return head.encode("latin-1") + payload


@dataclass(frozen=True)
class Conversation:
    pieces: list[bytes]  # one dataReceived each
    waits: list[bool]  # see drive
    token: bool  # the bridge wants "Bearer s3cret"
    connected: bool  # the upstream is up
    draining: bool  # the bridge is shutting down


@st.composite
def conversations(draw: st.DrawFn) -> Conversation:
    """Requests on one connection, cut into pieces, and the bridge's situation.
    Now and then the client stops before the end (mid-head, mid-body...)."""
    data = b"".join(draw(st.lists(requests(), min_size=1, max_size=5)))
    if draw(st.sampled_from([False] * 3 + [True])):
        data = data[:draw(st.integers(1, len(data)))]
    cuts = sorted(draw(st.sets(st.integers(1, max(len(data) - 1, 1)), max_size=4)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    waits = draw(st.lists(st.booleans(), max_size=8))
    situation = draw(st.sampled_from(["normal"] * 5 + ["token", "down", "draining"]))
    return Conversation(
        [piece for piece in pieces if piece], waits, situation == "token",
        situation != "down", situation == "draining",
    )


FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class DifferentialPropertyTests(SynchronousTestCase):
    @FUZZ
    @given(conversations())
    def test_fast_lane_answers_as_twisted_web_does(self, conversation: Conversation) -> None:
        observed = []
        for fast_lane in (True, False):
            side = Side(
                fast_lane, conversation.connected, max_body_bytes=40, max_line_bytes=12,
                request_timeout=30.0, token="s3cret" if conversation.token else None,
            )
            if conversation.draining:
                side.service.lifecycle.shutdown()
            observed.append(drive(side, conversation.pieces, conversation.waits))
            side.close()
            self.assertEqual(side.reactor.getDelayedCalls(), [])
        fast, web = observed
        self.assertEqual(
            (fast.answers, fast.closing, fast.upstream, fast.counts),
            (web.answers, web.closing, web.upstream, web.counts),
        )

"""The HTTP API, driven in memory: raw HTTP to the real channel in front, a
real pool behind, and a fake upstream whose exact received bytes every test
checks."""

from __future__ import annotations

import json
import math

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.web.iweb import IResponse

from bridge import __version__
from bridge.http.body import parse_body
from tests.fakes_http import Answer, Bridge, BridgeTestCase

REFUSED = "connection refused by localhost:65432"


def not_connected(why: str) -> dict[str, str]:
    return {
        "error": "upstream_unavailable",
        "message": f"the upstream localhost:65432 is not connected ({why}); nothing was sent",
    }


class SendTests(BridgeTestCase):
    """POST /send: lines out, 202 {"sent": N}, all or nothing."""

    def send(self, bridge: Bridge, body: bytes, **kwargs: object) -> Answer:
        return self.call(bridge, "POST", "/send", data=body, **kwargs)

    def test_text_body_crlf_by_default(self) -> None:
        bridge = self.bridge()
        self.assertJSON(self.send(bridge, b"SET a 1\nSET b 2\n"), 202, {"sent": 2})
        self.assertEqual(bridge.upstream.value(), b"SET a 1\r\nSET b 2\r\n")

    def test_text_body_lf_delimiter(self) -> None:
        bridge = self.bridge(delimiter="lf")
        self.assertJSON(self.send(bridge, b"one\r\ntwo\nthree"), 202, {"sent": 3})
        self.assertEqual(bridge.upstream.value(), b"one\ntwo\nthree\n")

    def test_crlf_body_and_missing_final_newline(self) -> None:
        bridge = self.bridge()
        self.assertJSON(self.send(bridge, b"one\r\ntwo"), 202, {"sent": 2})
        self.assertEqual(bridge.upstream.value(), b"one\r\ntwo\r\n")

    def test_empty_lines_inside_the_body_are_lines(self) -> None:
        bridge = self.bridge()
        self.assertJSON(self.send(bridge, b"a\n\nb\n"), 202, {"sent": 3})
        self.assertEqual(bridge.upstream.value(), b"a\r\n\r\nb\r\n")

    def test_successive_sends_are_written_in_order(self) -> None:
        bridge = self.bridge()
        self.assertJSON(self.send(bridge, b"first\n"), 202, {"sent": 1})
        self.assertJSON(self.send(bridge, b"second\n"), 202, {"sent": 1})
        self.assertEqual(bridge.upstream.value(), b"first\r\nsecond\r\n")

    def test_json_body(self) -> None:
        bridge = self.bridge()
        answer = self.send(
            bridge,
            json.dumps({"lines": ["SET a 1", "GET \u00e9"]}).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        self.assertJSON(answer, 202, {"sent": 2})
        self.assertEqual(bridge.upstream.value(), "SET a 1\r\nGET \u00e9\r\n".encode())

    def test_json_lines_are_not_split_further_and_text_is_not_json(self) -> None:
        bridge = self.bridge()
        # Without the JSON Content-Type, a JSON-looking body is one text line.
        self.assertJSON(self.send(bridge, b'{"lines": ["a"]}'), 202, {"sent": 1})
        self.assertEqual(bridge.upstream.value(), b'{"lines": ["a"]}\r\n')

    def test_lines_at_exactly_max_line_bytes_pass(self) -> None:
        bridge = self.bridge(max_line_bytes=10)
        self.assertJSON(self.send(bridge, b"0123456789\r\nabc\n"), 202, {"sent": 2})
        self.assertEqual(bridge.upstream.value(), b"0123456789\r\nabc\r\n")

    def assertRejected(
        self, body: bytes, status: int, document: dict[str, str], content_type: str | None = None
    ) -> None:
        """The body is refused with exactly this answer and nothing is written."""
        bridge = self.bridge(max_line_bytes=10)
        headers = {"Content-Type": content_type} if content_type else {}
        answer = self.send(bridge, body, headers=headers)
        self.assertJSON(answer, status, document)
        self.assertIsNone(answer.header("Retry-After"))
        self.assertEqual(bridge.upstream.value(), b"")
        self.assertEqual(bridge.pool.totals().lines_sent, 0)

    def test_empty_body(self) -> None:
        self.assertRejected(b"", 400, {
            "error": "empty_body",
            "message": "the request body is empty; send at least one line",
        })

    def test_bare_cr(self) -> None:
        self.assertRejected(b"ok\nbad\rline\n", 400, {
            "error": "bare_cr",
            "message": "the body contains a CR that is not followed by LF; "
                       "lines end with LF or CRLF",
        })

    def test_bare_cr_at_the_end(self) -> None:
        self.assertRejected(b"ok\r\nend\r", 400, {
            "error": "bare_cr",
            "message": "the body contains a CR that is not followed by LF; "
                       "lines end with LF or CRLF",
        })

    def test_line_too_long_rejects_the_whole_body(self) -> None:
        self.assertRejected(b"fine\n0123456789X\nfine\n", 413, {
            "error": "line_too_long", "message": "line 2 is 11 bytes; the limit is 10",
        })

    def test_invalid_json(self) -> None:
        bridge = self.bridge()
        answer = self.send(bridge, b'{"lines": [', headers={"Content-Type": "application/json"})
        self.assertError(answer, 400, "invalid_json")
        self.assertEqual(sorted(answer.json()), ["error", "message"])
        self.assertEqual(bridge.upstream.value(), b"")

    def test_json_without_lines(self) -> None:
        self.assertRejected(b'{"line": ["a"]}', 400, {
            "error": "invalid_lines", "message": 'the JSON body must be an object with "lines"',
        }, "application/json")

    def test_json_not_an_object(self) -> None:
        self.assertRejected(b'["a"]', 400, {
            "error": "invalid_lines", "message": 'the JSON body must be an object with "lines"',
        }, "application/json")

    def test_json_lines_not_a_list(self) -> None:
        self.assertRejected(b'{"lines": "a"}', 400, {
            "error": "invalid_lines", "message": '"lines" must be a list of strings',
        }, "application/json")

    def test_json_non_string_line_rejects_all(self) -> None:
        self.assertRejected(b'{"lines": ["ok", 5]}', 400, {
            "error": "invalid_lines", "message": '"lines"[1] is not a string',
        }, "application/json")

    def test_json_line_with_newline_rejects_all(self) -> None:
        self.assertRejected(b'{"lines": ["ok", "a\\nSET evil 1"]}', 400, {
            "error": "invalid_lines", "message": '"lines"[1] contains CR or LF',
        }, "application/json")

    def test_json_line_with_cr_rejects_all(self) -> None:
        self.assertRejected(b'{"lines": ["a\\rb"]}', 400, {
            "error": "invalid_lines", "message": '"lines"[0] contains CR or LF',
        }, "application/json")

    def test_json_lone_surrogate_rejects_all(self) -> None:
        self.assertRejected(b'{"lines": ["ok", "\\ud800"]}', 400, {
            "error": "invalid_lines", "message": '"lines"[1] is not valid Unicode text',
        }, "application/json")

    def test_json_empty_lines(self) -> None:
        self.assertRejected(b'{"lines": []}', 400, {
            "error": "empty_body", "message": '"lines" is empty; send at least one line',
        }, "application/json")

    def test_json_empty_body(self) -> None:
        self.assertRejected(b"", 400, {
            "error": "empty_body", "message": 'the request body is empty; send {"lines": [...]}',
        }, "application/json")

    def test_json_line_too_long(self) -> None:
        self.assertRejected(b'{"lines": ["ok", "0123456789X"]}', 413, {
            "error": "line_too_long", "message": "line 2 is 11 bytes; the limit is 10",
        }, "application/json")

    def test_not_connected_is_503_with_retry_after_of_the_backoff(self) -> None:
        bridge = self.bridge(refuse=True, backoff_initial=2.5)
        self.assertEqual(bridge.member.retry_in(), 2.5)
        answer = self.send(bridge, b"SET a 1\n")
        self.assertJSON(answer, 503, not_connected(f"{REFUSED}; next attempt in 2.5 s"))
        self.assertEqual(answer.header("Retry-After"), ["3"])

        bridge.clock.advance(1.7)
        retry_in = bridge.member.retry_in()
        assert retry_in is not None
        answer = self.send(bridge, b"SET a 1\n")
        self.assertJSON(answer, 503, not_connected(f"{REFUSED}; next attempt in 0.8 s"))
        self.assertEqual(answer.header("Retry-After"), [str(math.ceil(retry_in))])
        self.assertEqual(answer.header("Retry-After"), ["1"])

    def test_retry_after_follows_a_longer_backoff(self) -> None:
        bridge = self.bridge(refuse=True, backoff_initial=4.0, backoff_factor=3.0)
        bridge.clock.advance(4.0)  # second refused attempt: the delay is now 12 s
        self.assertEqual(bridge.endpoint.attempts, 2)
        bridge.clock.advance(0.5)
        answer = self.send(bridge, b"x\n")
        self.assertJSON(answer, 503, not_connected(f"{REFUSED}; next attempt in 11.5 s"))
        self.assertEqual(answer.header("Retry-After"), ["12"])  # ceil(11.5)

    def test_retry_after_is_at_least_one_second_while_connecting(self) -> None:
        bridge = self.bridge(hang=True)
        self.assertEqual(bridge.member.state, "connecting")
        answer = self.send(bridge, b"x\n")
        self.assertJSON(answer, 503, not_connected("connecting now"))
        self.assertEqual(answer.header("Retry-After"), ["1"])

    def test_nothing_is_queued_while_not_connected(self) -> None:
        bridge = self.bridge(refuse=True, backoff_initial=2.0)
        self.assertJSON(self.send(bridge, b"SET a 1\n"), 503,
                        not_connected(f"{REFUSED}; next attempt in 2.0 s"))
        bridge.endpoint.refuse = False
        bridge.clock.advance(2.0)
        self.assertEqual(bridge.member.state, "connected")
        self.assertEqual(bridge.upstream.value(), b"")
        self.assertJSON(self.send(bridge, b"SET b 2\n"), 202, {"sent": 1})
        self.assertEqual(bridge.upstream.value(), b"SET b 2\r\n")

    def test_after_the_connection_is_lost_sends_are_refused(self) -> None:
        bridge = self.bridge(backoff_initial=1.0)
        first = bridge.upstream
        first.loseConnection()
        answer = self.send(bridge, b"x\n")
        self.assertJSON(answer, 503, not_connected(
            "localhost:65432 closed the connection; next attempt in 1.0 s"))
        self.assertEqual(answer.header("Retry-After"), ["1"])
        self.assertEqual(first.value(), b"")

    def test_discarded_send_replies_never_reach_a_request(self) -> None:
        bridge = self.bridge(discard_send_replies=True)
        self.assertJSON(self.send(bridge, b"SET a 1\nSET b 2\n"), 202, {"sent": 2})
        pending = self.start_request(bridge, "POST", "/request", data=b"GET a\n")
        bridge.reply(b"+OK\r\n+OK\r\n1\r\n")
        self.assertJSON(self.finish(bridge, pending), 200, {"replies": ["1"]})
        self.assertEqual(bridge.upstream.value(), b"SET a 1\r\nSET b 2\r\nGET a\r\n")


class RequestTests(BridgeTestCase):
    """POST /request: lines out, their replies back, in order."""

    def request(
        self, bridge: Bridge, body: bytes, query: str = "", **kwargs: object
    ) -> Deferred[IResponse]:
        return self.start_request(bridge, "POST", "/request" + query, data=body, **kwargs)

    def test_replies_in_order(self) -> None:
        bridge = self.bridge()
        pending = self.request(bridge, b"GET a\nGET b\n")
        self.assertEqual(bridge.upstream.value(), b"GET a\r\nGET b\r\n")
        self.assertEqual(pending.responses(), [])
        bridge.reply(b"1\r")
        bridge.reply(b"\n2")
        self.assertEqual(pending.responses(), [])
        bridge.reply(b"\n")
        self.assertJSON(self.finish(bridge, pending), 200, {"replies": ["1", "2"]})

    def test_json_body_and_lf_replies(self) -> None:
        bridge = self.bridge()
        pending = self.request(
            bridge, b'{"lines": ["PING"]}', headers={"Content-Type": "application/json"}
        )
        bridge.reply(b"PONG\n")
        self.assertJSON(self.finish(bridge, pending), 200, {"replies": ["PONG"]})
        self.assertEqual(bridge.upstream.value(), b"PING\r\n")

    def test_empty_reply_lines(self) -> None:
        bridge = self.bridge()
        pending = self.request(bridge, b"a\nb\n")
        bridge.reply(b"\r\n\n")
        self.assertJSON(self.finish(bridge, pending), 200, {"replies": ["", ""]})

    def test_accept_text_plain(self) -> None:
        bridge = self.bridge()
        pending = self.request(bridge, b"a\nb\n", headers={"Accept": "text/plain"})
        bridge.reply(b"one\r\ntwo\r\n")
        answer = self.finish(bridge, pending)
        self.assertEqual(
            (answer.code, answer.content_type, answer.body),
            (200, "text/plain; charset=utf-8", b"one\r\ntwo\r\n"),  # as received
        )

    def test_accept_json_and_text_gives_json(self) -> None:
        bridge = self.bridge()
        pending = self.request(
            bridge, b"a\n", headers={"Accept": "text/plain, application/json"}
        )
        bridge.reply(b"one\r\n")
        self.assertJSON(self.finish(bridge, pending), 200, {"replies": ["one"]})

    def test_invalid_utf8_replies_are_replaced(self) -> None:
        bridge = self.bridge()
        pending = self.request(bridge, b"a\nb\n")
        bridge.reply(b"caf\xe9\r\n\xff\xfeok\r\n")
        self.assertJSON(
            self.finish(bridge, pending), 200, {"replies": ["caf\ufffd", "\ufffd\ufffdok"]}
        )

    def test_default_timeout(self) -> None:
        bridge = self.bridge(reply_timeout=3.0)
        pending = self.request(bridge, b"a\nb\n")
        bridge.reply(b"one\r\n")
        bridge.clock.advance(2.999)
        self.assertEqual(pending.responses(), [])
        bridge.clock.advance(0.001)
        self.assertJSON(self.finish(bridge, pending), 504, {
            "error": "reply_timeout",
            "message": "the upstream sent 1 of 2 replies within 3 s",
            "replies": ["one"],
        })

    def test_timeout_parameter(self) -> None:
        bridge = self.bridge(reply_timeout=3.0, max_reply_timeout=10.0)
        pending = self.request(bridge, b"a\n", "?timeout=7.5")
        bridge.clock.advance(7.4)
        self.assertEqual(pending.responses(), [])
        bridge.clock.advance(0.1)
        self.assertJSON(self.finish(bridge, pending), 504, {
            "error": "reply_timeout",
            "message": "the upstream sent 0 of 1 replies within 7.5 s",
            "replies": [],
        })

    def test_timeout_at_exactly_the_maximum_is_allowed(self) -> None:
        bridge = self.bridge(max_reply_timeout=10.0)
        pending = self.request(bridge, b"a\n", "?timeout=10")
        bridge.reply(b"ok\n")
        self.assertJSON(self.finish(bridge, pending), 200, {"replies": ["ok"]})

    def assertInvalidTimeout(self, value: str, message: str) -> None:
        bridge = self.bridge(max_reply_timeout=10.0)
        answer = self.finish(bridge, self.request(bridge, b"a\n", "?timeout=" + value))
        self.assertJSON(answer, 400, {"error": "invalid_timeout", "message": message})
        self.assertEqual(bridge.upstream.value(), b"")

    def test_timeout_not_a_number(self) -> None:
        self.assertInvalidTimeout("soon", "timeout 'soon' is not a number")

    def test_timeout_empty(self) -> None:
        self.assertInvalidTimeout("", "timeout '' is not a number")

    def test_timeout_zero(self) -> None:
        self.assertInvalidTimeout("0", "timeout must be positive, got '0'")

    def test_timeout_negative(self) -> None:
        self.assertInvalidTimeout("-1", "timeout must be positive, got '-1'")

    def test_timeout_nan(self) -> None:
        self.assertInvalidTimeout("nan", "timeout must be positive, got 'nan'")

    def test_timeout_above_max(self) -> None:
        self.assertInvalidTimeout("10.5", "timeout 10.5 is above max_reply_timeout (10)")

    def test_timeout_infinite(self) -> None:
        self.assertInvalidTimeout("inf", "timeout inf is above max_reply_timeout (10)")

    def test_invalid_body_writes_nothing(self) -> None:
        bridge = self.bridge()
        answer = self.finish(bridge, self.request(bridge, b"a\rb\n"))
        self.assertError(answer, 400, "bare_cr")
        self.assertEqual(bridge.upstream.value(), b"")
        self.assertEqual(bridge.member.protocol and bridge.member.protocol.pending, 0)

    def test_late_replies_after_a_timeout_are_discarded(self) -> None:
        bridge = self.bridge(reply_timeout=2.0)
        first = self.request(bridge, b"a\nb\n")
        bridge.reply(b"A\r\n")
        bridge.clock.advance(2.0)
        self.assertJSON(self.finish(bridge, first), 504, {
            "error": "reply_timeout",
            "message": "the upstream sent 1 of 2 replies within 2 s",
            "replies": ["A"],
        })
        # line framing cannot tell B from c's reply: nothing goes out until B came
        refused = self.finish(bridge, self.request(bridge, b"c\n"))
        self.assertJSON(refused, 503, waiting_for_late_replies(6))
        bridge.reply(b"B\r\n")
        second = self.request(bridge, b"c\n")
        bridge.reply(b"C\r\n")
        self.assertJSON(self.finish(bridge, second), 200, {"replies": ["C"]})
        self.assertEqual(bridge.upstream.value(), b"a\r\nb\r\nc\r\n")
        self.assertEqual(bridge.pool.totals().late_replies, 1)

    def test_upstream_lost_while_waiting(self) -> None:
        bridge = self.bridge(backoff_initial=1.0)
        pending = self.request(bridge, b"a\nb\n")
        bridge.reply(b"A\r\n")
        bridge.upstream.loseConnection()
        self.assertJSON(self.finish(bridge, pending), 502, {
            "error": "upstream_lost",
            "message": "the upstream connection closed before every reply arrived; "
                       "the lines may or may not have been processed",
            "replies": ["A"],
        })

    def test_reply_error_pattern(self) -> None:
        bridge = self.bridge(reply_error_pattern="^-ERR")
        pending = self.request(bridge, b"SET a 1\nINCR a x\n")
        bridge.reply(b"+OK\r\n-ERR not a number\r\n")
        self.assertJSON(self.finish(bridge, pending), 502, {
            "error": "upstream_error",
            "message": "a reply matched reply_error_pattern",
            "replies": ["+OK", "-ERR not a number"],
        })

    def test_reply_error_pattern_not_matching(self) -> None:
        bridge = self.bridge(reply_error_pattern="^-ERR")
        pending = self.request(bridge, b"GET a\n")
        bridge.reply(b"+-ERR is fine here\r\n")
        self.assertJSON(self.finish(bridge, pending), 200, {"replies": ["+-ERR is fine here"]})

    def test_too_many_pending(self) -> None:
        bridge = self.bridge(max_pending=1)
        first = self.request(bridge, b"a\n")
        answer = self.finish(bridge, self.request(bridge, b"b\n"))
        self.assertJSON(answer, 429, {
            "error": "too_many_pending",
            "message": "1 requests already await replies on the chosen connection "
                       "(max_pending is 1); retry later",
        })
        self.assertEqual(answer.header("Retry-After"), ["1"])
        self.assertEqual(bridge.upstream.value(), b"a\r\n")
        bridge.reply(b"A\n")
        self.assertJSON(self.finish(bridge, first), 200, {"replies": ["A"]})

    def test_not_connected(self) -> None:
        bridge = self.bridge(refuse=True, backoff_initial=1.5)
        answer = self.finish(bridge, self.request(bridge, b"a\n"))
        self.assertJSON(answer, 503, not_connected(f"{REFUSED}; next attempt in 1.5 s"))
        self.assertEqual(answer.header("Retry-After"), ["2"])

    def test_client_gone_cancels_and_late_reply_is_discarded(self) -> None:
        bridge = self.bridge(reply_timeout=5.0)
        gone = self.request(bridge, b"a\n")
        protocol = bridge.member.protocol
        assert protocol is not None
        self.assertEqual(protocol.pending, 1)
        gone.disconnect()  # the HTTP client hangs up
        # The slot stays queued (the line was sent) but holds no timer any more.
        self.assertEqual(protocol.pending, 1)
        self.assertEqual(bridge.clock.getDelayedCalls()[0].getTime(), 15.0)  # stale guard only
        self.assertEqual(len(bridge.clock.getDelayedCalls()), 1)

        refused = self.finish(bridge, self.request(bridge, b"b\n"))
        self.assertJSON(refused, 503, waiting_for_late_replies(15))
        bridge.reply(b"for-a\r\n")
        nxt = self.request(bridge, b"b\n")
        bridge.reply(b"for-b\r\n")
        self.assertJSON(self.finish(bridge, nxt), 200, {"replies": ["for-b"]})
        self.assertEqual(bridge.upstream.value(), b"a\r\nb\r\n")
        self.assertEqual(bridge.pool.totals().late_replies, 1)
        self.assertEqual(protocol.pending, 0)

    def test_handler_deferred_cancel_releases_the_slot(self) -> None:
        """Cancelling what the pool returned (what Klein does on a hang-up)
        frees the caller; the reply slot keeps swallowing the late reply."""
        bridge = self.bridge()
        replies = bridge.pool.request(parse_body(b"x\n", None, 100, b"\r\n"), 5.0)
        replies.cancel()
        self.failureResultOf(replies)
        bridge.reply(b"X\n")
        nxt = self.request(bridge, b"y\n")
        bridge.reply(b"Y\n")
        self.assertJSON(self.finish(bridge, nxt), 200, {"replies": ["Y"]})


def waiting_for_late_replies(stale: int) -> dict[str, str]:
    return {
        "error": "upstream_unavailable",
        "message": "every upstream connection is waiting for the late replies of a request "
                   "that gave up; with reply_framing line and no fence they cannot be told "
                   "from new replies (the connection is closed if they do not come within "
                   f"stale_reply_timeout, {stale} s); nothing was sent",
    }


class BrokenTransport(StringTransportWithDisconnection):
    """A transport whose write fails: an unexpected error inside a handler."""

    def write(self, data: bytes) -> None:
        raise RuntimeError("secret internal detail")


class ProbeAndStatusTests(BridgeTestCase):
    def test_healthz_when_connected(self) -> None:
        bridge = self.bridge()
        self.assertJSON(self.call(bridge, "GET", "/healthz"), 200, {"status": "ok"})

    def test_healthz_when_upstream_down(self) -> None:
        bridge = self.bridge(refuse=True)
        self.assertJSON(self.call(bridge, "GET", "/healthz"), 200, {"status": "ok"})

    def test_readyz_connected(self) -> None:
        bridge = self.bridge()
        self.assertJSON(self.call(bridge, "GET", "/readyz"), 200, {
            "ready": True, "state": "connected", "connected": 1, "pool_size": 1,
        })

    def test_readyz_waiting(self) -> None:
        bridge = self.bridge(refuse=True, backoff_initial=2.5)
        bridge.clock.advance(1.0)
        self.assertJSON(self.call(bridge, "GET", "/readyz"), 503, {
            "ready": False, "state": "waiting", "retry_in": 1.5, "connected": 0, "pool_size": 1,
        })

    def test_readyz_connecting(self) -> None:
        bridge = self.bridge(hang=True)
        self.assertJSON(self.call(bridge, "GET", "/readyz"), 503, {
            "ready": False, "state": "connecting", "retry_in": 0.0, "connected": 0,
            "pool_size": 1,
        })

    def test_readyz_after_the_connection_is_lost(self) -> None:
        bridge = self.bridge(backoff_initial=2.0)
        bridge.upstream.loseConnection()
        self.assertJSON(self.call(bridge, "GET", "/readyz"), 503, {
            "ready": False, "state": "waiting", "retry_in": 2.0, "connected": 0, "pool_size": 1,
        })
        bridge.clock.advance(2.0)
        self.assertJSON(self.call(bridge, "GET", "/readyz"), 200, {
            "ready": True, "state": "connected", "connected": 1, "pool_size": 1,
        })

    def test_readyz_pool_below_min_ready(self) -> None:
        bridge = self.bridge(pool_size=2, min_ready=2, backoff_initial=3.0)
        bridge.endpoint.transports[0].loseConnection()
        self.assertJSON(self.call(bridge, "GET", "/readyz"), 503, {
            "ready": False, "state": "waiting", "retry_in": 3.0, "connected": 1, "pool_size": 2,
        })

    def assertSubset(self, document: dict[str, object], expected: dict[str, object]) -> None:
        self.assertEqual({key: document.get(key, "<missing>") for key in expected}, expected)

    def test_status_connected(self) -> None:
        bridge = self.bridge(now=1_700_000_000, upstream="127.0.0.1:7000")
        bridge.clock.advance(12.5)
        bridge.http_counts["requests"] = 7
        self.assertJSON(self.call(bridge, "POST", "/send", data=b"SET a 1\nSET b 2\n"),
                        202, {"sent": 2})
        bridge.reply(b"hello\n")  # unsolicited
        answer = self.call(bridge, "GET", "/status")
        self.assertEqual((answer.code, answer.content_type), (200, "application/json"))
        document = answer.json()
        self.assertSubset(document, {
            "version": __version__,
            "uptime": 12.5,
            "upstream": "127.0.0.1:7000",
            "state": "connected",
            "connected_since": "2023-11-14T22:13:20.000+00:00",
            "attempts_since_success": 0,
            "retry_delay": None,
            "last_error": None,
        })
        self.assertSubset(document["counters"], {
            "http_requests": 8,  # 7, then the POST /send
            "lines_sent": 2,
            "bytes_sent": len(b"SET a 1\r\nSET b 2\r\n"),
            "frames_received": 1,
            "connects": 1,
            "disconnects": 0,
        })
        self.assertEqual(len(document["members"]), 1)
        self.assertSubset(document["members"][0], {
            "name": "0",
            "state": "connected",
            "connected_since": "2023-11-14T22:13:20.000+00:00",
            "connected_for": 12.5,
            "attempts_since_success": 0,
            "retry_delay": None,
            "last_error": None,
            "pending": 0,
        })

    def test_status_when_upstream_down(self) -> None:
        bridge = self.bridge(refuse=True, backoff_initial=2.0, backoff_factor=2.0)
        bridge.clock.advance(2.0)  # second refusal: next delay 4 s
        answer = self.call(bridge, "GET", "/status")
        document = answer.json()
        refused = "connection refused by localhost:65432"
        self.assertSubset(document, {
            "state": "waiting",
            "connected_since": None,
            "attempts_since_success": 2,
            "retry_delay": 4.0,
            "last_error": refused,
        })
        self.assertSubset(document["counters"], {
            "lines_sent": 0, "bytes_sent": 0, "frames_received": 0, "connects": 0,
            "disconnects": 0,
        })
        self.assertSubset(document["members"][0], {
            "state": "waiting", "attempts_since_success": 2, "retry_delay": 4.0,
            "retry_in": 4.0, "last_error": refused,
        })

    def test_status_after_a_disconnect(self) -> None:
        bridge = self.bridge(backoff_initial=1.0)
        bridge.upstream.loseConnection()
        bridge.clock.advance(1.0)
        document = self.call(bridge, "GET", "/status").json()
        self.assertSubset(document["counters"], {"connects": 2, "disconnects": 1})
        self.assertSubset(document, {"state": "connected", "attempts_since_success": 0})

    def test_unknown_path_is_json_404(self) -> None:
        bridge = self.bridge()
        answer = self.call(bridge, "GET", "/nowhere/%3Cscript%3E")
        self.assertJSON(answer, 404, {
            "error": "not_found", "message": "no route /nowhere/%3Cscript%3E",
        })
        self.assertNotIn(b"<", answer.body)

    def test_wrong_method_is_json_405_with_allow(self) -> None:
        bridge = self.bridge()
        answer = self.call(bridge, "GET", "/send")
        self.assertJSON(answer, 405, {
            "error": "method_not_allowed", "message": "GET is not allowed here; use POST",
        })
        self.assertEqual(answer.header("Allow"), ["POST"])
        self.assertEqual(bridge.upstream.value(), b"")

    def test_wrong_method_on_a_probe(self) -> None:
        bridge = self.bridge()
        answer = self.call(bridge, "POST", "/healthz", data=b"x")
        self.assertJSON(answer, 405, {
            "error": "method_not_allowed", "message": "POST is not allowed here; use GET, HEAD",
        })
        self.assertEqual(answer.header("Allow"), ["GET, HEAD"])

    def test_head_probe_has_no_body(self) -> None:
        bridge = self.bridge()
        client = self.start_request(bridge, "HEAD", "/healthz")
        self.assertEqual(client.transport.value(),
                         b"HTTP/1.1 200 OK\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 16\r\n\r\n")

    def test_handler_exception_is_json_500_without_traceback(self) -> None:
        bridge = self.bridge(transport_factory=BrokenTransport)
        answer = self.call(bridge, "POST", "/send", data=b"x\n")
        self.assertJSON(answer, 500, {
            "error": "internal_error", "message": "internal error; see the log",
        })
        self.assertNotIn(b"Traceback", answer.body)
        self.assertNotIn(b"secret", answer.body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

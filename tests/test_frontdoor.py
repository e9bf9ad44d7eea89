"""The audit of issue 10, one named regression test per finding, on the real
channel of the whole in-memory bridge (tests/http_harness.py)."""

from __future__ import annotations

from twisted.logger import formatEvent

from tests.http_harness import Client, Harness, HarnessTestCase, http_request

HOST = b"Host: bridge.test\r\n"


class FrontDoorTestCase(HarnessTestCase):
    def refused(self, harness: Harness, data: bytes, status: int = 400,
                code: str = "bad_request") -> Client:
        """``data`` on a new connection gets exactly one JSON refusal, the
        connection closes, and nothing reaches the upstream."""
        client = harness.client()
        client.send(data)
        response = client.response()
        self.assertErrorResponse(response, status, code)
        self.assertEqual(response.header(b"Connection"), b"close")
        self.assertTrue(client.closing)
        self.assertEqual(harness.upstream.value(), b"")
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        return client

    def answered(self, client: Client) -> list[int]:
        return [response.status for response in client.responses()]


class AdmissionBypassTests(FrontDoorTestCase):
    """Every target that reaches /send's handler passes admission and is
    counted; the others do not reach it at all."""

    def test_percent_encoded_unreserved_path_is_send_for_everything(self) -> None:
        harness = self.harness(max_inflight=1)
        waiting = harness.start("POST", "/request", b"GET a\n")
        self.assertEqual(harness.service.lifecycle.inflight, 1)
        response = harness.call("POST", "/%73end", b"x\n")
        self.assertErrorResponse(response, 429, "overloaded")
        self.assertEqual(harness.upstream.value(), b"GET a\r\n")
        harness.upstream.peer_sends(b"A\r\n")
        self.assertEqual(waiting.response().status, 200)
        self.assertJSONResponse(harness.call("POST", "/%73%65nd", b"x\n"), 202, {"sent": 1})
        metrics = harness.call("GET", "/metrics").body
        self.assertIn(b'bridge_http_requests_total{code="429",route="/send"} 1.0', metrics)

    def test_encoded_slash_doubled_slash_and_no_slash_never_reach_send(self) -> None:
        harness = self.harness()
        for target in ("/%2Fsend", "//send", "/send/", "/./send", "/SEND"):
            with self.subTest(target=target):
                self.assertErrorResponse(harness.call("POST", target, b"x\n"), 404, "not_found")
        self.refused(harness, http_request("POST", "send", b"x\n"))
        self.assertEqual(harness.upstream.value(), b"")

    def test_drain_waits_for_a_request_on_an_encoded_path(self) -> None:
        harness = self.harness(shutdown_delay=0, shutdown_grace=10)
        waiting = harness.start("POST", "/%72equest", b"GET a\n")
        self.assertEqual(harness.service.lifecycle.inflight, 1)
        stopping = harness.stop()
        self.assertNoResult(stopping)
        self.assertErrorResponse(harness.call("POST", "/%73end", b"x\n"), 503, "shutting_down")
        harness.upstream.peer_sends(b"A\r\n")
        self.assertJSONResponse(waiting.response(), 200, {"replies": ["A"]})


class MessageBoundaryTests(FrontDoorTestCase):
    def test_chunked_trailers_do_not_swallow_the_next_request(self) -> None:
        harness = self.harness()
        self.refused(harness, b"POST /send HTTP/1.1\r\n" + HOST
                     + b"Transfer-Encoding: chunked\r\n\r\n2\r\na\n\r\n0\r\n"
                     + http_request("POST", "/send", b"smuggled\n"))

    def test_transfer_encoding_identity_without_content_length(self) -> None:
        harness = self.harness()
        self.refused(harness, b"POST /send HTTP/1.1\r\n" + HOST
                     + b"Transfer-Encoding: identity\r\n\r\n"
                     + http_request("POST", "/send", b"smuggled\n"))

    def test_transfer_encoding_identity_with_content_length(self) -> None:
        harness = self.harness()
        self.refused(harness, b"POST /send HTTP/1.1\r\n" + HOST
                     + b"Transfer-Encoding: identity\r\nContent-Length: 2\r\n\r\na\n")

    def test_two_transfer_encoding_lines(self) -> None:
        harness = self.harness()
        self.refused(harness, b"POST /send HTTP/1.1\r\n" + HOST
                     + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"2\r\na\n\r\n0\r\n\r\n")

    def test_a_coding_before_chunked(self) -> None:
        harness = self.harness()
        self.refused(harness, b"POST /send HTTP/1.1\r\n" + HOST
                     + b"Transfer-Encoding: identity, chunked\r\n\r\n2\r\na\n\r\n0\r\n\r\n")

    def test_5000_digit_content_length_gets_400_and_no_traceback(self) -> None:
        events = self.capture_logs()
        harness = self.harness()
        self.refused(harness, b"POST /send HTTP/1.1\r\n" + HOST
                     + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n")
        self.assertEqual([e for e in events if e.get("log_failure") is not None], [])
        self.assertEqual([e for e in events if "Traceback" in formatEvent(e)], [])

    def test_pipelined_requests_before_a_refusal_are_answered_first(self) -> None:
        harness = self.harness()
        client = harness.client()
        client.send(http_request("POST", "/send", b"a\n") + http_request("GET", "/status")
                    + b"post /send HTTP/1.1\r\n" + HOST + b"\r\n"
                    + http_request("POST", "/send", b"never\n"))
        self.assertEqual(self.answered(client), [202, 200, 400])
        self.assertTrue(client.closing)
        self.assertEqual(harness.upstream.value(), b"a\r\n")


class StrictHeadTests(FrontDoorTestCase):
    def test_control_byte_in_a_header_value(self) -> None:
        self.refused(self.harness(), b"POST /send HTTP/1.1\r\n" + HOST
                     + b"X-Note: a\x01b\r\nContent-Length: 2\r\n\r\na\n")

    def test_control_byte_in_the_query(self) -> None:
        self.refused(self.harness(), b"POST /send?x=\x01 HTTP/1.1\r\n" + HOST
                     + b"Content-Length: 2\r\n\r\na\n")

    def test_connection_option_list_with_close_closes(self) -> None:
        harness = self.harness()
        client = harness.client()
        client.send(http_request("POST", "/send", b"a\n", {"Connection": "foo,close"})
                    + http_request("POST", "/send", b"b\n"))
        response = client.response()
        self.assertEqual((response.status, response.header(b"Connection")), (202, b"close"))
        self.assertTrue(client.closing)
        self.assertEqual(harness.upstream.value(), b"a\r\n")

    def test_folded_header_line(self) -> None:
        self.refused(self.harness(), b"POST /send HTTP/1.1\r\n" + HOST
                     + b"X-Note: a\r\n b\r\nContent-Length: 2\r\n\r\na\n")

    def test_lower_case_method(self) -> None:
        self.refused(self.harness(), b"post /send HTTP/1.1\r\n" + HOST
                     + b"Content-Length: 2\r\n\r\na\n")

    def test_missing_host(self) -> None:
        self.refused(self.harness(), b"POST /send HTTP/1.1\r\nContent-Length: 2\r\n\r\na\n")

    def test_two_host_headers(self) -> None:
        self.refused(self.harness(), b"POST /send HTTP/1.1\r\n" + HOST + HOST
                     + b"Content-Length: 2\r\n\r\na\n")

    def test_http_1_0_needs_no_host_and_closes(self) -> None:
        harness = self.harness()
        client = harness.client()
        client.send(b"POST /send HTTP/1.0\r\nContent-Length: 2\r\n\r\na\n")
        self.assertEqual(client.response().status, 202)
        self.assertTrue(client.closing)
        self.assertEqual(harness.upstream.value(), b"a\r\n")

    def test_absolute_form_target_is_routed_by_its_path(self) -> None:
        harness = self.harness()
        response = harness.call("POST", "http://bridge.test:8080/send?x=1", b"a\n")
        self.assertJSONResponse(response, 202, {"sent": 1})
        self.assertJSONResponse(harness.call("GET", "HTTP://other/healthz"), 200,
                                {"status": "ok"})
        self.assertEqual(harness.upstream.value(), b"a\r\n")

    def test_bare_lf_line_endings_get_400_at_once(self) -> None:
        harness = self.harness()
        client = self.refused(harness, b"POST /send HTTP/1.1\nHost: b\nContent-Length: 2\n\na\n")
        self.assertEqual(len(client.responses()), 1)

    def test_17000_byte_header_line_gets_431(self) -> None:
        harness = self.harness()
        line = b"X-Big: " + b"a" * 17000 + b"\r\n"
        self.refused(harness, b"POST /send HTTP/1.1\r\n" + HOST + line
                     + b"Content-Length: 2\r\n\r\na\n", 431, "header_too_large")
        # Sent slowly, without its end, it is refused as soon as it passes the limit.
        client = harness.client()
        client.send(b"GET /status HTTP/1.1\r\n" + HOST)
        for _ in range(20):
            client.send(b"X-Slow: " + b"b" * 1000)
        self.assertErrorResponse(client.response(), 431, "header_too_large")

    def test_multipart_body_gets_415(self) -> None:
        harness = self.harness()
        body = (b"--x\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nFLUSHALL\r\n--x--\r\n")
        self.refused(harness, http_request(
            "POST", "/send", body, {"Content-Type": "multipart/form-data; boundary=x"}),
            415, "unsupported_media_type")

    def test_form_urlencoded_is_text(self) -> None:
        harness = self.harness()
        response = harness.call("POST", "/send", b"SET a 1",
                                {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertJSONResponse(response, 202, {"sent": 1})
        self.assertEqual(harness.upstream.value(), b"SET a 1\r\n")


class HalfCloseTests(FrontDoorTestCase):
    def test_a_client_that_half_closes_still_gets_its_answer(self) -> None:
        harness = self.harness()
        client = harness.client()
        client.send(http_request("POST", "/request", b"GET a\n"))
        client.channel.readConnectionLost()  # shutdown(SHUT_WR) after the request
        self.assertFalse(client.closing)
        self.assertEqual(harness.upstream.value(), b"GET a\r\n")
        harness.upstream.peer_sends(b"A\r\n")
        self.assertJSONResponse(client.response(), 200, {"replies": ["A"]})
        self.assertTrue(client.closing)

    def test_pipelined_requests_then_half_close(self) -> None:
        harness = self.harness()
        client = harness.client()
        client.send(http_request("POST", "/send", b"a\n") + http_request("GET", "/status"))
        client.channel.readConnectionLost()
        self.assertEqual(self.answered(client), [202, 200])
        self.assertTrue(client.closing)


class BodyTests(FrontDoorTestCase):
    def test_a_body_in_small_reads_is_whole(self) -> None:
        harness = self.harness()
        body = b"".join(b"line %06d\n" % number for number in range(20000))
        data = http_request("POST", "/send", body)
        client = harness.client()
        for start in range(0, len(data), 1024):
            client.send(data[start:start + 1024])
        self.assertJSONResponse(client.response(), 202, {"sent": 20000})
        self.assertEqual(harness.upstream.value(), body.replace(b"\n", b"\r\n"))


class ClientErrorLogTests(FrontDoorTestCase):
    def test_refusals_are_logged_a_few_a_second_and_counted(self) -> None:
        events = self.capture_logs()
        harness = self.harness()
        for _ in range(10):
            harness.client().send(b"post /send HTTP/1.1\r\n\r\n")
        lines = [formatEvent(e) for e in events if e.get("log_namespace") == "bridge.http.clients"]
        self.assertEqual(len(lines), 3)
        self.assertEqual(lines[0], '10.9.8.7 "- -" refused: 400 bad_request: the request is '
                                   'not valid HTTP/1.1 (Invalid method encountered)')
        self.assertEqual([e for e in events if e.get("log_failure") is not None], [])
        metrics = harness.call("GET", "/metrics").body
        self.assertIn(b"bridge_http_client_errors_suppressed_total 7.0", metrics)
        harness.reactor.advance(1)
        harness.client().send(b"post /send HTTP/1.1\r\n\r\n")
        lines = [formatEvent(e) for e in events if e.get("log_namespace") == "bridge.http.clients"]
        self.assertEqual(len(lines), 4)

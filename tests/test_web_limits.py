"""Body limits and the access log, on a real BridgeSite channel fed raw bytes
over a StringTransport (whose loseConnection, like a real socket's, only
starts closing)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher

from bridge.app.service import BridgeService
from bridge.config import Config
from bridge.http.site import BridgeSite
from tests import http_harness
from tests.fakes_http import Bridge, BridgeTestCase
from tests.http_harness import Client, parse_responses


def too_large(message: str) -> bytes:
    """The exact 413 answer, dated by a clock at 0 (as the bridges here)."""
    return http_harness.too_large(Clock(), message)


class Connection(Client):
    """One client connection to a BridgeSite."""

    def answer(self) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
        (response,), _ = parse_responses(self.transport.value())
        status = b"HTTP/1.1 %d %s" % (response.status, response.reason)
        return status, response.headers, response.body


class WebTestCase(BridgeTestCase):
    def setUp(self) -> None:
        self.counted: list[tuple[str, int]] = []

    def site(self, bridge: Bridge, **kwargs: Any) -> BridgeSite:
        def count(label: str, code: int, seconds: float | None) -> None:
            self.counted.append((label, code))

        return bridge.site(on_request=count, **kwargs)

    def connect(self, bridge: Bridge, **kwargs: Any) -> Connection:
        return self.connection(self.site(bridge, **kwargs))

    def connection(self, site: BridgeSite) -> Connection:
        connection = Connection(site)
        self.addCleanup(connection.disconnect)
        return connection


class BodyLimitTests(WebTestCase):
    def test_declared_length_over_the_limit_is_refused_before_the_body(self) -> None:
        bridge = self.bridge(max_body_bytes=10)
        connection = self.connect(bridge)
        connection.send(
            b"POST /send HTTP/1.1\r\nHost: bridge\r\nContent-Length: 11\r\n\r\n"
        )  # no body byte sent yet: the answer must not wait for it
        self.assertEqual(
            connection.transport.value(),
            too_large("the body is 11 bytes; max_body_bytes is 10"),
        )
        self.assertTrue(connection.transport.disconnecting)
        self.assertEqual(bridge.upstream.value(), b"")
        self.assertEqual(self.counted, [("/send", 413)])

    def test_the_body_that_follows_is_ignored(self) -> None:
        bridge = self.bridge(max_body_bytes=10)
        connection = self.connect(bridge)
        connection.send(b"POST /send HTTP/1.1\r\nHost: b\r\nContent-Length: 20\r\n\r\n")
        connection.send(b"0123456789\n012345678")
        connection.send(b"GET /status HTTP/1.1\r\nHost: b\r\n\r\n")
        self.assertEqual(
            connection.transport.value(),
            too_large("the body is 20 bytes; max_body_bytes is 10"),
        )
        self.assertEqual(bridge.upstream.value(), b"")

    def test_huge_declared_length(self) -> None:
        bridge = self.bridge()  # max_body_bytes defaults to 1 MiB
        connection = self.connect(bridge)
        connection.send(
            b"POST /request HTTP/1.1\r\nHost: b\r\nContent-Length: 1048577\r\n\r\nGET a\r\n"
        )
        self.assertEqual(
            connection.transport.value(),
            too_large("the body is 1048577 bytes; max_body_bytes is 1048576"),
        )
        self.assertEqual(bridge.upstream.value(), b"")

    def test_no_100_continue_after_the_413(self) -> None:
        """curl sends ``Expect: 100-continue`` for large bodies; the 413 must be
        the only answer on the wire."""
        bridge = self.bridge(max_body_bytes=10)
        connection = self.connect(bridge)
        connection.send(
            b"POST /send HTTP/1.1\r\nHost: b\r\nExpect: 100-continue\r\n"
            b"Content-Length: 11\r\n\r\n"
        )
        self.assertEqual(
            connection.transport.value(),
            too_large("the body is 11 bytes; max_body_bytes is 10"),
        )

    def test_100_continue_for_a_body_within_the_limit(self) -> None:
        bridge = self.bridge(max_body_bytes=10)
        connection = self.connect(bridge)
        connection.send(
            b"POST /send HTTP/1.1\r\nHost: b\r\nExpect: 100-continue\r\n"
            b"Content-Length: 6\r\n\r\n"
        )
        self.assertEqual(connection.transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        connection.send(b"hello\n")
        self.assertEqual(bridge.upstream.value(), b"hello\r\n")

    def test_declared_length_at_exactly_the_limit_passes(self) -> None:
        bridge = self.bridge(max_body_bytes=10)
        connection = self.connect(bridge)
        connection.send(
            b"POST /send HTTP/1.1\r\nHost: b\r\nContent-Length: 10\r\n\r\n0123456789"
        )
        status, headers, body = connection.answer()
        self.assertEqual(
            (status, headers[b"content-type"], json.loads(body)),
            (b"HTTP/1.1 202 Accepted", [b"application/json"], {"sent": 1}),
        )
        self.assertEqual(bridge.upstream.value(), b"0123456789\r\n")
        self.assertFalse(connection.transport.disconnecting)
        self.assertEqual(self.counted, [("/send", 202)])

    def test_chunked_body_is_cut_off_once_over_the_limit(self) -> None:
        bridge = self.bridge(max_body_bytes=10)
        connection = self.connect(bridge)
        connection.send(
            b"POST /send HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nabc\n\n\r\n"
        )
        self.assertEqual(connection.transport.value(), b"")  # 5 bytes: still fine
        connection.send(b"6\r\nfghij\n\r\n")  # 11 bytes: over
        refused = too_large("the body is over max_body_bytes (10 bytes)")
        self.assertEqual(connection.transport.value(), refused)
        self.assertTrue(connection.transport.disconnecting)
        connection.send(b"3\r\nxyz\r\n0\r\n\r\n")
        self.assertEqual(connection.transport.value(), refused)
        self.assertEqual(bridge.upstream.value(), b"")
        self.assertEqual(self.counted, [("/send", 413)])

    def test_chunked_body_at_exactly_the_limit_passes(self) -> None:
        bridge = self.bridge(max_body_bytes=10)
        connection = self.connect(bridge)
        connection.send(
            b"POST /send HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nabc\n\r\n6\r\nfghij\n\r\n0\r\n\r\n"
        )
        status, headers, body = connection.answer()
        self.assertEqual(
            (status, headers[b"content-type"], json.loads(body)),
            (b"HTTP/1.1 202 Accepted", [b"application/json"], {"sent": 2}),
        )
        self.assertEqual(bridge.upstream.value(), b"abc\r\nfghij\r\n")

    def test_chunked_body_in_one_piece_over_the_limit(self) -> None:
        bridge = self.bridge(max_body_bytes=10)
        connection = self.connect(bridge)
        connection.send(
            b"POST /send HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"b\r\n0123456789\n\r\n0\r\n\r\n"
        )
        self.assertEqual(
            connection.transport.value(),
            too_large("the body is over max_body_bytes (10 bytes)"),
        )
        self.assertEqual(bridge.upstream.value(), b"")

    def test_site_limit_is_independent_of_line_limit(self) -> None:
        bridge = self.bridge(max_body_bytes=10, max_line_bytes=4)
        connection = self.connect(bridge)
        connection.send(b"POST /send HTTP/1.1\r\nHost: b\r\nContent-Length: 6\r\n\r\nabcde\n")
        status, _, body = connection.answer()
        self.assertEqual(
            (status, json.loads(body)),
            (b"HTTP/1.1 413 Content Too Large",
             {"error": "line_too_long", "message": "line 1 is 5 bytes; the limit is 4"}),
        )
        self.assertEqual(bridge.upstream.value(), b"")

    def test_refusals_are_counted_by_the_service(self) -> None:
        """The whole service's site: a request refused before any handler
        still reaches the request counters, under its route."""
        service = BridgeService(Config().with_values(max_body_bytes=10), MemoryReactorClock())
        declared = Connection(service.site)
        declared.send(b"POST /send?x=1 HTTP/1.1\r\nHost: b\r\nContent-Length: 11\r\n\r\n")
        chunked = Connection(service.site)
        chunked.send(
            b"POST /request HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"b\r\n0123456789\n\r\n"
        )
        self.assertEqual(
            (declared.transport.value(), chunked.transport.value()),
            (too_large("the body is 11 bytes; max_body_bytes is 10"),
             too_large("the body is over max_body_bytes (10 bytes)")),
        )
        # Both were calls of work routes, answered with an error (the page's rates).
        self.assertEqual(service.http_counts,
                         {"requests": 2, "work_requests": 2, "work_errors": 2})
        metrics = service.metrics.render().decode()
        self.assertIn('bridge_http_requests_total{code="413",route="/send"} 1.0\n', metrics)
        self.assertIn('bridge_http_requests_total{code="413",route="/request"} 1.0\n', metrics)


class AccessLogTests(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.logged: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "bridge.access":
                self.logged.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def site(self, bridge: Bridge, **kwargs: Any) -> BridgeSite:
        kwargs.setdefault("access_log", True)  # off by default; these tests turn it on
        return super().site(bridge, **kwargs)

    def get(self, site: BridgeSite, target: bytes) -> bytes:
        connection = self.connection(site)
        connection.send(b"GET " + target + b" HTTP/1.1\r\nHost: b\r\n\r\n")
        return connection.answer()[2]

    def test_probes_are_never_logged(self) -> None:
        bridge = self.bridge()
        site = self.site(bridge)
        for target in (b"/healthz", b"/readyz", b"/metrics", b"/healthz?verbose=1"):
            self.get(site, target)
        self.assertEqual(self.logged, [])
        self.assertEqual(
            [code for _, code in self.counted], [200, 200, 200, 200]
        )

    def test_probes_are_not_logged_when_failing(self) -> None:
        bridge = self.bridge(refuse=True)
        self.get(self.site(bridge), b"/readyz")
        self.assertEqual(self.logged, [])
        self.assertEqual(self.counted, [("/readyz", 503)])

    def test_other_requests_are_logged(self) -> None:
        bridge = self.bridge()
        site = self.site(bridge)
        status_body = self.get(site, b"/status")
        missing_body = self.get(site, b"/nope?x=1")
        connection = self.connection(site)
        connection.send(b"POST /send HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\na\n")
        self.assertEqual(
            [formatEvent(event) for event in self.logged],
            [
                f'10.9.8.7 "GET /status" 200 {len(status_body)}',
                f'10.9.8.7 "GET /nope?x=1" 404 {len(missing_body)}',
                '10.9.8.7 "POST /send" 202 11',
            ],
        )
        self.assertEqual(
            [(e["client"], e["method"], e["code"]) for e in self.logged],
            [("10.9.8.7", "GET", 200), ("10.9.8.7", "GET", 404), ("10.9.8.7", "POST", 202)],
        )

    def test_access_log_off(self) -> None:
        bridge = self.bridge()
        site = self.site(bridge, access_log=False)
        self.get(site, b"/status")
        self.assertEqual(self.logged, [])
        self.assertEqual(self.counted, [("/status", 200)])

"""GET /metrics: Prometheus text from prometheus_client, parsed back with its
own parser, with exact values after each kind of event."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from bridge.metrics import _LATENCY_BUCKETS, _HttpAnswers
from tests.http_harness import Harness, HarnessTestCase, chunked

Labels = tuple[tuple[str, str], ...]

OUTCOMES = ("ok", "upstream_error", "timeout", "lost", "cancelled")


def scrape(harness: Harness) -> dict[tuple[str, Labels], float]:
    """Every sample of one GET /metrics (``_created`` timestamps left out)."""
    response = harness.call("GET", "/metrics")
    assert response.status == 200, response
    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(response.body.decode("utf-8")):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, key
            samples[key] = sample.value
    return samples


def value(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """A sample's value; families about upstreams are read for the upstream
    named default unless ``upstream=`` says otherwise."""
    key = (name, tuple(sorted(labels.items())))
    if key not in samples and "upstream" not in labels:
        key = (name, tuple(sorted({**labels, "upstream": "default"}.items())))
    return samples[key]


def http_counts(samples: dict[tuple[str, Labels], float]) -> dict[tuple[str, str], float]:
    """bridge_http_requests_total as {(route, code): count}."""
    counts = {}
    for (name, labels), number in samples.items():
        if name == "bridge_http_requests_total":
            found = dict(labels)
            counts[(found["route"], found["code"])] = number
    return counts


def replies(samples: dict[tuple[str, Labels], float]) -> dict[str, float]:
    return {outcome: value(samples, "bridge_replies_total", outcome=outcome)
            for outcome in OUTCOMES}


class MetricsTests(HarnessTestCase):
    def test_exposition(self) -> None:
        harness = self.harness()
        response = harness.call("GET", "/metrics")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"Content-Type"),
                         b"text/plain; version=0.0.4; charset=utf-8")
        self.assertEqual(int(response.header(b"Content-Length") or b"-1"), len(response.body))
        self.assertIn(b"# TYPE bridge_http_requests_total counter\n", response.body)
        self.assertIn(b"# TYPE bridge_reply_latency_seconds histogram\n", response.body)
        self.assertIn(b"# TYPE bridge_upstream_connected_members gauge\n", response.body)

    def test_fresh_bridge(self) -> None:
        harness = self.harness()
        samples = scrape(harness)
        self.assertEqual(http_counts(samples), {})
        self.assertEqual(replies(samples), dict.fromkeys(OUTCOMES, 0.0))
        expected = {
            "bridge_lines_sent_total": 0.0,
            "bridge_bytes_sent_total": 0.0,
            "bridge_frames_received_total": 0.0,
            "bridge_unsolicited_frames_total": 0.0,
            "bridge_late_replies_total": 0.0,
            "bridge_discarded_replies_total": 0.0,
            "bridge_send_errors_total": 0.0,
            "bridge_upstream_connects_total": 1.0,
            "bridge_upstream_disconnects_total": 0.0,
            "bridge_upstream_connection_attempts_total": 1.0,
            "bridge_upstream_desyncs_total": 0.0,
            "bridge_upstream_connected_members": 1.0,
            "bridge_upstream_pool_size": 1.0,
            "bridge_pending_replies": 0.0,
            "bridge_upstream_unsent_bytes": 0.0,
            "bridge_http_inflight_requests": 0.0,
            "bridge_events_subscribers": 0.0,
            "bridge_events_published_total": 0.0,
            "bridge_events_dropped_total": 0.0,
            "bridge_reply_latency_seconds_count": 0.0,
            "bridge_reply_latency_seconds_sum": 0.0,
        }
        self.assertEqual({name: value(samples, name) for name in expected}, expected)

    def test_one_send(self) -> None:
        harness = self.harness()
        harness.reactor.advance(0.5)
        self.assertEqual(harness.call("POST", "/send", b"SET a 1\nSET b 2\n").status, 202)
        response = harness.call("GET", "/metrics")
        self.assertIn(b'bridge_http_requests_total{code="202",route="/send"} 1.0\n',
                      response.body)
        samples = scrape(harness)
        self.assertEqual(http_counts(samples), {("/send", "202"): 1.0, ("/metrics", "200"): 1.0})
        self.assertEqual(value(samples, "bridge_lines_sent_total"), 2.0)
        self.assertEqual(value(samples, "bridge_bytes_sent_total"), 18.0)
        self.assertEqual(
            value(samples, "bridge_http_request_duration_seconds_count", route="/send"), 1.0)
        self.assertEqual(harness.upstream.value(), b"SET a 1\r\nSET b 2\r\n")

    def test_status_codes_by_route(self) -> None:
        harness = self.harness(max_body_bytes=100)
        harness.call("POST", "/send", b"a\n")
        harness.call("POST", "/send", b"")
        harness.call("POST", "/send", b"a\rb")
        harness.call("GET", "/send")
        harness.call("GET", "/healthz")
        harness.call("GET", "/readyz")
        harness.call("GET", "/status")
        client = harness.client()
        client.send(chunked("POST", "/send", b"b\n"))
        for path in ("/a", "/b", "/c/d", "/sendx", "/send/", "/%2e%2e/etc", "/metrics/x"):
            self.assertEqual(harness.call("GET", path).status, 404)
        samples = scrape(harness)
        self.assertEqual(http_counts(samples), {
            ("/send", "202"): 2.0,
            ("/send", "400"): 2.0,
            ("/send", "405"): 1.0,
            ("/healthz", "200"): 1.0,
            ("/readyz", "200"): 1.0,
            ("/status", "200"): 1.0,
            ("other", "404"): 7.0,
        })
        routes = {dict(labels).get("route") for _, labels in samples}
        self.assertEqual(routes, {None, "/send", "/healthz", "/readyz", "/status", "other"})

    def test_refusals_are_counted(self) -> None:
        harness = self.harness(token="s3cret", max_inflight=1, metrics_auth=False)
        harness.call("POST", "/send", b"a\n")
        waiting = harness.start("POST", "/request", b"a\n",
                                {"Authorization": "Bearer s3cret"})
        harness.call("POST", "/send", b"a\n", {"Authorization": "Bearer s3cret"})
        samples = scrape(harness)
        self.assertEqual(http_counts(samples), {("/send", "401"): 1.0, ("/send", "429"): 1.0})
        self.assertEqual(value(samples, "bridge_http_inflight_requests"), 1.0)
        self.assertEqual(value(samples, "bridge_pending_replies"), 1.0)
        harness.upstream.peer_sends(b"ok\n")
        self.assertEqual(waiting.response().status, 200)
        samples = scrape(harness)
        self.assertEqual(value(samples, "bridge_http_inflight_requests"), 0.0)
        self.assertEqual(value(samples, "bridge_pending_replies"), 0.0)
        self.assertEqual(http_counts(samples)[("/request", "200")], 1.0)

    def test_reply_outcomes(self) -> None:
        harness = self.harness(reply_timeout=1, reply_error_pattern="^-ERR", backoff_initial=1)
        # ok, after 0.25 s
        waiting = harness.start("POST", "/request", b"GET a\n")
        harness.reactor.advance(0.25)
        harness.upstream.peer_sends(b"1\r\n")
        self.assertEqual(waiting.response().status, 200)
        self.assertEqual(replies(scrape(harness)), {**dict.fromkeys(OUTCOMES, 0.0), "ok": 1.0})
        # upstream_error
        waiting = harness.start("POST", "/request", b"GET b\n")
        harness.upstream.peer_sends(b"-ERR no\r\n")
        self.assertEqual(waiting.response().status, 502)
        # timeout
        waiting = harness.start("POST", "/request", b"GET c\n")
        harness.reactor.advance(1)
        self.assertEqual(waiting.response().status, 504)
        harness.upstream.peer_sends(b"late\r\n")
        # cancelled
        waiting = harness.start("POST", "/request", b"GET d\n")
        waiting.disconnect()
        harness.upstream.peer_sends(b"late\r\n")
        # lost
        waiting = harness.start("POST", "/request", b"GET e\n")
        harness.upstream.peer_closes()
        self.assertEqual(waiting.response().status, 502)
        samples = scrape(harness)
        self.assertEqual(replies(samples), dict.fromkeys(OUTCOMES, 1.0))
        # Latency of the two that got every reply: 0.25 s and 0 s.
        self.assertEqual(value(samples, "bridge_reply_latency_seconds_count"), 2.0)
        self.assertEqual(value(samples, "bridge_reply_latency_seconds_sum"), 0.25)
        self.assertEqual(value(samples, "bridge_reply_latency_seconds_bucket", le="0.1"), 1.0)
        self.assertEqual(value(samples, "bridge_reply_latency_seconds_bucket", le="0.25"), 2.0)
        self.assertEqual(value(samples, "bridge_reply_latency_seconds_bucket", le="+Inf"), 2.0)
        self.assertEqual(http_counts(samples), {
            ("/request", "200"): 1.0, ("/request", "502"): 2.0, ("/request", "504"): 1.0,
            ("/metrics", "200"): 1.0,
        })
        self.assertEqual(value(samples, "bridge_lines_sent_total"), 5.0)
        self.assertEqual(value(samples, "bridge_bytes_sent_total"), 35.0)
        # 1, -ERR no, and the late replies to the timed-out and the cancelled request
        self.assertEqual(value(samples, "bridge_frames_received_total"), 4.0)
        self.assertEqual(value(samples, "bridge_late_replies_total"), 2.0)
        self.assertEqual(value(samples, "bridge_upstream_disconnects_total"), 1.0)
        self.assertEqual(value(samples, "bridge_upstream_connected_members"), 0.0)

    def test_request_duration(self) -> None:
        harness = self.harness(reply_timeout=5)
        waiting = harness.start("POST", "/request", b"GET a\n")
        harness.reactor.advance(2)
        harness.upstream.peer_sends(b"1\r\n")
        self.assertEqual(waiting.response().status, 200)
        samples = scrape(harness)
        self.assertEqual(
            value(samples, "bridge_http_request_duration_seconds_sum", route="/request"), 2.0)
        self.assertEqual(
            value(samples, "bridge_http_request_duration_seconds_bucket", route="/request",
                  le="1.0"), 0.0)
        self.assertEqual(
            value(samples, "bridge_http_request_duration_seconds_bucket", route="/request",
                  le="2.5"), 1.0)

    def test_connections(self) -> None:
        harness = self.harness(pool_size=2, connect=1, backoff_initial=1)
        samples = scrape(harness)
        self.assertEqual(value(samples, "bridge_upstream_connected_members"), 1.0)
        self.assertEqual(value(samples, "bridge_upstream_pool_size"), 2.0)
        harness.connect_upstream()
        harness.upstreams[0].peer_closes()
        harness.reactor.advance(2)
        samples = scrape(harness)
        self.assertEqual(value(samples, "bridge_upstream_connected_members"), 1.0)
        self.assertEqual(value(samples, "bridge_upstream_connects_total"), 2.0)
        self.assertEqual(value(samples, "bridge_upstream_disconnects_total"), 1.0)
        self.assertEqual(value(samples, "bridge_upstream_connection_attempts_total"), 3.0)
        harness.connect_upstream()
        samples = scrape(harness)
        self.assertEqual(value(samples, "bridge_upstream_connected_members"), 2.0)
        self.assertEqual(value(samples, "bridge_upstream_connects_total"), 3.0)

    def test_gauges(self) -> None:
        harness = self.harness(write_high_water=1000, write_low_water=10)
        harness.upstream.kernel_full = True
        harness.call("POST", "/send", b"0123456789\n")
        first = harness.start("POST", "/request", b"a\nb\n")
        second = harness.start("POST", "/request", b"c\n")
        stream = harness.start("GET", "/events")
        harness.upstream.peer_sends(b"A\r\n")
        samples = scrape(harness)
        self.assertEqual(value(samples, "bridge_upstream_unsent_bytes"), 12.0 + 6.0 + 3.0)
        self.assertEqual(value(samples, "bridge_pending_replies"), 2.0)
        self.assertEqual(value(samples, "bridge_http_inflight_requests"), 2.0)
        self.assertEqual(value(samples, "bridge_events_subscribers"), 1.0)
        self.assertEqual(value(samples, "bridge_frames_received_total"), 1.0)
        harness.upstream.kernel_takes(15)
        harness.upstream.peer_sends(b"B\r\nC\r\nhello\r\n")
        self.assertEqual(first.response().json(), {"replies": ["A", "B"]})
        self.assertEqual(second.response().json(), {"replies": ["C"]})
        stream.disconnect()
        samples = scrape(harness)
        self.assertEqual(value(samples, "bridge_upstream_unsent_bytes"), 6.0)
        self.assertEqual(value(samples, "bridge_pending_replies"), 0.0)
        self.assertEqual(value(samples, "bridge_http_inflight_requests"), 0.0)
        self.assertEqual(value(samples, "bridge_events_subscribers"), 0.0)
        self.assertEqual(value(samples, "bridge_unsolicited_frames_total"), 1.0)
        self.assertEqual(value(samples, "bridge_events_published_total"), 1.0)
        self.assertEqual(value(samples, "bridge_frames_received_total"), 4.0)

    def test_each_bridge_has_its_own_registry(self) -> None:
        one = self.harness()
        other = self.harness()
        one.call("POST", "/send", b"a\n")
        self.assertEqual(value(scrape(one), "bridge_lines_sent_total"), 1.0)
        self.assertEqual(value(scrape(other), "bridge_lines_sent_total"), 0.0)
        self.assertEqual(http_counts(scrape(other)), {("/metrics", "200"): 1.0})


class HttpAnswersExpositionTests(SynchronousTestCase):
    """The HTTP answer metrics are counted in plain dicts (bridge.metrics):
    their exposition must be what prometheus_client's own Counter and
    Histogram write for the same answers, line for line."""

    def test_same_text_as_counter_and_histogram(self) -> None:
        answers = [("/send", 202, 0.0001), ("/send", 202, 0.0005), ("/send", 429, 0.003),
                   ("other", 404, 0.7), ("/status", 200, None), ("/send", 202, 75.0),
                   ("/request", 504, 30.0), ("/send", 202, -1.0)]
        ours = CollectorRegistry()
        collector = _HttpAnswers(_LATENCY_BUCKETS)
        ours.register(collector)
        theirs = CollectorRegistry()
        counter = Counter("bridge_http_requests", "HTTP requests answered", ["route", "code"],
                          registry=theirs)
        histogram = Histogram("bridge_http_request_duration_seconds",
                              "Time from request received to answer", ["route"],
                              buckets=_LATENCY_BUCKETS, registry=theirs)
        for route, code, seconds in answers:
            collector.record(route, code, seconds)
            counter.labels(route, str(code)).inc()
            if seconds is not None:
                histogram.labels(route).observe(seconds)

        def without_created(registry: CollectorRegistry) -> list[str]:
            return [line for line in generate_latest(registry).decode().splitlines()
                    if "_created{" not in line]

        expected = without_created(theirs)
        self.assertIn('bridge_http_requests_total{code="202",route="/send"} 4.0', expected)
        self.assertEqual(without_created(ours), expected)
        created = [line for line in generate_latest(ours).decode().splitlines()
                   if "_created{" in line]
        self.assertEqual(len(created), 5 + 3)  # one per (route, code), one per timed route

"""Prometheus metrics, through prometheus_client and a registry per bridge.

Event metrics (HTTP requests, replies, latencies) are recorded as they
happen; everything the pool already counts is read at scrape time by a
collector, so the hot path pays nothing for it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

try:
    # What generate_latest() writes; prometheus_client labels it so itself
    # unless a scraper negotiates version 1.0.0 (CONTENT_TYPE_LATEST).
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
except ImportError:  # prometheus_client < 0.22, where CONTENT_TYPE_LATEST is 0.0.4
    from prometheus_client.exposition import CONTENT_TYPE_LATEST as CONTENT_TYPE

from bridge.app.lifecycle import Lifecycle
from bridge.http.clientlog import ClientErrorLog
from bridge.http.events import EventHub
from bridge.http.routes import LABELS, OTHER
from bridge.upstream.pool import UpstreamPool

REPLY_OUTCOMES = ("ok", "upstream_error", "timeout", "lost", "cancelled")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0, 30.0, 60.0)


class _PoolCollector(Collector):
    """Reads the pool's counters and gauges at scrape time."""

    def __init__(
        self, pool: UpstreamPool, lifecycle: Lifecycle, events: EventHub,
        client_errors: ClientErrorLog | None,
    ) -> None:
        self._pool = pool
        self._lifecycle = lifecycle
        self._events = events
        self._client_errors = client_errors

    def collect(self) -> Iterator[Any]:
        totals = self._pool.totals()
        counters: list[tuple[str, str, int]] = [
            ("bridge_lines_sent", "Lines written to the upstream", totals.lines_sent),
            ("bridge_bytes_sent", "Bytes written to the upstream", totals.bytes_sent),
            ("bridge_frames_received", "Replies and messages received from the upstream",
             totals.frames_received),
            ("bridge_unsolicited_frames", "Messages received while no reply was awaited",
             totals.unsolicited),
            ("bridge_late_replies", "Replies discarded because their request had given up",
             totals.late_replies),
            ("bridge_discarded_replies", "Replies to POST /send lines, consumed (send_replies)",
             totals.discarded_replies),
            ("bridge_send_errors", "Error replies to POST /send lines (send_replies check)",
             totals.send_errors),
            ("bridge_upstream_connects", "Upstream connections established (ready)",
             totals.connects),
            ("bridge_upstream_disconnects", "Upstream connections lost", totals.disconnects),
            ("bridge_upstream_connection_attempts", "Upstream connection attempts",
             totals.attempts),
            ("bridge_upstream_desyncs", "Connections closed because replies were out of step",
             totals.desyncs),
            ("bridge_send_unconfirmed", "POST /send commands whose replies were still due "
             "when their connection ended (the upstream may not have processed them)",
             totals.send_unconfirmed),
            ("bridge_events_published", "Events published to GET /events",
             self._events.published),
            ("bridge_events_dropped", "GET /events subscribers dropped for not reading",
             self._events.dropped),
            ("bridge_http_client_errors_suppressed",
             "Refused requests not logged (over the log's budget of lines a second)",
             0 if self._client_errors is None else self._client_errors.suppressed),
        ]
        for name, documentation, value in counters:
            family = CounterMetricFamily(name, documentation)
            family.add_metric([], value)
            yield family
        gauges: list[tuple[str, str, float]] = [
            ("bridge_upstream_connected_members", "Pool members connected and ready",
             self._pool.connected_count()),
            ("bridge_upstream_pool_size", "Pool members configured", len(self._pool.members)),
            ("bridge_pending_replies", "Requests awaiting upstream replies",
             self._pool.pending()),
            ("bridge_upstream_unsent_bytes", "Bytes accepted but not yet sent upstream",
             self._pool.unsent()),
            ("bridge_http_inflight_requests", "POST /send and /request being handled",
             self._lifecycle.inflight),
            ("bridge_events_subscribers", "Open GET /events streams",
             self._events.subscribers),
        ]
        for name, documentation, number in gauges:
            gauge = GaugeMetricFamily(name, documentation)
            gauge.add_metric([], number)
            yield gauge
        yield from self._per_address()

    def _per_address(self) -> Iterator[Any]:
        """One series per upstream address (a group's, or the one upstream)."""
        rows = self._pool.address_status()
        families: list[tuple[Any, str, str, Callable[[dict[str, Any]], float]]] = [
            (CounterMetricFamily, "bridge_upstream_address_connects",
             "Connections established (ready) per upstream address",
             lambda row: row["connects"]),
            (CounterMetricFamily, "bridge_upstream_address_failures",
             "Failed attempts, handshakes and probes, and connections closed as out of "
             "step, per upstream address", lambda row: row["failures"]),
            (GaugeMetricFamily, "bridge_upstream_address_connected_members",
             "Pool members connected per upstream address",
             lambda row: len(row["connected_members"])),
            (GaugeMetricFamily, "bridge_upstream_address_healthy",
             "1 when the upstream address has not failed since its last success",
             lambda row: 1 if row["healthy"] else 0),
        ]
        for kind, name, documentation, value in families:
            family = kind(name, documentation, labels=["address"])
            for row in rows:
                family.add_metric([str(row["address"])], value(row))
            yield family


class Metrics:
    """The bridge's metrics; one instance (and registry) per bridge."""

    content_type = CONTENT_TYPE.encode("ascii")

    def __init__(
        self, pool: UpstreamPool, lifecycle: Lifecycle, events: EventHub,
        client_errors: ClientErrorLog | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "bridge_http_requests", "HTTP requests answered", ["route", "code"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "bridge_http_request_duration_seconds", "Time from request received to answer",
            ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.replies = Counter(
            "bridge_replies", "POST /request outcomes", ["outcome"], registry=self.registry,
        )
        self.reply_latency = Histogram(
            "bridge_reply_latency_seconds", "Time from writing lines to their last reply",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        # Bound once: labels() costs a lock and a dict look-up per call.
        self._reply_counters = {
            outcome: self.replies.labels(outcome).inc for outcome in REPLY_OUTCOMES
        }
        self._counted: dict[tuple[str, int], Callable[[], None]] = {}
        self._timed: dict[str, Callable[[float], None]] = {}
        self.registry.register(_PoolCollector(pool, lifecycle, events, client_errors))

    def count_reply(self, outcome: str) -> None:
        self._reply_counters[outcome]()

    def request_done(self, route: str, code: int, seconds: float | None) -> None:
        """One answer, labelled with its route (see bridge.http.routes)."""
        if route not in LABELS:
            route = OTHER
        key = (route, code)
        increment = self._counted.get(key)
        if increment is None:
            increment = self._counted[key] = self.http_requests.labels(route, str(code)).inc
        increment()
        if seconds is not None:
            observe = self._timed.get(route)
            if observe is None:
                observe = self._timed[route] = self.http_duration.labels(route).observe
            observe(seconds)

    def render(self) -> bytes:
        exposition: bytes = generate_latest(self.registry)
        return exposition

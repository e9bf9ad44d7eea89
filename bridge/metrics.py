"""Prometheus metrics, through prometheus_client and a registry per bridge.

Event metrics (HTTP requests, replies, latencies) are recorded as they
happen; everything the pool already counts is read at scrape time by a
collector, so the hot path pays nothing for it.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

try:
    # What generate_latest() writes; prometheus_client labels it so itself
    # unless a scraper negotiates version 1.0.0 (CONTENT_TYPE_LATEST).
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
except ImportError:  # prometheus_client < 0.22, where CONTENT_TYPE_LATEST is 0.0.4
    from prometheus_client.exposition import CONTENT_TYPE_LATEST as CONTENT_TYPE

from bridge.app.lifecycle import Lifecycle
from bridge.http.clientlog import ClientErrorLog
from bridge.http.routes import LABELS, OTHER
from bridge.http.upstreams import Upstream, Upstreams
from bridge.upstream.protocol import Counters

REPLY_OUTCOMES = ("ok", "upstream_error", "timeout", "lost", "cancelled")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0, 30.0, 60.0)


class _UpstreamsCollector(Collector):
    """Reads every upstream's counters and gauges at scrape time; each family
    about upstreams has an ``upstream`` label (and ``address`` where it is
    per address)."""

    def __init__(
        self, upstreams: Upstreams, lifecycle: Lifecycle, client_errors: ClientErrorLog | None,
    ) -> None:
        self._upstreams = upstreams
        self._lifecycle = lifecycle
        self._client_errors = client_errors

    def collect(self) -> Iterator[Any]:
        counters: list[tuple[str, str, Callable[[Upstream, Counters], float]]] = [
            ("bridge_lines_sent", "Lines written to the upstream",
             lambda u, t: t.lines_sent),
            ("bridge_bytes_sent", "Bytes written to the upstream", lambda u, t: t.bytes_sent),
            ("bridge_frames_received", "Replies and messages received from the upstream",
             lambda u, t: t.frames_received),
            ("bridge_unsolicited_frames", "Messages received while no reply was awaited",
             lambda u, t: t.unsolicited),
            ("bridge_late_replies", "Replies discarded because their request had given up",
             lambda u, t: t.late_replies),
            ("bridge_discarded_replies", "Replies to POST /send lines, consumed (send_replies)",
             lambda u, t: t.discarded_replies),
            ("bridge_send_errors", "Error replies to POST /send lines (send_replies check)",
             lambda u, t: t.send_errors),
            ("bridge_upstream_connects", "Upstream connections established (ready)",
             lambda u, t: t.connects),
            ("bridge_upstream_disconnects", "Upstream connections lost",
             lambda u, t: t.disconnects),
            ("bridge_upstream_connection_attempts", "Upstream connection attempts",
             lambda u, t: t.attempts),
            ("bridge_upstream_desyncs", "Connections closed because replies were out of step",
             lambda u, t: t.desyncs),
            ("bridge_send_unconfirmed", "POST /send commands whose replies were still due "
             "when their connection ended (the upstream may not have processed them)",
             lambda u, t: t.send_unconfirmed),
            ("bridge_events_published", "Events published to GET /events",
             lambda u, t: u.events.published),
            ("bridge_events_dropped", "GET /events subscribers dropped for not reading",
             lambda u, t: u.events.dropped),
        ]
        gauges: list[tuple[str, str, Callable[[Upstream, Counters], float]]] = [
            ("bridge_upstream_connected_members", "Pool members connected and ready",
             lambda u, t: u.pool.connected_count()),
            ("bridge_upstream_pool_size", "Pool members configured",
             lambda u, t: len(u.pool.members)),
            ("bridge_upstream_ready", "1 when the upstream is ready (min_ready members)",
             lambda u, t: 1 if u.pool.ready() else 0),
            ("bridge_pending_replies", "Requests awaiting upstream replies",
             lambda u, t: u.pool.pending()),
            ("bridge_upstream_unsent_bytes", "Bytes accepted but not yet sent upstream",
             lambda u, t: u.pool.unsent()),
            ("bridge_events_subscribers", "Open GET /events streams",
             lambda u, t: u.events.subscribers),
        ]
        upstreams = list(self._upstreams.values())
        totals = [upstream.pool.totals() for upstream in upstreams]
        for kinds, family_type in ((counters, CounterMetricFamily),
                                   (gauges, GaugeMetricFamily)):
            for name, documentation, value in kinds:
                family = family_type(name, documentation, labels=["upstream"])
                for upstream, total in zip(upstreams, totals, strict=True):
                    family.add_metric([upstream.name], value(upstream, total))
                yield family
        suppressed = CounterMetricFamily(
            "bridge_http_client_errors_suppressed",
            "Refused requests not logged (over the log's budget of lines a second)")
        suppressed.add_metric([], 0 if self._client_errors is None
                              else self._client_errors.suppressed)
        yield suppressed
        inflight = GaugeMetricFamily("bridge_http_inflight_requests",
                                     "POST /send and /request being handled")
        inflight.add_metric([], self._lifecycle.inflight)
        yield inflight
        yield from self._per_address(upstreams)
        yield from self._spools(upstreams)

    def _spools(self, upstreams: list[Upstream]) -> Iterator[Any]:
        """One series per upstream with a spool (once it is open)."""
        rows = [(upstream.name, stats) for upstream in upstreams if upstream.spool is not None
                for stats in (upstream.spool.stats(),) if stats is not None]
        for kind, name, documentation, value in (
            (GaugeMetricFamily, "bridge_spool_records", "Records (POST /send requests) in the "
             "spool not yet delivered", lambda st: st.records),
            (GaugeMetricFamily, "bridge_spool_bytes", "Bytes the spool holds on disk",
             lambda st: st.bytes),
            (GaugeMetricFamily, "bridge_spool_max_bytes", "spool_max_bytes",
             lambda st: st.max_bytes),
            (GaugeMetricFamily, "bridge_spool_oldest_age_seconds",
             "Age of the oldest record not yet delivered (0 when none)",
             lambda st: st.oldest_age or 0.0),
            (CounterMetricFamily, "bridge_spool_retired", "Records delivered and retired",
             lambda st: st.retired),
            (CounterMetricFamily, "bridge_spool_redelivered", "Records handed out again "
             "(after a restart or a lost connection): possible duplicates upstream",
             lambda st: st.redelivered),
            (CounterMetricFamily, "bridge_spool_set_aside", "Damaged records found in the "
             "spool and set aside", lambda st: st.set_aside),
        ):
            family = kind(name, documentation, labels=["upstream"])
            for upstream, stats in rows:
                family.add_metric([upstream], value(stats))
            yield family

    def _per_address(self, upstreams: list[Upstream]) -> Iterator[Any]:
        """One series per upstream address (a group's, or the one upstream)."""
        rows = [(upstream.name, row) for upstream in upstreams
                for row in upstream.pool.address_status()]
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
            family = kind(name, documentation, labels=["upstream", "address"])
            for upstream, row in rows:
                family.add_metric([upstream, str(row["address"])], value(row))
            yield family


class _HttpAnswers(Collector):
    """``bridge_http_requests`` (a counter per route and code) and
    ``bridge_http_request_duration_seconds`` (a histogram per route).

    Recorded for every answer, so in plain dicts: prometheus_client's
    Counter.inc and Histogram.observe take a lock per value and search the
    buckets in Python, several times the cost of this for a small /send.  One
    reactor thread records; a scrape reads.  Exposed with exactly the
    families, samples and order those two instruments produce (``_total``
    and ``_created``; ``_bucket``, ``_count``, ``_sum`` and ``_created``).
    """

    _COUNTER = ("bridge_http_requests", "HTTP requests answered")
    _HISTOGRAM = ("bridge_http_request_duration_seconds", "Time from request received to answer")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self._bounds = buckets
        self._les = [floatToGoString(bound) for bound in buckets] + ["+Inf"]
        #: (route, code) -> [count, created]
        self._counts: dict[tuple[str, int], list[float]] = {}
        #: route -> [per-bucket counts (not cumulative)..., sum, created]
        self._timings: dict[str, list[float]] = {}

    def record(self, route: str, code: int, seconds: float | None) -> None:
        key = (route, code)
        counted = self._counts.get(key)
        if counted is None:
            counted = self._counts[key] = [0, time.time()]
        counted[0] += 1
        if seconds is not None:
            timing = self._timings.get(route)
            if timing is None:
                timing = self._timings[route] = [0] * (len(self._bounds) + 1) + [0.0, time.time()]
            timing[bisect_left(self._bounds, seconds)] += 1
            timing[-2] += seconds

    def collect(self) -> Iterator[Metric]:
        name, documentation = self._COUNTER
        counter = Metric(name, documentation, "counter")
        for (route, code), (count, created) in list(self._counts.items()):
            labels = {"route": route, "code": str(code)}
            counter.add_sample(name + "_total", labels, float(count))
            counter.add_sample(name + "_created", labels, created)
        yield counter
        name, documentation = self._HISTOGRAM
        histogram = Metric(name, documentation, "histogram")
        for route, timing in list(self._timings.items()):
            total = 0.0
            for le, count in zip(self._les, timing[:-2], strict=True):
                total += count
                histogram.add_sample(name + "_bucket", {"route": route, "le": le}, total)
            histogram.add_sample(name + "_count", {"route": route}, total)
            histogram.add_sample(name + "_sum", {"route": route}, float(timing[-2]))
            histogram.add_sample(name + "_created", {"route": route}, timing[-1])
        yield histogram


class Metrics:
    """The bridge's metrics; one instance (and registry) per bridge."""

    content_type = CONTENT_TYPE.encode("ascii")

    def __init__(
        self, upstreams: Upstreams, lifecycle: Lifecycle,
        client_errors: ClientErrorLog | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_answers = _HttpAnswers(_LATENCY_BUCKETS)
        self.registry.register(self.http_answers)
        self.replies = Counter(
            "bridge_replies", "POST /request outcomes", ["upstream", "outcome"],
            registry=self.registry,
        )
        self.reply_latency = Histogram(
            "bridge_reply_latency_seconds", "Time from writing lines to their last reply",
            ["upstream"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        # Bound once per upstream: labels() costs a lock and a dict look-up per call.
        self._reply_counters: dict[tuple[str, str], Callable[[], None]] = {}
        self._reply_timers: dict[str, Callable[[float], None]] = {}
        self._upstreams: list[str] = []
        self.upstreams_changed(list(upstreams))
        self.registry.register(_UpstreamsCollector(upstreams, lifecycle, client_errors))

    def upstreams_changed(self, names: list[str]) -> None:
        """The configured upstreams (at start and after a reload): every one
        has its reply series from the start (at 0); a removed one's go."""
        for gone in [name for name in self._upstreams if name not in names]:
            for outcome in REPLY_OUTCOMES:
                self.replies.remove(gone, outcome)
                self._reply_counters.pop((gone, outcome), None)
            self.reply_latency.remove(gone)
            self._reply_timers.pop(gone, None)
        for name in names:
            for outcome in REPLY_OUTCOMES:
                self._reply_counters[(name, outcome)] = self.replies.labels(name, outcome).inc
            self._reply_timers[name] = self.reply_latency.labels(name).observe
        self._upstreams = list(names)

    def count_reply(self, upstream: str, outcome: str) -> None:
        increment = self._reply_counters.get((upstream, outcome))
        if increment is None:  # an upstream removed while its request was under way
            increment = self.replies.labels(upstream, outcome).inc
        increment()

    def observe_reply(self, upstream: str, seconds: float) -> None:
        observe = self._reply_timers.get(upstream)
        if observe is None:
            observe = self.reply_latency.labels(upstream).observe
        observe(seconds)

    def request_done(self, route: str, code: int, seconds: float | None) -> None:
        """One answer, labelled with its route (see bridge.http.routes)."""
        self.http_answers.record(route if route in LABELS else OTHER, code, seconds)

    def render(self) -> bytes:
        exposition: bytes = generate_latest(self.registry)
        return exposition

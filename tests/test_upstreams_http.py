"""Several upstreams behind one bridge, over HTTP (issue 11): routes by name,
readiness, /status, /metrics, /u/NAME/events and scoped tokens, on the real
service assembly in memory."""

from __future__ import annotations

import os
import tempfile
import textwrap
from dataclasses import replace
from typing import Any

from bridge.config import Config, load
from tests.http_harness import Harness, HarnessTestCase, SocketTransport, auth
from tests.test_metrics import scrape, value

DEFAULT, CACHE, LOGS = 7000, 7001, 7002


def three_upstreams(extra: str = "", top: str = "") -> Config:
    """default, cache and logs; logs not required.  ``top`` goes before the
    tables, ``extra`` (more tables) after them."""
    directory = tempfile.mkdtemp()
    path = os.path.join(directory, "bridge.toml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(textwrap.dedent(top) + textwrap.dedent(f"""
            upstream = "tcp:127.0.0.1:{DEFAULT}"

            [upstreams.cache]
            upstream = "tcp:127.0.0.1:{CACHE}"

            [upstreams.logs]
            upstream = "tcp:127.0.0.1:{LOGS}"
            required = false
        """) + textwrap.dedent(extra))
    try:
        return load({}, {}, path)
    finally:
        os.unlink(path)
        os.rmdir(directory)


class UpstreamsTestCase(HarnessTestCase):
    def bridge(self, config: Config | None = None,
               connect: tuple[int, ...] = (DEFAULT, CACHE, LOGS)) -> Harness:
        harness = self.harness(connect=0, config=config or three_upstreams())
        self.connections: dict[int, SocketTransport] = {}
        for port in connect:
            self.connections[port] = harness.connect_upstream(port)
        return harness

    def written(self) -> dict[int, bytes]:
        return {port: transport.value() for port, transport in self.connections.items()}


class RoutingTests(UpstreamsTestCase):
    def test_each_route_reaches_its_upstream_only(self) -> None:
        harness = self.bridge()
        self.assertEqual(harness.call("POST", "/send", b"to default\n").status, 202)
        self.assertEqual(harness.call("POST", "/u/cache/send", b"to cache\n").status, 202)
        self.assertEqual(harness.call("POST", "/u/default/send", b"again\n").status, 202)
        self.assertEqual(self.written(), {
            DEFAULT: b"to default\r\nagain\r\n", CACHE: b"to cache\r\n", LOGS: b""})

    def test_a_request_gets_the_replies_of_its_upstream(self) -> None:
        harness = self.bridge()
        waiting = harness.start("POST", "/u/cache/request", b"GET k\n")
        self.connections[DEFAULT].peer_sends(b"not this one\r\n")
        self.connections[CACHE].peer_sends(b"value\r\n")
        self.assertJSONResponse(waiting.response(), 200, {"replies": ["value"]})
        self.assertEqual(self.written()[CACHE], b"GET k\r\n")

    def test_an_unknown_name_is_404_and_nothing_is_sent(self) -> None:
        harness = self.bridge()
        response = harness.call("POST", "/u/nosuch/send", b"x\n")
        self.assertJSONResponse(response, 404, {
            "error": "unknown_upstream",
            "message": "no upstream named 'nosuch'; the configured ones are: default, cache, "
                       "logs"})
        self.assertEqual(harness.call("GET", "/u/cache/nosuch").json()["error"], "not_found")
        self.assertEqual(harness.call("GET", "/u/cache/send").status, 405)
        self.assertEqual(self.written(), {DEFAULT: b"", CACHE: b"", LOGS: b""})

    def test_without_an_upstream_named_default_the_plain_routes_are_404(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "bridge.toml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f'[upstreams.cache]\nupstream = "tcp:127.0.0.1:{CACHE}"\n')
        self.addCleanup(os.unlink, path)
        harness = self.bridge(load({}, {}, path), connect=(CACHE,))
        for path_ in ("/send", "/request"):
            self.assertJSONResponse(harness.call("POST", path_, b"x\n"), 404, {
                "error": "unknown_upstream",
                "message": "no upstream named 'default'; the configured ones are: cache"})
        self.assertEqual(harness.call("POST", "/u/cache/send", b"x\n").status, 202)
        self.assertEqual(self.written(), {CACHE: b"x\r\n"})

    def test_an_upstream_that_is_down_does_not_stop_the_others(self) -> None:
        harness = self.bridge(connect=(DEFAULT, CACHE))
        self.assertEqual(harness.call("POST", "/u/cache/send", b"x\n").status, 202)
        refused = harness.call("POST", "/u/logs/send", b"y\n")
        self.assertEqual((refused.status, refused.json()["error"]),
                         (503, "upstream_unavailable"))
        self.assertIn("the upstream tcp:127.0.0.1:7002 is not connected", refused.json()["message"])


class RouteCostTests(UpstreamsTestCase):
    """POST /u/NAME/send does the same work as POST /send (issue 11 asks for
    the same speed; bench/ measures it, this counts it exactly)."""

    def calls_per_request(self, config: Config, path: bytes) -> float:
        import cProfile
        import pstats

        harness = self.harness(connect=1, config=config)
        client = harness.client()
        request = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 33\r\n\r\n%s\n" % (
            path, b"x" * 32)
        for _ in range(50):  # first-time work: metrics labels, caches
            client.send(request)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(200):
            client.send(request)
        profile.disable()
        self.assertEqual(client.transport.value().count(b" 202 Accepted\r\n"), 250)
        calls: float = pstats.Stats(profile).total_calls / 200  # type: ignore[attr-defined]
        return calls

    def test_a_named_route_makes_as_many_calls_as_send(self) -> None:
        plain = Config().with_values(upstream=f"tcp:127.0.0.1:{DEFAULT}")
        named = Config().with_values(upstream=f"tcp:127.0.0.1:{DEFAULT}", name="cache")
        named = replace(plain, default_upstream=False, named_upstreams={"cache": named})
        self.assertEqual(self.calls_per_request(named, b"/u/cache/send"),
                         self.calls_per_request(plain, b"/send"))


class ReadinessTests(UpstreamsTestCase):
    def test_ready_when_every_required_upstream_is(self) -> None:
        harness = self.bridge(connect=(DEFAULT, CACHE))
        response = harness.call("GET", "/readyz")
        self.assertEqual(response.status, 200)  # logs is not required
        document = response.json()
        self.assertEqual((document["ready"], sorted(document["upstreams"])),
                         (True, ["cache", "default", "logs"]))
        self.assertEqual(document["upstreams"]["logs"]["ready"], False)
        self.assertEqual(harness.call("GET", "/u/logs/readyz").status, 503)
        self.assertEqual(harness.call("GET", "/u/cache/readyz").json(), {
            "ready": True, "state": "connected", "connected": 1, "pool_size": 1})

    def test_not_ready_while_a_required_upstream_is_down(self) -> None:
        harness = self.bridge(connect=(DEFAULT, LOGS))
        response = harness.call("GET", "/readyz")
        self.assertEqual(response.status, 503)
        self.assertEqual(
            (response.json()["ready"], response.json()["upstream"], response.json()["state"]),
            (False, "cache", "connecting"))
        self.connections[CACHE] = harness.connect_upstream(CACHE)
        self.assertEqual(harness.call("GET", "/readyz").status, 200)

    def test_one_upstream_keeps_the_readyz_document_it_always_had(self) -> None:
        harness = self.harness()
        self.assertJSONResponse(harness.call("GET", "/readyz"), 200, {
            "ready": True, "state": "connected", "connected": 1, "pool_size": 1})


class StatusAndMetricsTests(UpstreamsTestCase):
    def test_status_has_one_entry_per_upstream(self) -> None:
        harness = self.bridge(connect=(DEFAULT, CACHE))
        harness.call("POST", "/u/cache/send", b"a\nb\n")
        document = harness.call("GET", "/status").json()
        upstreams = document["upstreams"]
        self.assertEqual(list(upstreams), ["default", "cache", "logs"])
        self.assertEqual(
            {name: (entry["upstream"], entry["state"], entry["required"])
             for name, entry in upstreams.items()},
            {"default": ("tcp:127.0.0.1:7000", "connected", True),
             "cache": ("tcp:127.0.0.1:7001", "connected", True),
             "logs": ("tcp:127.0.0.1:7002", "connecting", False)})
        self.assertEqual(upstreams["cache"]["counters"]["lines_sent"], 2)
        self.assertEqual(upstreams["cache"]["members"][0]["name"], "cache/0")
        # The upstream named default is also the top level, as with one upstream.
        self.assertEqual((document["upstream"], document["counters"]["lines_sent"]),
                         ("tcp:127.0.0.1:7000", 0))

    def test_metrics_carry_an_upstream_label(self) -> None:
        harness = self.bridge()
        harness.call("POST", "/u/logs/send", b"a\nb\nc\n")
        samples = scrape(harness)
        self.assertEqual(value(samples, "bridge_lines_sent_total", upstream="logs"), 3.0)
        self.assertEqual(value(samples, "bridge_lines_sent_total", upstream="cache"), 0.0)
        self.assertEqual(
            value(samples, "bridge_upstream_address_connects_total", upstream="cache",
                  address="tcp:127.0.0.1:7001"), 1.0)

    def test_reply_outcomes_and_latency_per_upstream(self) -> None:
        harness = self.bridge()
        waiting = harness.start("POST", "/u/cache/request", b"GET k\n")
        harness.reactor.advance(0.25)
        self.connections[CACHE].peer_sends(b"value\r\n")
        self.assertEqual(waiting.response().status, 200)
        timing_out = harness.start("POST", "/u/logs/request?timeout=1", b"GET k\n")
        harness.reactor.advance(1)
        self.assertEqual(timing_out.response().status, 504)
        samples = scrape(harness)
        self.assertEqual(
            {(name, outcome): value(samples, "bridge_replies_total", upstream=name,
                                    outcome=outcome)
             for name in ("default", "cache", "logs") for outcome in ("ok", "timeout")},
            {("default", "ok"): 0.0, ("default", "timeout"): 0.0, ("cache", "ok"): 1.0,
             ("cache", "timeout"): 0.0, ("logs", "ok"): 0.0, ("logs", "timeout"): 1.0})
        self.assertEqual(value(samples, "bridge_reply_latency_seconds_sum", upstream="cache"),
                         0.25)
        self.assertEqual(value(samples, "bridge_reply_latency_seconds_count", upstream="logs"),
                         0.0)

    def test_a_reload_adds_and_removes_reply_series(self) -> None:
        harness = self.bridge()
        new = three_upstreams()
        harness.service.reconfigure(new.with_values(named_upstreams={
            "metrics": new.named_upstreams["cache"].with_values(name="metrics")}))
        samples = scrape(harness)
        self.assertEqual(
            sorted({dict(labels)["upstream"] for name, labels in samples
                    if name == "bridge_replies_total"}),
            ["default", "metrics"])


class EventsTests(UpstreamsTestCase):
    def test_each_upstream_has_its_own_event_stream(self) -> None:
        harness = self.bridge()
        cache_events = harness.client()
        cache_events.send(b"GET /u/cache/events HTTP/1.1\r\nHost: bridge\r\n\r\n")
        default_events = harness.client()
        default_events.send(b"GET /events HTTP/1.1\r\nHost: bridge\r\n\r\n")
        self.connections[CACHE].peer_sends(b"from cache\r\n")
        self.connections[DEFAULT].peer_sends(b"from default\r\n")
        self.assertIn(b"data: from cache\n", cache_events.transport.value())
        self.assertNotIn(b"from default", cache_events.transport.value())
        self.assertIn(b"data: from default\n", default_events.transport.value())
        self.assertNotIn(b"from cache", default_events.transport.value())


ADMIN = 'token = "admin-token"\n'
SCOPED = """
    [tokens.app]
    token = "app-token"
    upstreams = ["cache"]
    routes = ["send", "request"]
"""


class ScopedTokenTests(UpstreamsTestCase):
    def call(self, harness: Harness, method: str, path: str, token: str | None,
             body: bytes | None = None) -> Any:
        return harness.call(method, path, body, auth(token) if token else None)

    def test_a_scoped_token_opens_only_its_upstreams_and_routes(self) -> None:
        harness = self.bridge(three_upstreams(SCOPED, ADMIN))
        self.assertEqual(self.call(harness, "POST", "/u/cache/send", "app-token", b"x\n").status,
                         202)
        for method, path in [("POST", "/send"), ("POST", "/u/logs/send"),
                             ("GET", "/u/cache/events"), ("GET", "/status"),
                             ("GET", "/metrics")]:
            with self.subTest(path=path):
                response = self.call(harness, method, path, "app-token", b"y\n")
                self.assertErrorResponse(response, 403, "forbidden")
        self.assertEqual(
            self.call(harness, "POST", "/send", "app-token", b"y\n").json()["message"],
            "the token 'app' does not allow send on the upstream 'default'")
        self.assertEqual(self.written(), {DEFAULT: b"", CACHE: b"x\r\n", LOGS: b""})

    def test_the_global_token_opens_everything_and_others_are_401(self) -> None:
        harness = self.bridge(three_upstreams(SCOPED, ADMIN))
        self.assertEqual(self.call(harness, "POST", "/u/logs/send", "admin-token", b"a\n").status,
                         202)
        self.assertEqual(self.call(harness, "GET", "/status", "admin-token").status, 200)
        for token in (None, "wrong", "app-token-x"):
            with self.subTest(token=token):
                self.assertErrorResponse(
                    self.call(harness, "POST", "/u/cache/send", token, b"b\n"), 401,
                    "unauthorized")
        # Probes need no token at all.
        self.assertEqual(self.call(harness, "GET", "/u/cache/readyz", None).status, 200)
        self.assertEqual(self.written()[LOGS], b"a\r\n")

    def test_no_token_appears_in_status_or_metrics(self) -> None:
        harness = self.bridge(three_upstreams(SCOPED, ADMIN))
        status = self.call(harness, "GET", "/status", "admin-token").body
        metrics = self.call(harness, "GET", "/metrics", "admin-token").body
        for secret in (b"admin-token", b"app-token"):
            self.assertNotIn(secret, status)
            self.assertNotIn(secret, metrics)


class ReloadTests(UpstreamsTestCase):
    """BridgeService.reconfigure: what SIGHUP applies."""

    def test_unchanged_upstreams_keep_their_connections(self) -> None:
        harness = self.bridge()
        before = dict(harness.service.upstreams)
        drained = harness.service.reconfigure(three_upstreams())
        self.assertIsNone(self.successResultOf(drained))
        self.assertEqual({name: u.pool for name, u in harness.service.upstreams.items()},
                         {name: u.pool for name, u in before.items()})
        self.assertEqual(harness.call("POST", "/u/cache/send", b"x\n").status, 202)
        self.assertEqual(self.connections[CACHE].value(), b"x\r\n")
        self.assertEqual(harness.call("GET", "/status").json()["configuration"]["generation"], 2)

    def test_added_changed_and_removed_upstreams(self) -> None:
        harness = self.bridge()
        waiting = harness.start("POST", "/u/logs/request", b"pending\n")
        new = three_upstreams("""
            [upstreams.metrics]
            upstream = "tcp:127.0.0.1:7003"
        """)
        # cache changes (pool_size 2); logs goes away; metrics is added.
        new = new.with_values(named_upstreams={
            "cache": new.named_upstreams["cache"].with_values(pool_size=2),
            "metrics": new.named_upstreams["metrics"],
        })
        old_cache = harness.service.upstreams["cache"].pool
        drained = harness.service.reconfigure(new)
        self.assertEqual(list(harness.service.upstreams), ["default", "cache", "metrics"])
        # logs takes no new work at once, but its pending request still gets its reply.
        self.assertErrorResponse(harness.call("POST", "/u/logs/send", b"late\n"), 404,
                                 "unknown_upstream")
        logs = self.connections[LOGS]
        self.assertTrue(logs.write_closed)  # half-closed: draining as on shutdown
        logs.peer_sends(b"the reply\r\n")
        self.assertJSONResponse(waiting.response(), 200, {"replies": ["the reply"]})
        logs.loseConnection()
        # cache: the old pool keeps the work until the new one is connected...
        self.assertIs(harness.service.upstreams["cache"].pool, old_cache)
        self.assertEqual(harness.call("POST", "/u/cache/send", b"old\n").status, 202)
        self.assertEqual(self.connections[CACHE].value(), b"old\r\n")
        self.assertFalse(self.connections[CACHE].write_closed)
        fresh = [harness.connect_upstream(CACHE), harness.connect_upstream(CACHE)]
        harness.reactor.advance(0.05)
        # ... then the new pool takes it and the old connection drains.
        self.assertIsNot(harness.service.upstreams["cache"].pool, old_cache)
        self.assertTrue(self.connections[CACHE].write_closed)
        self.connections[CACHE].loseConnection()
        self.assertIsNone(self.successResultOf(drained))
        harness.connect_upstream(7003)
        self.assertEqual(harness.call("POST", "/u/cache/send", b"new\n").status, 202)
        self.assertEqual(b"".join(t.value() for t in fresh), b"new\r\n")
        self.assertEqual(harness.call("POST", "/u/metrics/send", b"m\n").status, 202)
        self.assertEqual(self.connections[DEFAULT].value(), b"")

    def changed_cache(self) -> Config:
        new = three_upstreams()
        return new.with_values(named_upstreams={
            **new.named_upstreams,
            "cache": new.named_upstreams["cache"].with_values(pool_size=2)})

    def test_a_changed_upstream_that_never_connects_takes_over_after_connect_timeout(
            self) -> None:
        harness = self.bridge()
        old_cache = harness.service.upstreams["cache"].pool
        drained = harness.service.reconfigure(self.changed_cache())
        harness.reactor.advance(4.9)
        self.assertIs(harness.service.upstreams["cache"].pool, old_cache)
        self.assertEqual(harness.call("POST", "/u/cache/send", b"old\n").status, 202)
        harness.reactor.advance(0.1)  # connect_timeout (5 s): the new settings win
        self.assertIsNot(harness.service.upstreams["cache"].pool, old_cache)
        self.assertErrorResponse(harness.call("POST", "/u/cache/send", b"new\n"), 503,
                                 "upstream_unavailable")
        self.assertTrue(self.connections[CACHE].write_closed)
        self.connections[CACHE].loseConnection()
        self.assertIsNone(self.successResultOf(drained))
        self.assertEqual(self.connections[CACHE].value(), b"old\r\n")

    def test_a_second_reload_before_the_switch_discards_the_pending_pool(self) -> None:
        harness = self.bridge()
        old_cache = harness.service.upstreams["cache"].pool
        first = harness.service.reconfigure(self.changed_cache())
        pending = [pool for pool in harness.service
                   if pool not in [u.pool for u in harness.service.upstreams.values()]
                   and pool is not harness.service.web]
        self.assertEqual(len(pending), 1)
        # Back to the running settings: the old pool is unchanged, the pending one goes.
        second = harness.service.reconfigure(three_upstreams())
        harness.reactor.advance(0.05)
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.assertIs(harness.service.upstreams["cache"].pool, old_cache)
        self.assertNotIn(pending[0], list(harness.service))
        self.assertFalse(self.connections[CACHE].write_closed)
        self.assertEqual(harness.call("POST", "/u/cache/send", b"x\n").status, 202)
        self.assertEqual(self.connections[CACHE].value(), b"x\r\n")

    def test_a_shutdown_during_a_switch_stops_both_pools(self) -> None:
        harness = self.bridge()
        old_cache = harness.service.upstreams["cache"].pool
        harness.service.reconfigure(self.changed_cache())
        stopping = harness.stop()
        harness.reactor.advance(1)
        for transport in self.connections.values():
            transport.loseConnection()
        harness.reactor.advance(harness.config.shutdown_grace)
        self.successResultOf(stopping)
        self.assertIs(harness.service.upstreams["cache"].pool, old_cache)
        self.assertFalse(any(pool.running for pool in harness.service))
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_tokens_are_replaced_at_once(self) -> None:
        harness = self.bridge(three_upstreams(SCOPED, ADMIN))
        harness.service.reconfigure(three_upstreams(top='token = "new-admin"\n'))
        self.assertErrorResponse(harness.call("GET", "/status", None, auth("admin-token")), 401,
                                 "unauthorized")
        self.assertErrorResponse(harness.call("POST", "/u/cache/send", b"x\n",
                                              auth("app-token")), 401, "unauthorized")
        self.assertEqual(harness.call("GET", "/status", None, auth("new-admin")).status, 200)

    def test_listen_is_reported_and_kept(self) -> None:
        harness = self.bridge()
        logged = self.capture_logs()
        harness.service.reconfigure(three_upstreams(top='listen = "127.0.0.1:9999"\n'))
        self.assertEqual(harness.service.config.listen, "127.0.0.1:8080")
        texts = [event["log_format"].format(**event) for event in logged
                 if event.get("log_namespace") == "bridge.app.service.BridgeService"]
        self.assertIn("setting listen changed; it takes effect only after a restart (still "
                      "'127.0.0.1:8080')", texts)
        self.assertIn("configuration reloaded (generation 2): unchanged default, cache, logs",
                      texts)

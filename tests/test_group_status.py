"""A group as the whole bridge shows it: /status (per address, per member),
/metrics (per-address families), /send through the address that works.

The whole BridgeService runs in memory (tests.test_gate's Harness): real
endpoints for the configured addresses on a memory reactor, whose connection
attempts the test completes or refuses.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure

from tests.http_harness import Harness, HarnessTestCase
from tests.test_metrics import scrape, value

A, B = "10.0.0.1:6379", "10.0.0.2:6379"


def refuse(harness: Harness) -> None:
    """The oldest connection attempt not completed yet is refused."""
    factory = harness.reactor.tcpClients[harness._attempts_used][2]
    connector = harness.reactor.connectors[harness._attempts_used]
    harness._attempts_used += 1
    factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))


def attempted(harness: Harness) -> list[str]:
    return [f"{host}:{port}" for host, port, *_ in harness.reactor.tcpClients]


class GroupStatusTests(HarnessTestCase):
    def start(self) -> Harness:
        harness = self.harness(connect=0, addresses=(A, B), pool_size=2, backoff_initial=2.0,
                               backoff_max=8.0)
        self.assertEqual(attempted(harness), [A, A])
        refuse(harness)
        harness.reactor.advance(0)  # member 0 goes on to B at once
        self.assertEqual(attempted(harness), [A, A, B])
        refuse(harness)  # member 1's attempt too
        harness.reactor.advance(0)
        self.assertEqual(attempted(harness), [A, A, B, B])
        harness.connect_upstream()
        harness.connect_upstream()
        return harness

    def test_status_shows_every_address_and_where_each_member_is(self) -> None:
        harness = self.start()
        document = harness.call("GET", "/status").json()
        self.assertEqual(document["upstream"], f"group {A}, {B}")
        self.assertEqual(document["strategy"], "failover")
        self.assertEqual([m["address"] for m in document["members"]], [B, B])
        self.assertEqual(document["addresses"], [
            {"address": A, "healthy": False, "active": False,
             "skipped_until": "1970-01-01T00:16:42.000+00:00", "retry_in": 2.0,
             "last_error": f"connection refused by {A}", "connected_members": [],
             "connects": 0, "failures": 2},
            {"address": B, "healthy": True, "active": True, "skipped_until": None,
             "retry_in": None, "last_error": None, "connected_members": ["0", "1"],
             "connects": 2, "failures": 0},
        ])
        harness.reactor.advance(2.0)  # A probed (for a failback later): refused again
        self.assertEqual(attempted(harness), [A, A, B, B, A])

    def test_metrics_per_address(self) -> None:
        harness = self.start()
        samples = scrape(harness)
        self.assertEqual(value(samples, "bridge_upstream_address_connects_total", address=B),
                         2.0)
        self.assertEqual(value(samples, "bridge_upstream_address_connects_total", address=A),
                         0.0)
        self.assertEqual(value(samples, "bridge_upstream_address_failures_total", address=A),
                         2.0)
        self.assertEqual(
            value(samples, "bridge_upstream_address_connected_members", address=B), 2.0)
        self.assertEqual(
            value(samples, "bridge_upstream_address_connected_members", address=A), 0.0)
        self.assertEqual(value(samples, "bridge_upstream_address_healthy", address=A), 0.0)
        self.assertEqual(value(samples, "bridge_upstream_address_healthy", address=B), 1.0)
        self.assertEqual(value(samples, "bridge_upstream_connected_members"), 2.0)

    def test_send_goes_through_the_address_that_works(self) -> None:
        harness = self.start()
        response = harness.call("POST", "/send", b"SET k v\n")
        self.assertEqual(response.status, 202)
        self.assertEqual(harness.upstreams[0].value(), b"SET k v\r\n")

    def test_a_single_upstream_shows_one_address(self) -> None:
        harness = self.harness()
        document = harness.call("GET", "/status").json()
        self.assertEqual(document["strategy"], "single")
        self.assertEqual(document["upstream"], harness.config.upstream)
        self.assertEqual([row["address"] for row in document["addresses"]],
                         [harness.config.upstream])
        self.assertEqual(document["addresses"][0]["connected_members"], ["0"])
        self.assertEqual(document["members"][0]["address"], harness.config.upstream)
        samples = scrape(harness)
        self.assertEqual(value(samples, "bridge_upstream_address_connects_total",
                               address=harness.config.upstream), 1.0)

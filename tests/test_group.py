"""Upstream groups: failover, round robin, per-address health, failback,
host names with several addresses, max_connection_age (issue 11).

Every test runs a whole pool (ClientService, connector, member, group,
protocol) over fake endpoints, one per address, on a Clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from bridge.config import Config
from bridge.errors import NotConnectedError, UpstreamLostError
from bridge.upstream.lines import Lines
from bridge.upstream.pool import UpstreamPool
from tests.fakes_upstream import (
    CONNECT,
    HANG,
    REFUSE,
    FakeAddresses,
    FakeConnection,
    FakeEndpoint,
    FakeResolver,
    make_group_pool,
    make_pool,
    texts,
)

A, B, C = "10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"
CONNECTED = "connected"  # a member's state in /status
BASE = Config().with_values(
    addresses=(A, B), backoff_initial=1.0, backoff_factor=2.0, backoff_max=8.0,
)


def line(text: str) -> Lines:
    return Lines(1, text.encode("ascii") + b"\r\n")


class GroupTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace", "").startswith("bridge."):
                self.logged.append(formatEvent(event) or "")

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def start(
        self,
        config: Config,
        addresses: FakeAddresses | None = None,
        resolver: FakeResolver | None = None,
        **kwargs: Any,
    ) -> tuple[UpstreamPool, FakeAddresses, Clock]:
        addresses = addresses if addresses is not None else FakeAddresses()
        pool, clock, _ = make_group_pool(config, addresses, resolver, **kwargs)
        pool.startService()
        self.addCleanup(self.stop, pool, clock)
        return pool, addresses, clock

    def stop(self, pool: UpstreamPool, clock: Clock) -> None:
        self.successResultOf(pool.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])

    def where(self, pool: UpstreamPool) -> list[str | None]:
        """The address of every member's live connection (None: not connected)."""
        return [m.address if m.protocol is not None else None for m in pool.members]

    def row(self, pool: UpstreamPool, address: str) -> dict[str, Any]:
        return next(r for r in pool.address_status() if r["address"] == address)

    def connection_of(self, pool: UpstreamPool, addresses: FakeAddresses,
                      index: int) -> FakeConnection:
        protocol = pool.members[index].protocol
        assert protocol is not None
        for endpoint in addresses.endpoints.values():
            for connection in endpoint.connections:
                if connection.transport is protocol.transport:
                    return connection
        raise AssertionError("no such connection")


class FailoverTests(GroupTestCase):
    def test_every_member_uses_the_first_address(self) -> None:
        pool, addresses, _ = self.start(BASE.with_values(pool_size=3))
        self.assertEqual(self.where(pool), [A, A, A])
        self.assertEqual(addresses.attempts(), {A: 3, B: 0})
        self.assertEqual(pool.group.strategy.active, A)
        self.assertEqual([r["address"] for r in pool.address_status()], [A, B])
        self.assertEqual(self.row(pool, A)["connected_members"], ["0", "1", "2"])
        self.assertEqual(self.row(pool, A)["active"], True)
        self.assertEqual(self.row(pool, B)["active"], False)

    def test_a_refused_address_is_skipped_and_the_next_one_used_at_once(self) -> None:
        addresses = FakeAddresses()
        addresses.down(A)
        pool, addresses, clock = self.start(BASE.with_values(pool_size=2), addresses)
        clock.advance(0)  # ClientService's retry, due at once: the clock did not move
        self.assertEqual(self.where(pool), [B, B])
        self.assertEqual(addresses.attempts(), {A: 1, B: 2})  # A once: then it is skipped
        self.assertEqual(self.row(pool, A), {
            "address": A, "healthy": False, "active": False, "skipped_until": 1.0,
            "retry_in": 1.0, "last_error": f"connection refused by {A}",
            "connected_members": [], "connects": 0, "failures": 1,
        })
        self.assertEqual(self.row(pool, B)["connected_members"], ["0", "1"])
        self.assertIn(f"upstream: {A} failed (connection refused by {A}); skipped for 1 s",
                      self.logged)
        self.assertIn(f"upstream 0: connected to {B}", self.logged)

    def test_members_of_a_dead_address_move_to_a_healthy_one_at_once(self) -> None:
        pool, addresses, clock = self.start(BASE.with_values(pool_size=2))
        clock.advance(60)
        waiting = pool.request(line("GET k"), 5.0)
        addresses.down(A)  # the server dies: its connections close
        self.failureResultOf(waiting, UpstreamLostError)  # 502, as without groups
        clock.advance(0)  # the retry after a long-lived connection: at once
        self.assertEqual(self.where(pool), [B, B])
        self.assertEqual(clock.seconds(), 60)
        pool.send(line("SET k v"))
        self.assertEqual(b"".join(c.written() for c in addresses[B].connections),
                         b"SET k v\r\n")
        self.assertIn(f"upstream: failover from {A} to {B}", self.logged)
        self.assertIn(f"upstream 0: connected to {B} (failover from {A})", self.logged)
        self.assertEqual(pool.group.strategy.active, B)

    def test_the_logs_of_a_named_upstream_name_it(self) -> None:
        pool, addresses, clock = self.start(BASE.with_values(pool_size=1, name="cache"))
        clock.advance(60)
        addresses.down(A)
        clock.advance(0)
        self.assertEqual(self.where(pool), [B])
        self.assertIn(f"upstream cache: {A} failed (connection refused by {A}); skipped for "
                      "1 s", self.logged)
        self.assertIn(f"upstream cache: failover from {A} to {B}", self.logged)
        self.assertIn(f"upstream cache/0: connected to {B} (failover from {A})", self.logged)

    def test_send_commands_unanswered_when_the_address_died_are_counted(self) -> None:
        # With resp, /send replies are consumed (send_replies check): the
        # bridge knows which 202 commands the dead server never answered.
        pool, addresses, _ = self.start(BASE.with_values(reply_framing="resp"))
        pool.send(Lines(2, b"RPUSH k a\r\nRPUSH k b\r\n"))
        pool.send(line("RPUSH k c"))
        addresses[A].last.feed(b":1\r\n")  # the first command is answered
        addresses.down(A)
        self.assertEqual(pool.totals().send_unconfirmed, 2)
        self.assertIn("upstream 0: the connection ended before the replies to 2 POST /send "
                      "commands came; the upstream may or may not have processed them",
                      self.logged)

    def test_each_address_backs_off_on_its_own(self) -> None:
        addresses = FakeAddresses(default=REFUSE)
        pool, addresses, clock = self.start(BASE, addresses)
        clock.advance(0)
        self.assertEqual(addresses.attempts(), {A: 1, B: 1})
        member = pool.members[0]
        self.assertEqual(member.retry_in(), 1.0)  # both skipped: until the first is back
        clock.advance(1.0)
        self.assertEqual(addresses.attempts(), {A: 2, B: 2})
        self.assertEqual([self.row(pool, a)["retry_in"] for a in (A, B)], [2.0, 2.0])
        addresses.up(B)
        clock.advance(2.0)
        self.assertEqual(self.where(pool), [B])
        # B is healthy; A, probed for a failback, keeps backing off: 4, then 8 s.
        self.assertEqual(addresses.attempts(), {A: 3, B: 3})
        self.assertEqual(self.row(pool, A)["retry_in"], 4.0)
        self.assertEqual(self.row(pool, B)["retry_in"], None)
        clock.advance(4.0)
        self.assertEqual(addresses.attempts(), {A: 4, B: 3})
        self.assertEqual(self.row(pool, A)["retry_in"], 8.0)
        self.assertEqual(self.row(pool, A)["failures"], 4)

    def test_no_request_waits_while_an_address_is_healthy(self) -> None:
        # A hangs (a dead host, not a refusal): only the attempt under way
        # waits for connect_timeout; requests are refused at once meanwhile.
        addresses = FakeAddresses()
        addresses[A].default = HANG
        pool, addresses, clock = self.start(BASE.with_values(connect_timeout=2.0), addresses)
        error = self.assertRaises(NotConnectedError, pool.send, line("x"))
        self.assertEqual(error.message, f"the upstream group {A}, {B} is not connected "
                         f"(connecting now); nothing was sent")
        clock.advance(2.0)
        self.assertEqual(self.where(pool), [B])
        self.assertEqual(self.row(pool, A)["last_error"],
                         f"connecting to {A} timed out after 2 s")

    def test_failback_only_after_failback_after_seconds_of_health(self) -> None:
        config = BASE.with_values(pool_size=2, failback_after=5.0)
        pool, addresses, clock = self.start(config)
        clock.advance(10)
        addresses.down(A)
        clock.advance(0)
        self.assertEqual(self.where(pool), [B, B])
        addresses.up(A)
        clock.advance(1.0)  # A's skip ends: probed, healthy from now (t=11)
        self.assertEqual(addresses[A].attempts, 4)  # 2 members, 1 refused, 1 probe
        self.assertTrue(self.row(pool, A)["healthy"])
        for _ in range(4):
            clock.advance(1.0)  # probed every backoff_initial
            self.assertEqual(self.where(pool), [B, B])
        self.assertEqual(addresses[A].attempts, 8)
        self.assertEqual(addresses.open_counts(), {A: 0, B: 2})  # probes close at once
        clock.advance(1.0)  # t=16: healthy for 5 s
        self.assertEqual(self.where(pool), [A, A])
        self.assertIn(f"upstream: failing back from {B} to {A} (healthy for 5 s)", self.logged)
        self.assertIn(f"upstream 0: connected to {A} (failback from {B})", self.logged)
        self.assertEqual(pool.group.strategy.active, A)
        # The old connections are half-closed, waiting for the server to close.
        old = addresses[B].connections
        self.assertEqual([c.transport.write_closed for c in old], [True, True])
        for connection in old:
            connection.peer_closes()
        self.assertIn(f"upstream 1: the old connection to {B} drained and closed", self.logged)

    def test_a_failure_during_the_wait_starts_it_over(self) -> None:
        config = BASE.with_values(failback_after=5.0)
        pool, addresses, clock = self.start(config)
        clock.advance(10)
        addresses.down(A)
        clock.advance(0)
        addresses.up(A)
        clock.pump([1.0, 1.0, 1.0])  # probes at 11, 12, 13 passed
        addresses.down(A)
        clock.advance(1.0)  # the probe at 14 fails: skipped for 2 s
        self.assertFalse(self.row(pool, A)["healthy"])
        addresses.up(A)
        clock.advance(2.0)  # probe at 16 passes: healthy from 16
        clock.pump([1.0, 1.0, 1.0, 1.0, 0.9])
        self.assertEqual(self.where(pool), [B])
        clock.advance(0.1)
        self.assertEqual(self.where(pool), [A])

    def test_never_failing_back_with_failback_after_0(self) -> None:
        config = BASE.with_values(failback_after=0.0)
        pool, addresses, clock = self.start(config)
        clock.advance(10)
        addresses.down(A)
        clock.advance(0)
        addresses.up(A)
        attempts = addresses[A].attempts
        clock.advance(3600)
        self.assertEqual(self.where(pool), [B])
        self.assertEqual(addresses[A].attempts, attempts)  # not even probed

    def test_without_failback_the_next_failure_goes_on_down_the_list(self) -> None:
        config = BASE.with_values(addresses=(A, B, C), failback_after=0.0)
        pool, addresses, clock = self.start(config)
        clock.advance(10)
        addresses.down(A)
        clock.advance(0)
        self.assertEqual(self.where(pool), [B])
        clock.advance(10)
        addresses.down(B)
        clock.advance(0)
        self.assertEqual(self.where(pool), [C])
        clock.advance(10)
        addresses.up(A)
        addresses.down(C)  # round to the top of the list, where A is back
        clock.advance(0)
        self.assertEqual(self.where(pool), [A])

    def test_a_move_loses_nothing_acknowledged(self) -> None:
        config = BASE.with_values(failback_after=2.0)
        pool, addresses, clock = self.start(config)
        clock.advance(10)
        addresses.down(A)
        clock.advance(0)
        addresses.up(A)
        clock.pump([1.0, 1.0])  # A probed healthy at 11, 12
        old = self.connection_of(pool, addresses, 0)
        replies = pool.request(line("GET k"), 5.0)
        pool.send(line("SET k v"))
        self.assertEqual(old.take(), b"GET k\r\nSET k v\r\n")
        clock.advance(1.0)  # failback at 13
        new = self.connection_of(pool, addresses, 0)
        self.assertIs(addresses[A].last, new)
        self.assertTrue(old.transport.write_closed)  # drained: FIN after the lines
        pool.send(line("SET k w"))
        self.assertEqual((old.take(), new.take()), (b"", b"SET k w\r\n"))
        old.feed(b"v\r\n")  # the reply still reaches its caller
        self.assertEqual(texts(self.successResultOf(replies)), [b"v"])
        old.peer_closes()
        self.assertEqual(old.transport.after_half_close, b"")
        self.assertEqual(pool.members[0].counters.disconnects, 2)

    def test_a_member_ready_where_it_is_no_longer_wanted_moves_afterwards(self) -> None:
        # Its attempt to B hangs while the group fails back to A; when it
        # completes, the member is moved once ClientService counts it connected.
        addresses = FakeAddresses()
        addresses.down(A)
        addresses[B].default = HANG
        pool, addresses, clock = self.start(BASE.with_values(failback_after=1.0), addresses)
        clock.advance(0)
        self.assertEqual(addresses.attempts(), {A: 1, B: 1})
        addresses.up(A)
        clock.pump([1.0, 1.0])  # A probed at 1 and 2: active again
        self.assertEqual(pool.group.strategy.active, A)
        addresses[B].finish_hanging()
        self.assertEqual(self.where(pool), [B])
        clock.advance(0)
        self.assertEqual(self.where(pool), [A])
        addresses[B].last.peer_closes()

    def test_the_events_connection_follows_the_failback(self) -> None:
        config = BASE.with_values(failback_after=1.0, events_subscribe=("SUBSCRIBE news",))
        pool, addresses, clock = self.start(config)
        subscriber = pool.subscriber
        assert subscriber is not None
        clock.advance(10)
        addresses.down(A)
        clock.advance(0)
        self.assertEqual((subscriber.address, subscriber.state), (B, CONNECTED))
        addresses.up(A)
        clock.pump([1.0, 1.0])
        self.assertEqual(self.where(pool), [A])
        self.assertEqual((subscriber.address, subscriber.state), (A, CONNECTED))
        self.assertEqual(addresses[A].last.written(), b"SUBSCRIBE news\r\n")

    def test_a_moved_connection_the_server_never_closes_is_closed_after_stale_timeout(
        self,
    ) -> None:
        config = BASE.with_values(failback_after=1.0, stale_reply_timeout=4.0)
        _pool, addresses, clock = self.start(config)
        clock.advance(10)
        addresses.down(A)
        clock.advance(0)
        addresses.up(A)
        clock.pump([1.0, 1.0])  # probed at 11 and 12: moved back
        old = addresses[B].last
        self.assertTrue(old.open)
        clock.advance(3.9)
        self.assertTrue(old.open)
        clock.advance(0.1)
        self.assertFalse(old.open)
        self.assertTrue(old.transport.aborted)

    def test_a_failed_handshake_marks_the_address(self) -> None:
        config = BASE.with_values(handshake=("AUTH secret",), handshake_expect="^\\+OK")
        pool, addresses, clock = self.start(config)
        addresses[A].last.feed(b"-ERR invalid password\r\n")
        clock.advance(0)
        self.assertFalse(self.row(pool, A)["healthy"])
        self.assertEqual(
            self.row(pool, A)["last_error"],
            "handshake line 1 (AUTH ***) got b'-ERR invalid password', which does not match "
            "b'^\\\\+OK'",
        )
        self.assertEqual(addresses.attempts(), {A: 1, B: 1})  # to B at once
        addresses[B].last.feed(b"+OK\r\n")
        self.assertEqual(self.where(pool), [B])

    def test_probes_pass_the_handshake_too(self) -> None:
        config = BASE.with_values(handshake=("AUTH secret",), handshake_expect="^\\+OK",
                                  failback_after=1.0)
        pool, addresses, clock = self.start(config)
        addresses[A].last.feed(b"+OK\r\n")
        clock.advance(10)
        addresses.down(A)
        clock.advance(0)
        addresses[B].last.feed(b"+OK\r\n")
        self.assertEqual(self.where(pool), [B])
        addresses.up(A)
        clock.advance(1.0)  # the probe connects, sends the handshake...
        probe = addresses[A].last
        self.assertEqual(probe.take(), b"AUTH secret\r\n")
        probe.feed(b"-ERR invalid password\r\n")  # ...which is refused
        self.assertFalse(probe.open)
        self.assertFalse(self.row(pool, A)["healthy"])
        self.assertIn("handshake line 1 (AUTH ***)", self.row(pool, A)["last_error"])
        clock.advance(2.0)  # the next probe, 2 s later, is accepted
        addresses[A].last.feed(b"+OK\r\n")
        self.assertFalse(addresses[A].last.open)  # closed once it passed
        self.assertTrue(self.row(pool, A)["healthy"])
        clock.advance(1.0)  # and the next one: healthy for failback_after
        addresses[A].last.feed(b"+OK\r\n")
        clock.advance(0)
        member_connection = addresses[A].last
        member_connection.feed(b"+OK\r\n")  # the member's own handshake
        self.assertEqual(self.where(pool), [A])

    def test_a_connection_out_of_step_marks_the_address(self) -> None:
        config = BASE.with_values(reply_framing="resp")
        pool, addresses, clock = self.start(config)
        addresses[A].last.feed(b"?garbage\r\n")  # no RESP type byte: out of step
        clock.advance(0)
        self.assertEqual(self.where(pool), [B])
        self.assertFalse(self.row(pool, A)["healthy"])
        self.assertIn("out of step", self.row(pool, A)["last_error"])
        self.assertEqual(pool.members[0].counters.desyncs, 1)

    def test_a_missed_heartbeat_marks_the_address(self) -> None:
        config = BASE.with_values(heartbeat_interval=5.0, heartbeat_timeout=1.0)
        pool, addresses, clock = self.start(config)
        clock.advance(5.0)
        self.assertEqual(addresses[A].last.take(), b"PING\r\n")
        clock.advance(1.0)
        clock.advance(0)
        self.assertEqual(self.where(pool), [B])
        self.assertEqual(self.row(pool, A)["last_error"], "no heartbeat reply within 1 s")

    def test_a_peer_closing_is_no_fault_of_the_address(self) -> None:
        pool, addresses, clock = self.start(BASE)
        clock.advance(10)
        addresses[A].last.peer_closes()  # e.g. an idle timeout of the server
        clock.advance(0)
        self.assertEqual(self.where(pool), [A])
        self.assertTrue(self.row(pool, A)["healthy"])

    def test_every_address_down_waits_for_the_first_to_come_back(self) -> None:
        pool, _addresses, clock = self.start(BASE, FakeAddresses(default=REFUSE))
        clock.advance(0)
        error = self.assertRaises(NotConnectedError, pool.send, line("x"))
        self.assertEqual(error.retry_after(), 1)
        self.assertEqual(pool.members[0].status()["retry_in"], 1.0)
        self.assertEqual(pool.state(), "waiting")


class RoundRobinTests(GroupTestCase):
    CONFIG = BASE.with_values(strategy="round_robin", pool_size=4)

    def test_members_alternate_over_the_addresses(self) -> None:
        pool, addresses, _ = self.start(self.CONFIG)
        self.assertEqual(self.where(pool), [A, B, A, B])
        self.assertEqual(addresses.open_counts(), {A: 2, B: 2})
        self.assertIsNone(self.row(pool, A)["active"])

    def test_three_addresses_three_members(self) -> None:
        pool, _, _ = self.start(self.CONFIG.with_values(addresses=(A, B, C), pool_size=3))
        self.assertEqual(self.where(pool), [A, B, C])

    def test_rebalanced_as_an_address_fails_and_recovers(self) -> None:
        pool, addresses, clock = self.start(self.CONFIG)
        clock.advance(10)
        addresses.down(B)
        clock.advance(0)
        self.assertEqual(self.where(pool), [A, A, A, A])
        self.assertEqual(self.row(pool, B)["retry_in"], 1.0)
        addresses.up(B)
        clock.advance(1.0)  # B's probe passes: members 1 and 3 go back, one at a time
        self.assertEqual(self.where(pool), [A, B, A, B])
        self.assertIn(f"upstream 1: replacing its connection to {A} (rebalance to {B}); it "
                      "serves until the new one is ready", self.logged)
        self.assertIn(f"upstream 3: connected to {B} (moved from {A})", self.logged)
        moved = [c for c in addresses[A].connections if c.transport.write_closed]
        self.assertEqual(len(moved), 2)
        for connection in moved:
            connection.peer_closes()

    def test_the_events_connection_is_not_spread(self) -> None:
        config = self.CONFIG.with_values(pool_size=2, events_subscribe=("SUBSCRIBE news",))
        pool, addresses, clock = self.start(config)
        subscriber = pool.subscriber
        assert subscriber is not None
        self.assertEqual(self.where(pool), [A, B])
        self.assertEqual(subscriber.address, A)
        clock.advance(10)
        addresses.down(A)
        clock.advance(0)
        self.assertEqual((self.where(pool), subscriber.address), ([B, B], B))
        addresses.up(A)
        clock.advance(1.0)  # A is back: member 0 returns, the subscriber stays
        self.assertEqual((self.where(pool), subscriber.address), ([A, B], B))

    def test_a_failed_probe_backs_off(self) -> None:
        pool, addresses, clock = self.start(self.CONFIG)
        clock.advance(10)
        addresses.down(B)
        clock.advance(0)
        clock.advance(1.0)  # probe refused: 2 s more
        self.assertEqual(self.row(pool, B)["retry_in"], 2.0)
        clock.advance(2.0)
        self.assertEqual(self.row(pool, B)["retry_in"], 4.0)
        self.assertEqual(self.where(pool), [A, A, A, A])

    def test_the_hot_path_is_unchanged(self) -> None:
        # Requests pick among connected members as without groups: the
        # least pending, round robin on ties; the group is not consulted.
        pool, addresses, _ = self.start(self.CONFIG)
        for text in ("a", "b", "c", "d"):
            pool.send(line(text))
        self.assertEqual(
            [c.written() for c in addresses[A].connections + addresses[B].connections],
            [b"a\r\n", b"c\r\n", b"b\r\n", b"d\r\n"],
        )


class HostNameTests(GroupTestCase):
    def test_a_name_with_several_addresses_counts_as_several(self) -> None:
        resolver = FakeResolver({"redis.test": ["10.0.0.1", "10.0.0.2"]})
        config = BASE.with_values(addresses=("redis.test:6379",), strategy="round_robin",
                                  pool_size=2)
        pool, addresses, _ = self.start(config, resolver=resolver)
        first, second = "redis.test:6379 (10.0.0.1)", "redis.test:6379 (10.0.0.2)"
        self.assertEqual(self.where(pool), [first, second])
        self.assertEqual(addresses.open_counts(), {A: 1, B: 1})
        self.assertEqual([r["address"] for r in pool.address_status()], [first, second])

    def test_failover_inside_one_name(self) -> None:
        resolver = FakeResolver({"redis.test": ["10.0.0.1", "10.0.0.2"]})
        addresses = FakeAddresses()
        addresses.down(A)
        config = BASE.with_values(addresses=("redis.test:6379",))
        pool, addresses, clock = self.start(config, addresses, resolver)
        clock.advance(0)
        self.assertEqual(self.where(pool), ["redis.test:6379 (10.0.0.2)"])

    def test_resolved_again_at_every_attempt(self) -> None:
        resolver = FakeResolver({"redis.test": ["10.0.0.1"]})
        config = BASE.with_values(addresses=("redis.test:6379",))
        pool, addresses, clock = self.start(config, resolver=resolver)
        self.assertEqual(resolver.lookups, ["redis.test"])
        clock.advance(10)
        resolver.answers["redis.test"] = ["10.0.0.3"]  # the DNS record changed
        addresses[A].last.peer_closes()
        clock.advance(0)
        self.assertEqual(resolver.lookups, ["redis.test", "redis.test"])
        self.assertEqual(self.where(pool), ["redis.test:6379 (10.0.0.3)"])
        self.assertEqual([r["address"] for r in pool.address_status()],
                         ["redis.test:6379 (10.0.0.3)"])

    def test_a_literal_address_and_an_endpoint_string_are_not_resolved(self) -> None:
        resolver = FakeResolver()
        config = BASE.with_values(addresses=(A, "unix:/run/redis.sock"))
        pool, _addresses, _ = self.start(config, resolver=resolver)
        self.assertEqual(resolver.lookups, [])
        self.assertEqual([r["address"] for r in pool.address_status()],
                         [A, "unix:/run/redis.sock"])

    def test_a_name_that_resolves_to_nothing(self) -> None:
        config = BASE.with_values(addresses=("nowhere.test:6379",))
        pool, _, _ = self.start(config, resolver=FakeResolver())
        member = pool.members[0]
        self.assertEqual(member.last_error,
                         "cannot resolve the host name of group nowhere.test:6379")
        self.assertEqual(member.retry_in(), 1.0)

    def test_the_attempt_waits_for_the_resolver(self) -> None:
        resolver = FakeResolver({"redis.test": ["10.0.0.1"]})
        resolver.hold = True
        config = BASE.with_values(addresses=("redis.test:6379",))
        pool, addresses, _ = self.start(config, resolver=resolver)
        self.assertEqual(pool.members[0].state, "connecting")
        self.assertEqual(addresses.attempts(), {})
        resolver.release()
        self.assertEqual(self.where(pool), ["redis.test:6379 (10.0.0.1)"])


class MaxConnectionAgeTests(GroupTestCase):
    def test_an_old_connection_is_drained_and_replaced(self) -> None:
        config = BASE.with_values(max_connection_age=100.0)
        pool, addresses, clock = self.start(config, jitter=lambda: 0.5)
        first = addresses[A].last
        clock.advance(94.0)
        replies = pool.request(line("GET k"), 5.0)
        clock.advance(0.9)  # 100 s, 5% (half the jitter range) earlier: 95 s
        self.assertIs(self.connection_of(pool, addresses, 0), first)
        clock.advance(0.1)
        second = self.connection_of(pool, addresses, 0)
        self.assertIsNot(second, first)
        self.assertTrue(first.transport.write_closed)
        pool.send(line("SET k v"))
        self.assertEqual((first.take(), second.take()), (b"GET k\r\n", b"SET k v\r\n"))
        first.feed(b"v\r\n")
        self.assertEqual(texts(self.successResultOf(replies)), [b"v"])
        first.peer_closes()
        self.assertIn("upstream 0: replacing its connection to 10.0.0.1:6379 (older than "
                      "max_connection_age, 100 s); it serves until the new one is ready",
                      self.logged)
        self.assertIn("upstream 0: draining the old connection to 10.0.0.1:6379 (1 replies due)",
                      self.logged)
        clock.advance(95.0)  # and the new one in its turn
        self.assertIsNot(self.connection_of(pool, addresses, 0), second)
        second.peer_closes()

    def test_with_a_single_upstream_too(self) -> None:
        endpoint = FakeEndpoint(half_close=True)
        pool, clock, _ = make_pool(Config().with_values(max_connection_age=10.0), endpoint)
        pool.startService()
        clock.advance(10.0)  # no jitter
        self.assertEqual(len(endpoint.connections), 2)
        self.assertEqual(pool.members[0].state, CONNECTED)
        endpoint.connections[0].peer_closes()
        self.successResultOf(pool.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])

    def single(self, endpoint: FakeEndpoint, **values: Any) -> tuple[UpstreamPool, Clock]:
        pool, clock, _ = make_pool(Config().with_values(**values), endpoint)
        pool.startService()
        self.addCleanup(self.stop, pool, clock)
        return pool, clock

    def test_a_pool_of_one_is_replaced_without_a_moment_of_503s(self) -> None:
        endpoint = FakeEndpoint(CONNECT, HANG, half_close=True)
        pool, clock = self.single(endpoint, max_connection_age=10.0)
        old = endpoint.last
        clock.advance(10.0)  # the new connection is under way...
        self.assertEqual(pool.members[0].state, CONNECTED)
        pool.send(line("a"))  # ...and the old one still serves
        self.assertEqual(old.take(), b"a\r\n")
        endpoint.finish_hanging()
        new = endpoint.last
        self.assertTrue(old.transport.write_closed)
        pool.send(line("b"))
        self.assertEqual((old.take(), new.take()), (b"", b"b\r\n"))
        old.peer_closes()

    def test_a_failed_replacement_keeps_the_old_connection(self) -> None:
        endpoint = FakeEndpoint(CONNECT, REFUSE, half_close=True)
        pool, clock = self.single(endpoint, max_connection_age=10.0)
        old = endpoint.last
        clock.advance(10.0)
        self.assertEqual(pool.members[0].state, CONNECTED)
        self.assertIn("upstream 0: connection refused by localhost:65432; next attempt in 1 s "
                      "(the connection to localhost:65432 still serves)", self.logged)
        pool.send(line("a"))
        self.assertEqual(old.take(), b"a\r\n")
        clock.advance(1.0)
        self.assertTrue(old.transport.write_closed)
        self.assertEqual(len(endpoint.connections), 2)
        old.peer_closes()

    def test_the_old_connection_lost_while_replacing(self) -> None:
        endpoint = FakeEndpoint(CONNECT, HANG, half_close=True)
        pool, clock = self.single(endpoint, max_connection_age=10.0)
        clock.advance(10.0)
        endpoint.last.peer_closes()
        member = pool.members[0]
        self.assertEqual((member.state, member.protocol), ("connecting", None))
        self.assertRaises(NotConnectedError, pool.send, line("a"))
        endpoint.finish_hanging()
        self.assertEqual(member.state, CONNECTED)
        pool.send(line("a"))
        self.assertEqual(endpoint.last.take(), b"a\r\n")

    def test_off_by_default(self) -> None:
        _pool, addresses, clock = self.start(BASE)
        clock.advance(365 * 86400.0)
        self.assertEqual(addresses.attempts(), {A: 1, B: 0})


class ShutdownTests(GroupTestCase):
    def test_drain_waits_for_moved_connections_too(self) -> None:
        config = BASE.with_values(max_connection_age=10.0)
        pool, addresses, clock = self.start(config)
        clock.advance(10.0)
        old, new = addresses[A].connections
        drained = pool.drain(clock, 5.0)
        self.assertTrue(new.transport.write_closed)
        new.peer_closes()
        self.assertNoResult(drained)
        old.peer_closes()
        self.successResultOf(drained)

    def test_no_probes_or_moves_once_draining(self) -> None:
        pool, addresses, clock = self.start(BASE.with_values(failback_after=1.0))
        clock.advance(10)
        addresses.down(A)
        clock.advance(0)
        addresses.up(A)
        drained = pool.drain(clock, 5.0)
        attempts = addresses[A].attempts
        clock.advance(3.0)
        self.assertEqual(addresses[A].attempts, attempts)
        addresses[B].last.peer_closes()
        self.successResultOf(drained)

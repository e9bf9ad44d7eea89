"""Defects found in review, each shown by a test that failed before its fix."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bridge.config import Config, ConfigError, load
from bridge.errors import BodyError, NotConnectedError
from bridge.http.body import Lines, parse_body
from bridge.upstream.pool import UpstreamPool
from tests.fakes_upstream import (
    FakeEndpoint,
    RecordingTransport,
    make_pool,
)
from tests.http_harness import HarnessTestCase

BASE = Config().with_values(backoff_initial=1.0, backoff_factor=2.0, backoff_max=8.0)
DEEP = b"[" * 100_000  # nested far beyond the interpreter's recursion limit


def one(text: str) -> Lines:
    return Lines(1, text.encode("ascii") + b"\r\n")


class DeeplyNestedJSONTests(HarnessTestCase):
    """json.loads raises RecursionError (not a ValueError) for deep nesting."""

    def test_parse_body_says_invalid_json(self) -> None:
        with self.assertRaises(BodyError) as caught:
            parse_body(DEEP, b"application/json", 64 * 1024, b"\r\n")
        self.assertEqual((caught.exception.status, caught.exception.code),
                         (400, "invalid_json"))

    def test_send_answers_400_not_500(self) -> None:
        harness = self.harness()
        response = harness.call("POST", "/send", DEEP, {"Content-Type": "application/json"})
        self.assertEqual((response.status, response.json()["error"]), (400, "invalid_json"))
        self.assertEqual(harness.upstream.value(), b"")


class ConfigHoleTests(SynchronousTestCase):
    def test_heartbeat_line_with_a_line_break_is_refused(self) -> None:
        # "PING\r\nPING" writes two lines for one reply slot: the second reply
        # would be handed to the next /request caller.
        for value in ("PING\r\nPING", "PING\nPING", "PING\r"):
            with self.assertRaises(ConfigError) as caught:
                load({}, {"BRIDGE_HEARTBEAT_LINE": value})
            self.assertEqual(caught.exception.setting, "heartbeat_line")

    def test_non_utf8_environment_values_are_refused(self) -> None:
        # os.environ holds undecodable bytes as lone surrogates; before the fix
        # the value passed validation and BridgeService() died with a traceback.
        for name in ("BRIDGE_HANDSHAKE", "BRIDGE_HEARTBEAT_LINE", "BRIDGE_TOKEN"):
            with self.assertRaises(ConfigError) as caught:
                load({}, {name: "AUTH s\udcffcret"})
            self.assertEqual(caught.exception.setting, name[len("BRIDGE_"):].lower())
            self.assertNotIn("cret", str(caught.exception))


class TcpLikeTransport(RecordingTransport):
    """abortConnection() as twisted.internet.tcp does it: writes are dropped at
    once, connectionLost comes one reactor turn later."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock
        self.dropped = b""
        self._aborting = False
        self.write_closed = False

    def write(self, data: bytes) -> None:
        if self._aborting:
            self.dropped += data
            return
        super().write(data)

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        if self._aborting or self.disconnected:
            return
        self._aborting = True
        self._clock.callLater(0, self.loseConnection)


def TcpLikeEndpoint(clock: Clock) -> FakeEndpoint:
    """The fake endpoint, its connections on :class:`TcpLikeTransport`s."""
    return FakeEndpoint(transport_factory=lambda: TcpLikeTransport(clock))


class AbortWindowTests(SynchronousTestCase):
    """Between abort() and connectionLost a /send got 202 for dropped lines."""

    def start(self, **values: Any) -> tuple[UpstreamPool, FakeEndpoint, Clock]:
        clock = Clock()
        endpoint = TcpLikeEndpoint(clock)
        pool, _, _ = make_pool(BASE.with_values(**values), endpoint, clock)
        pool.startService()
        self.addCleanup(lambda: self.successResultOf(pool.stopService()))
        return pool, endpoint, clock

    def test_no_send_on_a_connection_being_aborted(self) -> None:
        pool, endpoint, clock = self.start(max_line_bytes=16)
        endpoint.last.feed(b"x" * 40 + b"\r\n")  # too long: the bridge aborts
        self.assertRaises(NotConnectedError, pool.send, one("lost"))
        clock.advance(0)  # connectionLost arrives
        self.assertEqual(endpoint.connections[0].transport.dropped, b"")

    def test_another_member_takes_the_work(self) -> None:
        pool, endpoint, clock = self.start(max_line_bytes=16, pool_size=2)
        first, second = endpoint.connections
        first.feed(b"x" * 40 + b"\r\n")
        for text in ("a", "b"):
            pool.send(one(text))
        self.assertEqual(second.take(), b"a\r\nb\r\n")
        clock.advance(0)
        self.assertEqual(first.transport.dropped, b"")


class DrainReconnectTests(SynchronousTestCase):
    def test_a_drained_member_does_not_reconnect_while_others_drain(self) -> None:
        clock = Clock()
        endpoint = TcpLikeEndpoint(clock)
        pool, _, _ = make_pool(BASE.with_values(pool_size=2), endpoint, clock)
        pool.startService()
        first, second = endpoint.connections
        drained = pool.drain(clock, 10)
        self.assertEqual([c.transport.write_closed for c in (first, second)],  # type: ignore[attr-defined]
                         [True, True])
        first.peer_closes()  # the first server is done at once
        clock.advance(5)  # the second is still processing
        self.assertEqual(endpoint.attempts, 2)
        self.assertNoResult(drained)
        second.peer_closes()
        self.successResultOf(drained)
        self.successResultOf(pool.stopService())
        self.assertEqual(endpoint.attempts, 2)
        self.assertEqual(clock.getDelayedCalls(), [])


class HeartbeatDuringDrainTests(SynchronousTestCase):
    def test_a_slow_heartbeat_reply_does_not_reset_a_draining_connection(self) -> None:
        # A heartbeat was in flight at SIGTERM and the server, busy with the
        # lines before it, answers after heartbeat_timeout.  The drain must
        # keep waiting for the server's close, not abort (RST), which makes
        # Redis or memcached throw away lines already accepted with 202.
        clock = Clock()
        endpoint = TcpLikeEndpoint(clock)
        config = BASE.with_values(heartbeat_interval=10.0, heartbeat_timeout=3.0)
        pool, _, _ = make_pool(config, endpoint, clock)
        pool.startService()
        connection = endpoint.last
        clock.advance(10)
        self.assertEqual(connection.take(), b"PING\r\n")
        drained = pool.drain(clock, 10)
        clock.advance(3.5)
        self.assertFalse(connection.transport._aborting)  # type: ignore[attr-defined]
        self.assertEqual(pool.members[0].counters.heartbeat_failures, 0)
        connection.feed(b"+PONG\r\n")
        connection.peer_closes()
        self.successResultOf(drained)
        self.successResultOf(pool.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])


class ConnectedDuringDrainTests(SynchronousTestCase):
    """A member whose connection (or handshake) completes after the drain began
    does not come back to life: it is closed and takes no work."""

    def test_connection_completing_during_the_drain_is_closed(self) -> None:
        from twisted.internet.defer import Deferred as _Deferred
        from twisted.internet.testing import StringTransportWithDisconnection

        from tests.fakes_upstream import make_member

        pending: list[tuple[object, _Deferred[object]]] = []

        class Endpoint:
            def connect(self, factory: object) -> _Deferred[object]:
                waiting: _Deferred[object] = _Deferred()
                pending.append((factory, waiting))
                return waiting

        member, _, clock, _ = make_member(Config(), Endpoint())  # type: ignore[arg-type]
        member.start()
        self.assertEqual(len(pending), 1)
        drained = member.drain()
        self.successResultOf(drained)
        factory, waiting = pending[0]
        protocol = factory.buildProtocol(None)  # type: ignore[attr-defined]
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        waiting.callback(protocol)
        self.assertIsNone(member.protocol)
        self.assertEqual(member.state, "draining")
        self.assertFalse(transport.connected)
        stopped = member.stop()
        self.successResultOf(stopped)
        self.assertEqual(clock.getDelayedCalls(), [])

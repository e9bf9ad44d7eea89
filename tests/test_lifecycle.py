"""Admission counting and the graceful shutdown: the Lifecycle state machine
alone on a Clock, then the whole BridgeService (Gate, API, pool drain) in
memory, driven like SIGTERM drives it (``stopService``)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from bridge.app.lifecycle import DRAINING, REFUSING, RUNNING, Lifecycle
from tests.http_harness import Harness, HarnessTestCase, Response, chunked

SHUTTING_DOWN = {
    "error": "shutting_down",
    "message": "the bridge is shutting down and takes no new work",
}


class LifecycleTests(SynchronousTestCase):
    def lifecycle(self, delay: float = 0.0, grace: float = 10.0) -> tuple[Lifecycle, Clock]:
        clock = Clock()
        clock.advance(100)
        return Lifecycle(clock, 2, delay, grace), clock

    def test_counter(self) -> None:
        lifecycle, _ = self.lifecycle()
        self.assertEqual((lifecycle.state, lifecycle.ready, lifecycle.inflight),
                         (RUNNING, True, 0))
        lifecycle.started()
        lifecycle.started()
        self.assertEqual(lifecycle.inflight, 2)
        lifecycle.finished()
        lifecycle.finished()
        self.assertEqual(lifecycle.inflight, 0)
        self.assertEqual(lifecycle.remaining(), 0.0)

    def test_idle_shutdown_fires_at_once(self) -> None:
        lifecycle, clock = self.lifecycle(grace=10)
        done = lifecycle.shutdown()
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual((lifecycle.state, lifecycle.ready, lifecycle.refusing),
                         (REFUSING, False, True))
        self.assertEqual(lifecycle.deadline, 110.0)
        self.assertEqual(lifecycle.remaining(), 10.0)
        clock.advance(4)
        self.assertEqual(lifecycle.remaining(), 6.0)
        clock.advance(7)
        self.assertEqual(lifecycle.remaining(), 0.0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_delay_then_refuse(self) -> None:
        lifecycle, clock = self.lifecycle(delay=5, grace=10)
        done = lifecycle.shutdown()
        self.assertEqual((lifecycle.state, lifecycle.ready, lifecycle.refusing),
                         (DRAINING, False, False))
        self.assertEqual(lifecycle.remaining(), 15.0)
        clock.advance(4.999)
        self.assertNoResult(done)
        self.assertEqual(lifecycle.state, DRAINING)
        clock.advance(0.001)
        self.assertEqual(lifecycle.state, REFUSING)
        self.successResultOf(done)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_waits_for_work_in_flight(self) -> None:
        lifecycle, clock = self.lifecycle(grace=10)
        lifecycle.started()
        lifecycle.started()
        done = lifecycle.shutdown()
        self.assertEqual(lifecycle.state, REFUSING)
        clock.advance(9)
        lifecycle.finished()
        self.assertNoResult(done)
        lifecycle.finished()
        self.successResultOf(done)
        # The grace timer is cancelled, not left to fire.
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_grace_runs_out(self) -> None:
        lifecycle, clock = self.lifecycle(delay=2, grace=10)
        lifecycle.started()
        done = lifecycle.shutdown()
        clock.advance(2)
        clock.advance(9.5)
        self.assertNoResult(done)
        clock.advance(0.5)
        self.successResultOf(done)
        self.assertEqual((lifecycle.inflight, lifecycle.remaining()), (1, 0.0))
        lifecycle.finished()  # late: nothing more happens
        self.assertEqual(lifecycle.inflight, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_work_admitted_during_the_delay_is_waited_for(self) -> None:
        lifecycle, clock = self.lifecycle(delay=5, grace=10)
        done = lifecycle.shutdown()
        clock.advance(1)
        lifecycle.started()
        clock.advance(4)
        self.assertNoResult(done)
        lifecycle.finished()
        self.successResultOf(done)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_second_shutdown(self) -> None:
        lifecycle, clock = self.lifecycle(grace=10)
        lifecycle.started()
        first = lifecycle.shutdown()
        second = lifecycle.shutdown()
        self.successResultOf(second)
        self.assertNoResult(first)
        self.assertEqual(lifecycle.deadline, 110.0)
        lifecycle.finished()
        self.successResultOf(first)
        self.assertEqual(clock.getDelayedCalls(), [])


READY_SHUTTING_DOWN = {"ready": False, "state": "shutting_down", "retry_in": None,
                       "pool_size": 1}


class ShutdownTests(HarnessTestCase):
    def assertShuttingDown(self, response: Response) -> None:
        self.assertJSONResponse(response, 503, SHUTTING_DOWN)
        self.assertEqual(response.headers[b"connection"], [b"close"])
        self.assertEqual(response.headers[b"retry-after"], [b"1"])

    def refused(self, harness: Harness, method: str, path: str, body: bytes) -> None:
        """The request gets 503 shutting_down and its connection is closed."""
        client = harness.start(method, path, body)
        self.assertShuttingDown(client.response())
        self.assertTrue(client.closing)

    def test_not_ready_at_once(self) -> None:
        harness = self.harness(shutdown_delay=5)
        self.assertEqual(harness.call("GET", "/readyz").status, 200)
        stopping = harness.stop()
        self.assertJSONResponse(harness.call("GET", "/readyz"), 503,
                                {**READY_SHUTTING_DOWN, "connected": 1})
        self.assertJSONResponse(harness.call("GET", "/healthz"), 200, {"status": "ok"})
        self.assertNoResult(stopping)

    def test_work_is_taken_during_the_delay_then_refused(self) -> None:
        harness = self.harness(shutdown_delay=5, shutdown_grace=10)
        stopping = harness.stop()
        self.assertEqual(harness.call("GET", "/status").json()["lifecycle"], "draining")
        harness.reactor.advance(4.9)
        self.assertJSONResponse(harness.call("POST", "/send", b"SET a 1\n"), 202, {"sent": 1})
        waiting = harness.start("POST", "/request", b"GET a\n")
        harness.upstream.peer_sends(b"1\r\n")
        self.assertJSONResponse(waiting.response(), 200, {"replies": ["1"]})
        self.assertFalse(harness.upstream.write_closed)
        harness.reactor.advance(0.1)
        # Nothing in flight: the upstream is half-closed at once.
        self.assertTrue(harness.upstream.write_closed)
        self.refused(harness, "POST", "/send", b"SET b 2\n")
        self.refused(harness, "POST", "/request", b"GET b\n")
        self.refused(harness, "POST", "/send?x=1", b'{"lines": ["x"]}')
        status = harness.call("GET", "/status")
        self.assertEqual((status.status, status.json()["lifecycle"]), (200, "refusing"))
        self.assertEqual(harness.upstream.value(), b"SET a 1\r\nGET a\r\n")
        self.assertNoResult(stopping)
        harness.upstream.peer_closes()
        self.successResultOf(stopping)

    def test_refused_at_once_without_delay(self) -> None:
        harness = self.harness()
        harness.stop()
        self.refused(harness, "POST", "/send", b"x\n")
        self.refused(harness, "POST", "/request", b"x\n")
        # With a chunked body too.
        for path in ("/send", "/request"):
            client = harness.client()
            client.send(chunked("POST", path, b"x\n"))
            self.assertShuttingDown(client.response())
            self.assertTrue(client.closing)
        self.assertJSONResponse(harness.call("GET", "/readyz"), 503,
                                {**READY_SHUTTING_DOWN, "connected": 0})
        self.assertEqual(harness.upstream.value(), b"")

    def test_requests_in_flight_finish_before_the_drain(self) -> None:
        harness = self.harness(shutdown_grace=10, reply_timeout=30, max_reply_timeout=60)
        first = harness.start("POST", "/request", b"GET a\n")
        second = harness.start("POST", "/request", b"GET b\nGET c\n")
        self.assertEqual(harness.service.lifecycle.inflight, 2)
        stopping = harness.stop()
        self.refused(harness, "POST", "/send", b"late\n")
        harness.reactor.advance(5)
        harness.upstream.peer_sends(b"A\r\n")
        self.assertJSONResponse(first.response(), 200, {"replies": ["A"]})
        self.assertFalse(harness.upstream.write_closed)
        harness.upstream.peer_sends(b"B\r\n")
        self.assertEqual(second.responses(), [])
        harness.upstream.peer_sends(b"C\r\n")
        self.assertJSONResponse(second.response(), 200, {"replies": ["B", "C"]})
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        # Every line accepted went out before the write side was closed.
        self.assertTrue(harness.upstream.write_closed)
        self.assertEqual(harness.upstream.value(), b"GET a\r\nGET b\r\nGET c\r\n")
        self.assertFalse(harness.upstream.aborted)
        self.assertNoResult(stopping)
        harness.upstream.peer_closes()
        self.successResultOf(stopping)
        self.assertFalse(harness.upstream.aborted)
        self.assertNoTimersLeft(harness)

    def test_a_client_that_leaves_finishes_its_work(self) -> None:
        harness = self.harness(shutdown_grace=10)
        waiting = harness.start("POST", "/request", b"GET a\n")
        stopping = harness.stop()
        waiting.disconnect()
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        self.assertTrue(harness.upstream.write_closed)
        harness.upstream.peer_sends(b"late\r\n")  # swallowed by the abandoned slot
        harness.upstream.peer_closes()
        self.successResultOf(stopping)

    def test_grace_runs_out_with_work_in_flight(self) -> None:
        harness = self.harness(shutdown_grace=10, reply_timeout=30, max_reply_timeout=60)
        waiting = harness.start("POST", "/request", b"GET a\n")
        stopping = harness.stop()
        harness.reactor.advance(9.9)
        self.assertFalse(harness.upstream.write_closed)
        harness.reactor.advance(0.1)
        # Grace is over: half-close anyway, and keep reading a little (0.5 s).
        self.assertTrue(harness.upstream.write_closed)
        self.assertEqual(waiting.responses(), [])
        harness.reactor.advance(0.499)
        self.assertFalse(harness.upstream.aborted)
        harness.reactor.advance(0.001)
        self.assertTrue(harness.upstream.aborted)
        response = waiting.response()
        self.assertEqual((response.status, response.json()["error"]), (502, "upstream_lost"))
        self.successResultOf(stopping)
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        self.assertNoTimersLeft(harness)

    def test_replies_are_still_read_after_the_half_close(self) -> None:
        harness = self.harness(shutdown_grace=10, reply_timeout=30, max_reply_timeout=60)
        waiting = harness.start("POST", "/request", b"GET a\n")
        stopping = harness.stop()
        harness.reactor.advance(10)
        self.assertTrue(harness.upstream.write_closed)
        harness.upstream.peer_sends(b"A\n")
        self.assertJSONResponse(waiting.response(), 200, {"replies": ["A"]})
        harness.upstream.peer_closes()
        self.successResultOf(stopping)
        self.assertFalse(harness.upstream.aborted)

    def test_drain_aborts_when_the_upstream_never_closes(self) -> None:
        harness = self.harness(shutdown_grace=7)
        harness.call("POST", "/send", b"x\n")
        stopping = harness.stop()
        self.assertTrue(harness.upstream.write_closed)
        harness.reactor.advance(6.999)
        self.assertNoResult(stopping)
        self.assertFalse(harness.upstream.aborted)
        harness.reactor.advance(0.001)
        self.assertTrue(harness.upstream.aborted)
        self.successResultOf(stopping)
        self.assertEqual(harness.upstream.value(), b"x\r\n")
        self.assertNoTimersLeft(harness)

    def test_pool_drain_alone(self) -> None:
        harness = self.harness(pool_size=2)
        first, second = harness.upstreams
        drained = harness.service.pool.drain(harness.reactor, 3)
        self.assertEqual((first.write_closed, second.write_closed), (True, True))
        # Drained members take no more work.
        self.assertEqual(harness.call("POST", "/send", b"x\n").status, 503)
        first.peer_closes()
        harness.reactor.advance(2.5)
        self.assertNoResult(drained)
        harness.reactor.advance(0.5)
        self.successResultOf(drained)
        self.assertEqual((first.aborted, second.aborted), (False, True))
        self.assertEqual((first.value(), second.value()), (b"", b""))

    def test_every_member_is_drained(self) -> None:
        harness = self.harness(pool_size=3, shutdown_grace=10)
        first, second, third = harness.upstreams
        for _ in range(3):
            self.assertEqual(harness.call("POST", "/send", b"x\n").status, 202)
        stopping = harness.stop()
        self.assertEqual([t.write_closed for t in harness.upstreams], [True, True, True])
        self.assertEqual([t.value() for t in harness.upstreams], [b"x\r\n"] * 3)
        second.peer_closes()
        first.peer_closes()
        self.assertNoResult(stopping)
        harness.reactor.advance(9)
        third.peer_closes()
        self.successResultOf(stopping)
        self.assertEqual([t.aborted for t in harness.upstreams], [False, False, False])
        self.assertNoTimersLeft(harness)

    def test_a_member_down_at_shutdown(self) -> None:
        harness = self.harness(pool_size=2, connect=1, shutdown_grace=10)
        stopping = harness.stop()
        harness.upstream.peer_closes()
        self.successResultOf(stopping)
        self.assertNoTimersLeft(harness)

    def test_no_reconnect_after_the_drain(self) -> None:
        harness = self.harness(shutdown_grace=10, backoff_initial=0.1)
        stopping = harness.stop()
        attempts = len(harness.reactor.tcpClients)
        harness.upstream.peer_closes()
        self.successResultOf(stopping)
        harness.reactor.advance(60)
        self.assertEqual(len(harness.reactor.tcpClients), attempts)

    def test_no_heartbeat_after_the_half_close(self) -> None:
        harness = self.harness(shutdown_grace=10, heartbeat_interval=1)
        harness.reactor.advance(1)
        self.assertEqual(harness.upstream.value(), b"PING\r\n")
        harness.upstream.peer_sends(b"PONG\r\n")
        stopping = harness.stop()
        harness.reactor.advance(5)
        self.assertEqual(harness.upstream.value(), b"PING\r\n")
        self.assertEqual(harness.upstream.after_half_close, b"")
        harness.upstream.peer_closes()
        self.successResultOf(stopping)

    def test_events_streams_are_closed(self) -> None:
        harness = self.harness()
        stream = harness.start("GET", "/events")
        self.assertIn(b": connected\n\n", stream.transport.value())
        self.assertEqual(harness.service.events.subscribers, 1)
        stopping = harness.stop()
        self.assertEqual(harness.service.events.subscribers, 0)
        self.assertTrue(stream.transport.disconnecting)
        harness.upstream.peer_closes()
        self.successResultOf(stopping)

    def test_the_http_side_stops_listening(self) -> None:
        harness = self.harness()
        port = harness.service.web.port
        assert port is not None
        self.assertTrue(port.listening)  # type: ignore[attr-defined]
        stopping = harness.stop()
        harness.upstream.peer_closes()
        self.successResultOf(stopping)
        self.assertFalse(port.listening)  # type: ignore[attr-defined]
        self.assertNoTimersLeft(harness)

    def test_log(self) -> None:
        events = self.capture_logs()
        harness = self.harness(shutdown_delay=1, shutdown_grace=3, reply_timeout=30,
                               max_reply_timeout=60, access_log=True)
        harness.start("POST", "/request", b"x\n")
        del events[:]
        harness.stop()
        harness.reactor.advance(1)
        harness.reactor.advance(3)
        harness.upstream.peer_closes()
        # What an operator sees at the default level (debug adds the transitions).
        lines = [(e["log_level"], formatEvent(e)) for e in events
                 if e["log_namespace"].startswith("bridge.") and e["log_level"] > LogLevel.debug]
        self.assertEqual(lines, [
            (LogLevel.info, "shutting down: not ready now, refusing new work in 1 s, "
                            "then up to 3 s for work in flight"),
            (LogLevel.info, "waiting for 1 requests in flight"),
            (LogLevel.warn, "shutdown_grace over with 1 requests still in flight"),
            (LogLevel.info, "upstream 0: flushing 0 bytes and closing the write side"),
            (LogLevel.info, '10.9.8.7 "POST /request" 502 159'),
            (LogLevel.info, "upstream 0: drained and closed"),
        ])

"""POST /send with spool = "disk" (issue 12), in memory: the real bridge on a
MemoryReactorClock, the real spool on a real directory, its disk work run
inline (or stepped by hand), and a fake upstream socket whose bytes are checked."""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.logger import LogLevel, formatEvent

from bridge.app.handover import CHECK_INTERVAL
from bridge.app.service import BridgeService
from bridge.config import Config
from bridge.upstream.spool.delivery import RETRY
from bridge.upstream.spool.runner import inline
from bridge.upstream.spool.store import DiskCalls, SegmentStore
from tests.http_harness import Harness, HarnessTestCase, Reactor
from tests.spool_support import FlakyDisk, StepRunner, flip, scratch, segments


class SpoolCase(HarnessTestCase):
    def spooled(self, directory: str | None = None, connect: int = 0,
                options: dict[str, Any] | None = None, **values: Any) -> Harness:
        self.directory = directory or scratch(self)
        values.setdefault("spool", "disk")
        values.setdefault("spool_dir", self.directory)
        return self.harness(connect=connect,
                            service_options={"spool_runner": inline, **(options or {})},
                            **values)

    def spool_status(self, harness: Harness) -> dict[str, Any]:
        status: dict[str, Any] = harness.call("GET", "/status").json()["spool"]
        return status

    def counts(self, harness: Harness) -> tuple[int, int, int, int]:
        status = self.spool_status(harness)
        return (status["records"], status["retired"], status["redelivered"],
                status["set_aside"])


class AcceptTests(SpoolCase):
    def test_202_while_the_upstream_is_down_then_delivered_in_order(self) -> None:
        harness = self.spooled()
        for body in (b"RPUSH l a\nRPUSH l b\n", b"RPUSH l c\n"):
            self.assertJSONResponse(harness.call("POST", "/send", body), 202,
                                    {"sent": body.count(b"\n"), "spooled": True})
        self.assertEqual(self.counts(harness), (2, 0, 0, 0))
        ready = harness.call("GET", "/readyz")
        self.assertEqual((ready.status, ready.json()["ready"], ready.json()["spool"],
                          ready.json()["state"]), (200, True, "accepting", "connecting"))
        upstream = harness.connect_upstream()
        harness.reactor.advance(RETRY)
        self.assertEqual(upstream.value(), b"RPUSH l a\r\nRPUSH l b\r\nRPUSH l c\r\n")
        self.assertEqual(self.counts(harness), (0, 2, 0, 0))

    def test_connected_lines_are_written_at_once_and_retired(self) -> None:
        harness = self.spooled(connect=1)
        self.assertJSONResponse(harness.call("POST", "/send", b"one\ntwo\n"), 202,
                                {"sent": 2, "spooled": True})
        self.assertEqual(harness.upstream.value(), b"one\r\ntwo\r\n")
        self.assertEqual(self.counts(harness), (0, 1, 0, 0))

    def test_the_named_route_spools_too(self) -> None:
        directory = scratch(self)
        harness = self.harness(connect=0, service_options={"spool_runner": inline},
                               named_upstreams={}, spool="disk", spool_dir=directory)
        response = harness.call("POST", "/u/default/send", b"x\n")
        self.assertJSONResponse(response, 202, {"sent": 1, "spooled": True})

    def test_the_answer_waits_for_the_group_commit(self) -> None:
        runner = StepRunner()
        disk = FlakyDisk()
        harness = Harness.create(
            service_options={"spool_runner": runner,
                             "spool_disk": DiskCalls(disk.write, disk.sync)},
            spool="disk", spool_dir=scratch(self))
        self.addCleanup(self._finish_stepped, harness, runner)
        runner.step()  # the opening
        first = harness.start("POST", "/send", b"a\n")
        second = harness.start("POST", "/send", b"b\n")
        third = harness.start("POST", "/send", b"c\n")
        self.assertEqual([c.responses() for c in (first, second, third)], [[], [], []])
        runner.step()  # all three share one write and one fsync
        self.assertEqual([c.response().status for c in (first, second, third)],
                         [202, 202, 202])
        self.assertEqual((disk.writes, disk.syncs), (1, 1))

    def _finish_stepped(self, harness: Harness, runner: StepRunner) -> None:
        stopping = harness.stop()
        runner.drain()
        harness.close_everything()
        runner.drain()
        self.assertTrue(stopping.called)

    def test_request_is_not_spooled(self) -> None:
        harness = self.spooled()
        response = harness.call("POST", "/request", b"GET a\n")
        self.assertErrorResponse(response, 503, "upstream_unavailable")
        self.assertEqual(self.counts(harness), (0, 0, 0, 0))

    def test_confirm_is_refused_with_the_spool(self) -> None:
        harness = self.spooled(connect=1)
        response = harness.call("POST", "/send?confirm=true", b"a\n")
        self.assertErrorResponse(response, 400, "confirm_unavailable")
        self.assertEqual(harness.upstream.value(), b"")

    def test_lines_the_framing_would_misread_are_refused_before_storing(self) -> None:
        harness = self.spooled(reply_framing="memcached")
        response = harness.call("POST", "/send", b"set k 0 0 5\n")
        self.assertEqual(response.status, 400)
        self.assertEqual(self.counts(harness), (0, 0, 0, 0))


class FramingChangeTests(SpoolCase):
    def test_records_a_new_framing_cannot_send_are_retired_and_logged_within_a_budget(
        self,
    ) -> None:
        directory = scratch(self)
        first = self.spooled(directory)  # line framing: nothing to refuse
        for _ in range(10):
            self.assertEqual(first.call("POST", "/send", b"set k 0 0 5\n").status, 202)
        first.close_everything()
        logs = self.capture_logs()
        harness = self.spooled(directory, connect=1, reply_framing="memcached",
                               send_replies="check")
        harness.reactor.advance(RETRY)
        self.assertEqual(harness.upstream.value(), b"")  # a lone "set" would be misread
        self.assertEqual(self.counts(harness), (0, 10, 0, 0))
        lines = [e for e in logs if "cannot be sent with this upstream's framing"
                 in str(e.get("log_format"))]
        self.assertEqual(len(lines), 3)  # LogBudget: 3 a second
        self.assertEqual(lines[-1]["suppressed"], 0)
        self.assertEqual(harness.call("POST", "/send", b"get k\n").status, 202)
        harness.reactor.advance(RETRY)
        self.assertEqual(harness.upstream.value(), b"get k\r\n")


class RefusalTests(SpoolCase):
    def test_a_full_spool_is_429_with_retry_after_and_nothing_stored(self) -> None:
        harness = self.spooled(spool_max_bytes=1 << 20)
        body = b"x" * 9_998 + b"\n"
        self.assertEqual(harness.call("POST", "/send", body * 60).status, 202)
        response = harness.call("POST", "/send", body * 60)
        self.assertErrorResponse(response, 429, "spool_full")
        self.assertEqual(response.header(b"Retry-After"), b"5")
        self.assertEqual(self.counts(harness), (1, 0, 0, 0))
        ready = harness.call("GET", "/readyz")
        self.assertEqual((ready.status, ready.json()["spool"]), (200, "accepting"))

    def test_a_nearly_full_spool_is_not_ready_until_delivered(self) -> None:
        harness = self.spooled(spool_max_bytes=1 << 20)
        body = b"x" * 9_998 + b"\n"
        self.assertEqual(harness.call("POST", "/send", body * 95).status, 202)
        ready = harness.call("GET", "/readyz")
        self.assertEqual((ready.status, ready.json()["spool"]), (503, "full"))
        upstream = harness.connect_upstream()
        harness.reactor.advance(RETRY)
        self.assertEqual(len(upstream.value()), 95 * 10_000)
        self.assertEqual(self.spool_status(harness)["bytes"], 0)
        self.assertEqual(harness.call("GET", "/readyz").status, 200)

    def test_a_disk_error_is_503_logged_once_and_never_a_202(self) -> None:
        disk = FlakyDisk()
        logs = self.capture_logs()
        harness = self.spooled(options={"spool_disk": DiskCalls(write=disk.write,
                                                                sync=disk.sync)})
        disk.failure = errno.ENOSPC
        for _ in range(3):
            response = harness.call("POST", "/send", b"lost\n")
            self.assertErrorResponse(response, 503, "spool_unavailable")
            self.assertEqual(response.header(b"Retry-After"), b"5")
            self.assertIn("No space left on device", response.json()["message"])
        errors = [e for e in logs if "cannot store lines" in str(e.get("log_format", ""))]
        self.assertEqual(len(errors), 1)
        self.assertEqual(self.spool_status(harness)["state"], "failing")
        self.assertEqual(harness.call("GET", "/readyz").status, 200)
        disk.failure = None
        self.assertEqual(harness.call("POST", "/send", b"kept\n").status, 202)
        upstream = harness.connect_upstream()
        harness.reactor.advance(RETRY)
        self.assertEqual(upstream.value(), b"kept\r\n")

    def test_an_io_error_on_fsync_is_503(self) -> None:
        disk = FlakyDisk()
        harness = self.spooled(options={"spool_disk": DiskCalls(write=disk.write,
                                                                sync=disk.sync)})
        disk.failure = errno.EIO
        self.assertErrorResponse(harness.call("POST", "/send", b"a\n"), 503,
                                 "spool_unavailable")
        self.assertEqual(self.counts(harness), (0, 0, 0, 0))


class RetireTests(SpoolCase):
    def test_with_replies_a_record_is_retired_when_they_arrive(self) -> None:
        harness = self.spooled(connect=1, reply_framing="resp")
        self.assertEqual(harness.call("POST", "/send", b"RPUSH l a\nRPUSH l b\n").status, 202)
        self.assertEqual(harness.upstream.value(), b"RPUSH l a\r\nRPUSH l b\r\n")
        self.assertEqual(self.counts(harness), (1, 0, 0, 0))
        harness.upstream.peer_sends(b":1\r\n")
        self.assertEqual(self.counts(harness), (1, 0, 0, 0))
        harness.upstream.peer_sends(b":2\r\n")
        self.assertEqual(self.counts(harness), (0, 1, 0, 0))

    def test_unconfirmed_records_go_again_on_the_next_connection_counted(self) -> None:
        harness = self.spooled(connect=1, reply_framing="resp")
        self.assertEqual(harness.call("POST", "/send", b"RPUSH l a\n").status, 202)
        self.assertEqual(harness.call("POST", "/send", b"RPUSH l b\n").status, 202)
        first = harness.upstream
        first.peer_sends(b":1\r\n")  # "a" confirmed, "b" not
        first.peer_closes()
        harness.reactor.advance(harness.config.backoff_initial * 2)
        second = harness.connect_upstream()
        harness.reactor.advance(RETRY)
        self.assertEqual(second.value(), b"RPUSH l b\r\n")
        second.peer_sends(b":2\r\n")
        self.assertEqual(self.counts(harness), (0, 2, 1, 0))

    def test_a_fence_confirms_records(self) -> None:
        harness = self.spooled(connect=1, fence_line="ECHO {nonce}", fence_expect="^{nonce}$")
        self.assertEqual(harness.call("POST", "/send", b"a\nb\n").status, 202)
        written = harness.upstream.value()
        self.assertTrue(written.startswith(b"a\r\nb\r\nECHO "), written)
        self.assertEqual(self.counts(harness), (1, 0, 0, 0))
        nonce = written.split(b"ECHO ")[1].strip()
        harness.upstream.peer_sends(nonce + b"\r\n")
        self.assertEqual(self.counts(harness), (0, 1, 0, 0))

    def test_what_is_left_at_shutdown_is_delivered_after_the_next_start(self) -> None:
        directory = scratch(self)
        first = Harness.create(service_options={"spool_runner": inline}, spool="disk",
                               spool_dir=directory, reply_framing="resp")
        first.connect_upstream()
        self.assertEqual(first.call("POST", "/send", b"RPUSH l a\n").status, 202)
        self.assertEqual(first.call("POST", "/send", b"RPUSH l b\n").status, 202)
        first.upstream.peer_sends(b":1\r\n")
        # SIGTERM does not wait for "b"'s reply beyond the drain.
        first.close_everything()
        self.assertTrue(first.stopping.called)
        harness = self.spooled(directory, connect=1, reply_framing="resp")
        harness.reactor.advance(RETRY)
        self.assertEqual(harness.upstream.value(), b"RPUSH l b\r\n")
        harness.upstream.peer_sends(b":2\r\n")
        self.assertEqual(self.counts(harness), (0, 1, 1, 0))


class StatusTests(SpoolCase):
    def test_status_and_metrics_per_upstream(self) -> None:
        harness = self.spooled(spool_fsync="never")
        harness.call("POST", "/send", b"a\nb\n")
        harness.reactor.advance(7)
        status = self.spool_status(harness)
        self.assertEqual(status, {
            "state": "accepting", "directory": self.directory, "fsync": "never",
            "max_bytes": 1 << 30, "records": 1, "bytes": 36 + 6, "oldest_age": 7.0,
            "retired": 0, "redelivered": 0, "set_aside": 0,
        })
        page = harness.call("GET", "/metrics").body.decode()
        for line in ('bridge_spool_records{upstream="default"} 1.0',
                     'bridge_spool_bytes{upstream="default"} 42.0',
                     'bridge_spool_oldest_age_seconds{upstream="default"} 7.0',
                     'bridge_spool_retired_total{upstream="default"} 0.0',
                     'bridge_spool_redelivered_total{upstream="default"} 0.0',
                     'bridge_spool_set_aside_total{upstream="default"} 0.0'):
            self.assertIn(line + "\n", page)

    def test_no_spool_is_null_in_status(self) -> None:
        harness = self.harness(connect=0)
        self.assertIsNone(harness.call("GET", "/status").json()["spool"])


class DamageTests(SpoolCase):
    def test_a_damaged_record_is_set_aside_and_the_rest_delivered(self) -> None:
        directory = scratch(self)
        first = Harness.create(service_options={"spool_runner": inline}, spool="disk",
                               spool_dir=directory)
        for body in (b"first\n", b"second\n", b"third\n"):
            self.assertEqual(first.call("POST", "/send", body).status, 202)
        first.close_everything()
        (segment,) = segments(directory)
        flip(segment, 36 + 7 + 36 + 2)  # inside "second"'s payload
        logs = self.capture_logs()
        harness = self.spooled(directory)
        warnings = [e for e in logs if "damaged records set aside" in str(e.get("log_format"))]
        self.assertEqual(len(warnings), 1)
        upstream = harness.connect_upstream()
        harness.reactor.advance(RETRY)
        self.assertEqual(upstream.value(), b"first\r\nthird\r\n")
        self.assertEqual(self.counts(harness), (0, 2, 0, 1))
        self.assertEqual(len(os.listdir(os.path.join(directory, "damaged"))), 1)


class ReloadTests(SpoolCase):
    def test_a_changed_upstream_keeps_its_open_spool_and_delivers_to_the_new_pool(self) -> None:
        harness = self.spooled(connect=1)
        old_connection = harness.upstream
        self.assertEqual(harness.call("POST", "/send", b"before\n").status, 202)
        spool = harness.service.upstreams["default"].spool
        logs = self.capture_logs()
        new = harness.config.with_values(reply_timeout=2.0, spool_fsync="never")
        harness.service.reconfigure(new)
        # Until the new pool is connected the old one keeps the work.
        self.assertEqual(harness.call("POST", "/send", b"during\n").status, 202)
        self.assertEqual(old_connection.value(), b"before\r\nduring\r\n")
        connection = harness.connect_upstream(attempt=len(harness.reactor.tcpClients) - 1)
        harness.reactor.advance(CHECK_INTERVAL)
        upstream = harness.service.upstreams["default"]
        self.assertIs(upstream.spool, spool)
        self.assertEqual((upstream.config.reply_timeout, upstream.config.spool_fsync),
                         (2.0, "always"))
        self.assertEqual(
            [e["name"] for e in logs if "after a restart" in str(e.get("log_format"))],
            ["spool_fsync"])
        self.assertEqual(harness.call("POST", "/send", b"after\n").status, 202)
        harness.reactor.advance(RETRY)
        self.assertEqual(connection.value(), b"after\r\n")
        self.assertEqual(self.counts(harness), (0, 3, 0, 0))


class CongestionTests(SpoolCase):
    def test_delivery_waits_on_disk_once_the_transport_holds_its_buffer_size(self) -> None:
        harness = self.spooled(connect=1)  # write_high_water (1 MiB) is for /send unspooled
        upstream = harness.upstream
        upstream.kernel_full = True
        upstream.bufferSize = 500
        line = b"x" * 598 + b"\n"
        for _ in range(3):
            self.assertEqual(harness.call("POST", "/send", line).status, 202)
        # The first record fills the transport past its buffer: the others wait on disk.
        self.assertEqual(len(upstream.value()), 600)
        self.assertEqual(self.counts(harness), (2, 1, 0, 0))
        upstream.kernel_takes(len(upstream.value()))
        self.assertEqual(len(upstream.value()), 3 * 600)
        self.assertEqual(self.counts(harness), (0, 3, 0, 0))


class ClaimTests(SpoolCase):
    """The spool directory is locked before the bridge listens: a bridge that
    cannot have it stops (status 2) without ever opening its port."""

    def unstarted(self, directory: str, **values: Any) -> tuple[BridgeService, Reactor,
                                                                 list[tuple[str, int]]]:
        reactor = Reactor()
        fatal: list[tuple[str, int]] = []
        config = Config().with_values(upstream="tcp:127.0.0.1:1", spool="disk",
                                      spool_dir=directory, **values)
        service = BridgeService(config, reactor, jitter=lambda: 0.0,
                                on_fatal=lambda message, status: fatal.append((message, status)),
                                spool_runner=inline)
        return service, reactor, fatal

    def test_a_directory_held_by_another_bridge_stops_this_one_before_it_listens(
            self) -> None:
        first = self.spooled()
        service, reactor, fatal = self.unstarted(self.directory)
        service.startService()
        self.assertEqual(fatal, [(
            f"the spool directory {self.directory} is in use by another process (pid "
            f"{os.getpid()}); each upstream needs its own spool_dir", 2)])
        self.assertEqual((reactor.tcpServers, reactor.tcpClients), ([], []))
        self.assertFalse(service.running)
        self.assertIsNone(self.successResultOf(service.stopService()))
        self.assertJSONResponse(first.call("POST", "/send", b"x\n"), 202,
                                {"sent": 1, "spooled": True})

    def test_an_unusable_directory_stops_the_bridge_before_it_listens(self) -> None:
        directory = scratch(self)
        with open(directory, "w") as blocker:
            blocker.write("a file, not a directory")
        service, reactor, fatal = self.unstarted(directory)
        service.startService()
        self.assertEqual(len(fatal), 1)
        message, status = fatal[0]
        self.assertEqual(status, 2)
        self.assertTrue(message.startswith(
            f"setting 'spool_dir': cannot open the spool in {directory}: "), message)
        self.assertEqual(reactor.tcpServers, [])

    def test_when_one_of_two_spools_is_refused_the_other_is_released(self) -> None:
        held = self.spooled()
        free = scratch(self)
        metrics = Config().with_values(name="metrics", upstream="tcp:127.0.0.1:2",
                                       spool="disk", spool_dir=self.directory)
        service, reactor, fatal = self.unstarted(free, named_upstreams={"metrics": metrics})
        service.startService()
        self.assertEqual([status for _, status in fatal], [2])
        self.assertEqual(reactor.tcpServers, [])
        # The directory this bridge did claim is free again.
        self.assertEqual(SegmentStore.open(free, fsync=True)[0].close(), None)
        self.assertEqual(held.call("POST", "/send", b"x\n").status, 202)

    def test_a_spool_a_reload_adds_that_cannot_open_logs_and_the_bridge_goes_on(self) -> None:
        held = self.spooled()
        service, _reactor, fatal = self.unstarted(scratch(self))
        service.startService()
        logs = self.capture_logs()
        metrics = Config().with_values(name="metrics", upstream="tcp:127.0.0.1:2",
                                       spool="disk", spool_dir=self.directory)
        service.reconfigure(service.config.with_values(named_upstreams={"metrics": metrics}))
        self.assertEqual(fatal, [])
        self.assertTrue(service.running)
        errors = [formatEvent(e) for e in logs if e.get("log_level") is LogLevel.error]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("is in use by another process", errors[0])
        self.assertEqual(service.upstreams["metrics"].spool.state(), "opening")
        self.successResultOf(service.stopService())
        self.assertJSONResponse(held.call("POST", "/send", b"x\n"), 202,
                                {"sent": 1, "spooled": True})


class CloseWhileOpeningTests(SpoolCase):
    def test_a_spool_stopped_while_it_opens_is_closed_once_open_and_only_then_done(
            self) -> None:
        runner = StepRunner()
        directory = scratch(self)
        harness = Harness.create(service_options={"spool_runner": runner}, spool="disk",
                                 spool_dir=directory)
        spool = harness.service.upstreams["default"].spool
        assert spool is not None
        closing = spool.close()  # the opening job has not run yet
        self.assertNoResult(closing)
        runner.drain()  # the opening, then the close it queues
        self.assertIsNone(self.successResultOf(closing))
        self.assertIsNone(spool.claim())  # the directory lock was released
        spool.unclaim()
        harness.close_everything()

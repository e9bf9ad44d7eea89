"""The spool with real processes, threads and filesystems: kill -9 twenty times
in a row, a slow fsync that must not stall the reactor, a filesystem that fills up."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
import zlib

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from bridge.errors import SpoolUnavailableError
from bridge.upstream.spool.runner import WriterThread, inline
from bridge.upstream.spool.spool import Spool, open_spool
from bridge.upstream.spool.store import DiskCalls, SegmentStore
from tests.spool_crash_writer import payload
from tests.spool_support import scratch
from tests.waiting import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class KillNineTests(SynchronousTestCase):
    """A writer with many appends in flight is SIGKILLed at random moments, 20
    times in a row on one directory (10 with fsync never, which the OS page
    cache makes the easier case); after each kill every acknowledged record
    that was not retired must be there, byte for byte, and nothing damaged."""

    def _fork_server(self) -> subprocess.Popen[str]:
        """tests.spool_crash_writer as a fork server: each writer is a fresh
        process (forked before any reactor exists) without a fresh interpreter."""
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.spool_crash_writer", "--forks"], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )

        def stop() -> None:
            assert server.stdin is not None and server.stdout is not None
            server.stdin.close()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()  # by its PID
                server.wait(10)
            server.stdout.close()

        self.addCleanup(stop)
        return server

    def _kill_repeatedly(self, fsync: str, rounds: int) -> None:
        directory = scratch(self)
        rng = random.Random(20261201)
        acked: dict[int, int] = {}
        retired: set[int] = set()
        server = self._fork_server()
        assert server.stdin is not None and server.stdout is not None
        for round_ in range(rounds):
            log_path = f"{directory}.{round_}.out"
            server.stdin.write(f"{directory} {fsync} {round_} {log_path}\n")
            server.stdin.flush()
            writer = int(server.stdout.readline())
            try:
                wait_until(lambda path=log_path: (os.path.exists(path)  # type: ignore[misc]
                                                  and os.path.getsize(path) > 0),
                           "the first acknowledgement")
                time.sleep(rng.uniform(0.0, 0.2))  # a random moment, not a synchronisation
            finally:
                os.kill(writer, signal.SIGKILL)  # the writer, by its PID
                # The fork server reaps it: once it says so, the log is complete.
                self.assertEqual(server.stdout.readline().split(),
                                 ["exited", str(signal.SIGKILL)])
            with open(log_path) as log:
                for line in log:
                    if not line.endswith("\n"):
                        continue  # cut by the kill
                    kind, *fields = line.split()
                    if kind == "A":
                        record_id, token, size = int(fields[0]), fields[1], int(fields[2])
                        acked[record_id] = zlib.crc32(payload(token, size))
                    elif kind == "R":
                        retired.add(int(fields[0]))
            store, report = SegmentStore.open(directory, fsync=True)
            try:
                found: dict[int, int] = {}
                while batch := store.read(1000, 64 << 20):
                    found.update((r.record_id, zlib.crc32(r.payload)) for r in batch)
                self.assertEqual(report.set_aside, 0)
            finally:
                store.close()
            missing = [i for i in acked if i not in retired and i not in found]
            wrong = [i for i in acked if i in found and found[i] != acked[i]]
            self.assertEqual((missing, wrong), ([], []), f"after kill {round_ + 1}")
        self.assertGreater(len(acked), 5 * rounds)

    def test_kill_nine_loses_no_acknowledged_record_fsync_always(self) -> None:
        self._kill_repeatedly("always", 20)

    def test_kill_nine_loses_no_acknowledged_record_fsync_never(self) -> None:
        self._kill_repeatedly("never", 10)


class ReactorNotBlockedTests(TestCase):
    """An fsync that takes half a second stalls the writer thread, not the reactor."""

    @inlineCallbacks
    def test_a_slow_fsync_does_not_stop_a_timer(self) -> Deferred[None]:  # type: ignore[misc]
        def slow_sync(fd: int) -> None:
            time.sleep(0.5)  # the disk being slow
            os.fdatasync(fd)

        runner = WriterThread(reactor)
        runner.start()
        self.addCleanup(runner.stop)
        spool: Spool = yield open_spool(scratch(self), 1 << 20, "always", runner=runner,
                                        clock=reactor, disk=DiskCalls(sync=slow_sync))
        self.addCleanup(spool.close)
        ticks: list[float] = []
        timer = task.LoopingCall(lambda: ticks.append(time.monotonic()))
        timer.start(0.01)
        try:
            started = time.monotonic()
            record_id = yield spool.append(b"line\r\n", 1)
            took = time.monotonic() - started
        finally:
            timer.stop()
        self.assertEqual(record_id, 1)
        self.assertGreaterEqual(took, 0.5)
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        self.assertGreater(len(ticks), 20)
        self.assertLess(max(gaps), 0.25)


class FullFilesystemTests(SynchronousTestCase):
    """A spool on a 1 MiB tmpfs: the filesystem fills up long before spool_max_bytes."""

    def setUp(self) -> None:
        self.mount = scratch(self)
        os.makedirs(self.mount)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", self.mount],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SkipTest(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
        self.addCleanup(subprocess.run, ["umount", self.mount], check=True)

    def test_a_full_disk_is_503_nothing_acknowledged_is_lost_and_space_comes_back(self) -> None:
        clock = Clock()
        directory = os.path.join(self.mount, "spool")
        spool: Spool = self.successResultOf(open_spool(
            directory, 1 << 30, "always", runner=inline, clock=clock, segment_bytes=64 << 10))
        acked: dict[int, bytes] = {}
        failure = None
        for index in range(200):
            body = payload(f"r{index}", 20_000)
            appended = spool.append(body, 1)
            outcome: list[object] = []
            appended.addBoth(outcome.append)
            if isinstance(outcome[0], int):
                acked[outcome[0]] = body
            else:
                failure = outcome[0]
                break
        self.assertIsNotNone(failure, "the filesystem never filled up")
        assert failure is not None
        self.assertTrue(failure.check(SpoolUnavailableError))  # type: ignore[attr-defined]
        self.assertIn("No space left on device", failure.getErrorMessage())  # type: ignore[attr-defined]
        self.assertGreater(len(acked), 10)
        # Delivering half of it frees segments, and the spool takes lines again.
        records = self.successResultOf(spool.peek_batch(len(acked) // 2))
        for record in records:
            self.assertEqual(record.payload, acked.pop(record.record_id))
            spool.retire(record.record_id)
        again = payload("again", 20_000)
        acked[self.successResultOf(spool.append(again, 1))] = again
        self.successResultOf(spool.close())
        store, report = SegmentStore.open(directory, fsync=True)
        try:
            found = {}
            while batch := store.read(100, 64 << 20):
                found.update((r.record_id, r.payload) for r in batch)
        finally:
            store.close()
        self.assertEqual(found, acked)
        self.assertEqual((report.set_aside, report.torn_bytes), (0, 0))

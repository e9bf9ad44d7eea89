"""The spool as the reactor sees it: group commit, full, disk errors, close."""

from __future__ import annotations

import errno
import os

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bridge.errors import SpoolFullError, SpoolUnavailableError
from bridge.upstream.spool.lock import SpoolLockedError
from bridge.upstream.spool.record import HEADER_SIZE
from bridge.upstream.spool.runner import inline
from bridge.upstream.spool.spool import Spool, filesystem_bytes, open_spool, segment_size
from bridge.upstream.spool.store import DiskCalls, Record
from tests.spool_support import FlakyDisk, StepRunner, scratch


class SpoolTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = scratch(self)
        self.clock = Clock()
        self.clock.advance(1000)
        self.disk = FlakyDisk()

    def open(self, max_bytes: int = 1 << 20, fsync: str = "always", runner: object = inline,
             **options: object) -> Spool:
        opened = open_spool(self.directory, max_bytes, fsync, runner=runner,  # type: ignore[arg-type]
                            clock=self.clock, disk=DiskCalls(self.disk.write, self.disk.sync),
                            **options)  # type: ignore[arg-type]
        if isinstance(runner, StepRunner):
            runner.step()
        spool = self.successResultOf(opened)
        self.addCleanup(self._close, spool)
        return spool

    def _close(self, spool: Spool) -> None:
        closing = spool.close()
        runner = spool._runner
        if isinstance(runner, StepRunner):
            runner.drain()
        self.successResultOf(closing)


class AppendTests(SpoolTestCase):
    def test_append_fires_with_the_record_id_once_stored(self) -> None:
        spool = self.open()
        self.assertEqual(self.successResultOf(spool.append(b"a\r\n", 1)), 1)
        self.assertEqual(self.successResultOf(spool.append(b"b\r\nc\r\n", 2)), 2)
        self.assertEqual(self.disk.syncs, 2)
        stats = spool.stats()
        self.assertEqual((stats.records, stats.bytes, stats.queued),
                         (2, 2 * HEADER_SIZE + 9, 0))

    def test_appends_queued_before_the_writer_starts_share_one_write(self) -> None:
        runner = StepRunner()
        spool = self.open(runner=runner)
        appends = [spool.append(b"%d\r\n" % i, 1) for i in range(1, 5)]
        self.assertEqual(len(runner.jobs), 1)  # one run takes them all
        self.assertEqual(spool.stats().queued, 4)
        runner.step()
        self.assertEqual([self.successResultOf(d) for d in appends], [1, 2, 3, 4])
        self.assertEqual((self.disk.writes, self.disk.syncs), (1, 1))

    def test_appends_that_arrive_during_one_fsync_share_the_next(self) -> None:
        runner = StepRunner()
        spool = self.open(runner=runner)
        first = spool.append(b"1\r\n", 1)
        waiting: list[Deferred[int]] = []
        self.disk.during_sync = lambda: waiting.extend(
            spool.append(b"%d\r\n" % i, 1) for i in range(2, 6))
        runner.step()  # writes "1"; the others arrive during its fsync
        self.assertEqual(self.successResultOf(first), 1)
        for pending in waiting:
            self.assertNoResult(pending)
        self.assertEqual(spool.stats().queued, 4)
        self.assertEqual(len(runner.jobs), 1)  # handed over while the fsync ran
        runner.step()
        self.assertEqual([self.successResultOf(d) for d in waiting], [2, 3, 4, 5])
        self.assertEqual((self.disk.writes, self.disk.syncs), (2, 2))

    def test_the_next_run_starts_without_waiting_for_the_reactor(self) -> None:
        runner = StepRunner()
        spool = self.open(runner=runner)
        first = spool.append(b"1\r\n", 1)
        waiting: list[Deferred[int]] = []
        self.disk.during_sync = lambda: waiting.append(spool.append(b"2\r\n", 1))
        fire_first = runner.run()  # done on the writer thread, not yet seen by the reactor
        fire_second = runner.run()  # so the next run goes on at once
        self.assertNoResult(first)
        fire_second()
        self.assertEqual(self.successResultOf(waiting[0]), 2)
        fire_first()
        self.assertEqual(self.successResultOf(first), 1)
        self.assertEqual(runner.jobs, [])

    def test_fsync_never_acknowledges_after_the_write(self) -> None:
        spool = self.open(fsync="never")
        self.assertEqual(self.successResultOf(spool.append(b"a\r\n", 1)), 1)
        self.assertEqual((self.disk.writes, self.disk.syncs), (1, 0))

    def test_a_cancelled_append_is_still_stored(self) -> None:
        runner = StepRunner()
        spool = self.open(runner=runner)
        pending = spool.append(b"a\r\n", 1)
        pending.cancel()
        self.failureResultOf(pending)
        runner.step()
        reading = spool.peek_batch(10)
        runner.step()
        self.assertEqual([r.payload for r in self.successResultOf(reading)], [b"a\r\n"])

    def test_an_unknown_fsync_mode_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            open_spool(self.directory, 1 << 20, "sometimes", runner=inline, clock=self.clock)


class SegmentSizeTests(SynchronousTestCase):
    def test_a_sixteenth_of_the_limit_or_of_the_filesystem_whichever_is_smaller(self) -> None:
        self.assertEqual(segment_size(16 << 20), 1 << 20)
        self.assertEqual(segment_size(1 << 30), 64 << 20)
        # 1 GiB allowed on a 512 KiB filesystem: the filesystem decides.
        self.assertEqual(segment_size(1 << 30, 512 << 10), 64 << 10)
        self.assertEqual(segment_size(1 << 30, 256 << 20), 16 << 20)
        self.assertEqual(segment_size(16 << 20, 100 << 30), 1 << 20)

    def test_the_filesystem_size_is_that_of_the_directory(self) -> None:
        directory = scratch(self)
        os.makedirs(directory)
        info = os.statvfs(directory)
        self.assertEqual(filesystem_bytes(directory), info.f_blocks * info.f_frsize)
        self.assertIsNone(filesystem_bytes(os.path.join(directory, "missing")))


class LimitTests(SpoolTestCase):
    def test_a_full_spool_refuses_with_spool_full_and_stores_nothing(self) -> None:
        spool = self.open(max_bytes=10 * (HEADER_SIZE + 10), segment_bytes=3 * (HEADER_SIZE + 10))
        for i in range(10):
            self.successResultOf(spool.append(b"%08d\r\n" % i, 1))
        failure = self.failureResultOf(spool.append(b"x" * 8 + b"\r\n", 1), SpoolFullError)
        error = failure.value
        assert isinstance(error, SpoolFullError)
        self.assertEqual((error.status, error.code, error.retry_after()), (429, "spool_full", 5))
        self.assertEqual(spool.stats().records, 10)
        # Delivery frees whole segments, and then the spool takes lines again.
        reading = spool.peek_batch(10)
        for record in self.successResultOf(reading):
            spool.retire(record.record_id)
        self.assertEqual(spool.stats().records, 0)
        self.successResultOf(spool.append(b"y" * 8 + b"\r\n", 1))

    def test_queued_appends_count_against_the_limit(self) -> None:
        runner = StepRunner()
        spool = self.open(runner=runner, max_bytes=2 * (HEADER_SIZE + 3))
        first = spool.append(b"a\r\n", 1)
        second = spool.append(b"b\r\n", 1)
        self.failureResultOf(spool.append(b"c\r\n", 1), SpoolFullError)
        runner.drain()
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (1, 2))

    def test_a_disk_error_is_spool_unavailable_and_nothing_is_acknowledged(self) -> None:
        spool = self.open()
        self.successResultOf(spool.append(b"kept\r\n", 1))
        self.disk.failure = errno.ENOSPC
        failure = self.failureResultOf(spool.append(b"lost\r\n", 1), SpoolUnavailableError)
        error = failure.value
        assert isinstance(error, SpoolUnavailableError)
        self.assertEqual((error.status, error.code), (503, "spool_unavailable"))
        self.assertIn("No space left on device", error.message)
        self.disk.failure = errno.EROFS
        self.failureResultOf(spool.append(b"lost\r\n", 1), SpoolUnavailableError)
        self.disk.failure = None
        self.assertEqual(self.successResultOf(spool.append(b"again\r\n", 1)), 2)
        reading = spool.peek_batch(10)
        self.assertEqual([r.payload for r in self.successResultOf(reading)],
                         [b"kept\r\n", b"again\r\n"])
        self.assertEqual(self.flushLoggedErrors(), [])  # logged at error level, no traceback


class DeliveryTests(SpoolTestCase):
    def test_peek_retire_rewind_and_stats(self) -> None:
        spool = self.open()
        for i in range(4):
            self.successResultOf(spool.append(b"%d\r\n" % i, 1))
            self.clock.advance(1)
        self.assertEqual(spool.stats().oldest_age, 4.0)
        first = self.successResultOf(spool.peek_batch(2))
        self.assertEqual([r.record_id for r in first], [1, 2])
        self.assertEqual([r.record_id for r in self.successResultOf(spool.peek_batch(5))], [3, 4])
        self.assertEqual(self.successResultOf(spool.peek_batch(5)), [])
        spool.retire(1)
        self.assertEqual(spool.stats().oldest_age, 3.0)
        spool.rewind()  # the connection was lost: 2, 3, 4 go out again
        again = self.successResultOf(spool.peek_batch(10))
        self.assertEqual([r.record_id for r in again], [2, 3, 4])
        stats = spool.stats()
        self.assertEqual((stats.records, stats.retired, stats.redelivered, stats.set_aside),
                         (3, 1, 3, 0))

    def test_close_finishes_queued_work_and_releases_the_directory(self) -> None:
        runner = StepRunner()
        spool = self.open(runner=runner)
        pending = spool.append(b"a\r\n", 1)
        later = spool.append(b"b\r\n", 1)
        closing = spool.close()
        self.failureResultOf(spool.append(b"c\r\n", 1), SpoolUnavailableError)
        runner.drain()
        self.assertEqual((self.successResultOf(pending), self.successResultOf(later)), (1, 2))
        self.successResultOf(closing)
        self.successResultOf(spool.close())
        reopened = self.open()
        self.assertEqual(reopened.stats().records, 2)

    def test_a_second_spool_on_the_same_directory_is_refused(self) -> None:
        self.open()
        opened = open_spool(self.directory, 1 << 20, "always", runner=inline, clock=self.clock)
        self.failureResultOf(opened, SpoolLockedError)

    def test_an_unusable_directory_is_spool_unavailable(self) -> None:
        with open(self.directory, "w") as blocker:
            blocker.write("not a directory")
        opened = open_spool(self.directory, 1 << 20, "always", runner=inline, clock=self.clock)
        failure = self.failureResultOf(opened, SpoolUnavailableError)
        self.assertIn(self.directory, failure.getErrorMessage())

    def test_a_read_error_fails_the_read_only(self) -> None:
        spool = self.open()
        self.successResultOf(spool.append(b"a\r\n", 1))
        store = spool._store
        original = store.read

        def broken(max_records: int, max_bytes: int) -> list[object]:
            raise OSError(errno.EIO, "Input/output error")

        store.read = broken  # type: ignore[method-assign, assignment]
        self.failureResultOf(spool.peek_batch(1), SpoolUnavailableError)
        store.read = original  # type: ignore[method-assign]
        self.assertEqual(len(self.successResultOf(spool.peek_batch(1))), 1)


class ParkedReadTests(SpoolTestCase):
    """A read with wait=True that finds nothing waits for the next append."""

    def payloads(self, records: object) -> list[bytes]:
        return [record.payload for record in records]  # type: ignore[attr-defined]

    def test_an_empty_read_is_done_again_with_the_next_append(self) -> None:
        runner = StepRunner()
        spool = self.open(runner=runner)
        read = spool.peek_batch(10, wait=True)
        runner.step()
        self.assertNoResult(read)
        self.assertEqual(runner.jobs, [])
        spool.append(b"a\r\n", 1)
        runner.step()  # one job: the append, then the read
        self.assertEqual(self.payloads(self.successResultOf(read)), [b"a\r\n"])
        self.assertEqual(runner.jobs, [])

    def test_appends_queued_behind_a_read_that_found_nothing_are_not_missed(self) -> None:
        runner = StepRunner()
        spool = self.open(runner=runner)
        read = spool.peek_batch(10, wait=True)
        self.append_during_the_next_read(spool, b"b\r\n")
        runner.step()  # the read finds nothing; "b" is queued meanwhile
        self.assertNoResult(read)
        runner.drain()  # "b", and the read again with it
        self.assertEqual(self.payloads(self.successResultOf(read)), [b"b\r\n"])

    def test_appends_stored_by_the_next_run_before_the_read_parks_are_not_missed(self) -> None:
        runner = StepRunner()
        spool = self.open(runner=runner)
        read = spool.peek_batch(10, wait=True)
        self.append_during_the_next_read(spool, b"b\r\n")
        fire_read = runner.run()  # nothing found; "b" queued for the next run
        fire_append = runner.run()  # which stores it before the reactor sees the read
        fire_read()  # the read parks...
        self.assertNoResult(read)
        fire_append()  # ...and is done again once "b" is stored
        runner.drain()
        self.assertEqual(self.payloads(self.successResultOf(read)), [b"b\r\n"])

    def append_during_the_next_read(self, spool: Spool, payload: bytes) -> None:
        store = spool._store
        read = store.read

        def reading(most: int, size: int) -> list[Record]:
            found = read(most, size)
            store.read = read  # type: ignore[method-assign]
            spool.append(payload, 1)
            return found

        store.read = reading  # type: ignore[method-assign]

    def test_release_ends_the_wait_with_nothing(self) -> None:
        runner = StepRunner()
        spool = self.open(runner=runner)
        read = spool.peek_batch(10, wait=True)
        runner.step()
        spool.release_reads()
        self.assertEqual(self.successResultOf(read), [])

    def test_release_ends_a_wait_that_is_being_read_or_queued(self) -> None:
        runner = StepRunner()
        spool = self.open(runner=runner)
        running = spool.peek_batch(10, wait=True)
        queued: list[Deferred[list[Record]]] = []
        store = spool._store
        read = store.read

        def reading(most: int, size: int) -> list[Record]:
            store.read = read  # type: ignore[method-assign]
            queued.append(spool.peek_batch(10, wait=True))  # for the next run
            spool.release_reads()  # while the first is being read
            return read(most, size)

        store.read = reading  # type: ignore[method-assign]
        runner.step()
        self.assertEqual(self.successResultOf(running), [])
        runner.drain()
        self.assertEqual(self.successResultOf(queued[0]), [])

    def test_without_wait_an_empty_read_answers_at_once(self) -> None:
        spool = self.open()
        self.assertEqual(self.successResultOf(spool.peek_batch(10)), [])

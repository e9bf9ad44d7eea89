"""The spool's blocking engine: order, retire, segments, damage, the lock, disk errors."""

from __future__ import annotations

import errno
import json
import os
import zlib
from typing import Sequence
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from bridge.upstream.spool import state as retire_state
from bridge.upstream.spool import store as store_module
from bridge.upstream.spool.lock import SpoolLockedError
from bridge.upstream.spool.record import HEADER_SIZE, checksum, encode
from bridge.upstream.spool.store import DAMAGED, DiskCalls, Entry, SegmentStore
from tests.spool_support import FlakyDisk, append_bytes, flip, scratch, segments, spares


def entry(data: bytes, lines: int, accepted_at: float) -> Entry:
    return data, lines, accepted_at, checksum(data)


def payload(index: int, size: int = 40) -> bytes:
    line = b"line %d " % index
    return (line * (size // len(line) + 1))[: size - 2] + b"\r\n"


class StoreTestCase(SynchronousTestCase):
    #: Keep just-appended records in memory for the next reads (the default);
    #: the *FromDisk variants read everything back from the segment files.
    fresh = True

    def setUp(self) -> None:
        self.directory = scratch(self)
        self.stores: list[SegmentStore] = []
        self.addCleanup(self._close_all)  # before the directory goes

    def _close_all(self) -> None:
        for store in self.stores:
            if store._segments:
                store.close()

    def open(self, **options: object) -> SegmentStore:
        options.setdefault("fsync", True)
        store, self.report = SegmentStore.open(self.directory, **options)  # type: ignore[arg-type]
        if not self.fresh:
            store.fresh_bytes = 0
        self.stores.append(store)
        return store

    def reopen(self, store: SegmentStore, **options: object) -> SegmentStore:
        store.close()
        return self.open(**options)

    def fill(self, store: SegmentStore, count: int, size: int = 40, at: float = 100.0) -> list[int]:
        return store.append([entry(payload(i, size), 1, at + i) for i in range(count)])

    def read_all(self, store: SegmentStore) -> list[int]:
        ids: list[int] = []
        while batch := store.read(1000, 1 << 30):
            ids.extend(record.record_id for record in batch)
        return ids


class OrderTests(StoreTestCase):
    def test_records_come_back_in_order_with_what_was_stored(self) -> None:
        store = self.open()
        self.assertEqual(store.append([entry(b"a\r\n", 1, 10.0), entry(b"b\r\nc\r\n", 2, 11.0)]),
                         [1, 2])
        self.assertEqual(store.append([entry(b"d\r\n", 1, 12.0)]), [3])
        records = store.read(10, 1 << 20)
        self.assertEqual([(r.record_id, r.payload, r.lines, r.accepted_at) for r in records],
                         [(1, b"a\r\n", 1, 10.0), (2, b"b\r\nc\r\n", 2, 11.0),
                          (3, b"d\r\n", 1, 12.0)])
        self.assertEqual(store.read(10, 1 << 20), [])

    def test_reads_continue_where_the_last_stopped_and_respect_limits(self) -> None:
        store = self.open()
        self.fill(store, 10, size=100)
        self.assertEqual([r.record_id for r in store.read(3, 1 << 20)], [1, 2, 3])
        self.assertEqual([r.record_id for r in store.read(100, 250)], [4, 5, 6])
        self.assertEqual(self.read_all(store), [7, 8, 9, 10])
        self.fill(store, 2)
        self.assertEqual(self.read_all(store), [11, 12])

    def test_records_survive_a_reopen_in_order(self) -> None:
        store = self.open()
        self.fill(store, 5)
        store = self.reopen(store)
        self.assertEqual(self.read_all(store), [1, 2, 3, 4, 5])
        self.assertEqual(store.append([entry(b"x\r\n", 1, 0.0)]), [6])

    def test_stats_count_records_bytes_and_the_oldest(self) -> None:
        store = self.open()
        self.assertEqual(store.stats().records, 0)
        self.assertIsNone(store.stats().oldest_at)
        self.fill(store, 3, at=50.0)
        stats = store.stats()
        self.assertEqual((stats.records, stats.bytes, stats.oldest_at),
                         (3, 3 * (HEADER_SIZE + 40), 50.0))
        store.read(2, 1 << 20)
        store.retire([1])
        self.assertEqual(store.stats().oldest_at, 51.0)
        store.retire([2])
        self.assertEqual(store.stats().oldest_at, 52.0)  # not handed out yet: at the cursor
        self.assertEqual(store.stats().retired, 2)


class RetireTests(StoreTestCase):
    def test_retired_records_are_not_handed_out_again(self) -> None:
        store = self.open()
        self.fill(store, 4)
        store.read(4, 1 << 20)
        store.retire([1, 3])
        store.rewind()
        self.assertEqual(self.read_all(store), [2, 4])
        self.assertEqual(store.stats().redelivered, 2)
        store = self.reopen(store)
        self.assertEqual(self.read_all(store), [2, 4])
        self.assertEqual(store.stats().records, 2)

    def test_out_of_order_retires_move_the_watermark_when_the_gap_closes(self) -> None:
        store = self.open()
        self.fill(store, 5)
        store.retire([2, 3])
        self.assertEqual(retire_state.StateFile(self.directory).load().retired_below, 1)
        store.retire([1])
        saved = retire_state.StateFile(self.directory).load()
        self.assertEqual((saved.retired_below, saved.retired), (4, set()))

    def test_full_segments_are_deleted_once_retired(self) -> None:
        store = self.open(segment_bytes=1000)
        for _ in range(6):
            self.fill(store, 10, size=100)  # 1360 bytes a batch: a segment each
        self.assertEqual(len(segments(self.directory)), 6)
        before = store.stats().bytes
        ids = [r.record_id for r in store.read(35, 1 << 20)]
        store.retire(ids)
        self.assertEqual(len(segments(self.directory)), 3)
        self.assertEqual(store.stats().bytes, before - 3 * 1360)
        self.assertEqual(self.read_all(store), list(range(36, 61)))
        store.retire(list(range(36, 61)))
        # Everything delivered: a fresh segment is started so the full one can go.
        self.assertEqual(store.stats().records, 0)
        self.assertEqual(store.stats().bytes, 0)
        self.assertEqual(store.append([entry(b"z\r\n", 1, 0.0)]), [61])
        self.assertEqual(len(spares(self.directory)), 1)  # one kept for reuse, the rest deleted



    def test_records_handed_out_before_a_restart_count_as_redelivered(self) -> None:
        store = self.open()
        self.fill(store, 5)
        store.read(3, 1 << 20)
        store.retire([1])
        store = self.reopen(store)
        self.assertEqual(self.read_all(store), [2, 3, 4, 5])
        self.assertEqual(store.stats().redelivered, 2)

    def test_a_torn_retire_state_falls_back_to_the_other_slot(self) -> None:
        store = self.open()
        self.fill(store, 3)
        store.retire([1])
        store.retire([2])
        store.close()
        slots = [os.path.join(self.directory, name) for name in retire_state.NAMES]

        def sequence(path: str) -> int:
            with open(path, "rb") as slot:
                return int(json.loads(slot.read().rpartition(b"\n")[0])["sequence"])

        os.truncate(max(slots, key=sequence), 10)  # torn by a crash
        store = self.open()
        self.assertEqual(self.read_all(store), [3])  # the other slot, one save older

    def test_the_retire_state_is_json_with_a_checksum(self) -> None:
        store = self.open()
        self.fill(store, 5)
        store.read(5, 1 << 20)
        store.retire([1, 3, 4])
        slots = []
        for name in retire_state.NAMES:
            with open(os.path.join(self.directory, name), "rb") as slot:
                body, _, check = slot.read().rpartition(b"\n")
            self.assertEqual(int(check), zlib.crc32(body))
            slots.append(json.loads(body))
        newest = max(slots, key=lambda document: int(document["sequence"]))
        self.assertEqual(newest, {"sequence": newest["sequence"], "retired_below": 2,
                                  "retired": [3, 4], "handed_out": 5})

    def test_an_unreadable_retire_state_means_delivering_everything_again(self) -> None:
        store = self.open()
        self.fill(store, 3)
        store.retire([1, 2])
        store.close()
        for name in retire_state.NAMES:
            with open(os.path.join(self.directory, name), "wb") as state:
                state.write(b'{"retired_below": 9')
        store = self.open()
        self.assertEqual(self.read_all(store), [1, 2, 3])


class DamageTests(StoreTestCase):
    def test_a_damaged_header_at_the_end_of_a_sealed_segment_is_set_aside(self) -> None:
        store = self.open(segment_bytes=3 * RECORD)
        self.fill(store, 3)
        self.fill(store, 2)  # a second segment
        flip(segments(self.directory)[0], 2 * RECORD + 5)  # record 3's header
        store = self.reopen(store)
        self.assertEqual((self.report.set_aside, self.report.damaged_bytes), (1, RECORD))
        self.assertTrue(os.listdir(os.path.join(self.directory, DAMAGED)))
        self.assertEqual(self.read_all(store), [1, 2, 4, 5])

    def test_a_torn_last_write_is_cut_and_nothing_is_set_aside(self) -> None:
        store = self.open()
        self.fill(store, 3)
        store.close()
        whole = encode(4, 1, 0.0, b"torn away\r\n") + b"torn away\r\n"
        append_bytes(segments(self.directory)[-1], whole[:-5])
        store = self.open()
        self.assertEqual(self.report.torn_bytes, len(whole) - 5)
        self.assertEqual(self.report.set_aside, 0)
        self.assertEqual(store.append([entry(b"next\r\n", 1, 0.0)]), [4])
        self.assertEqual(self.read_all(store), [1, 2, 3, 4])
        self.assertEqual(store.read(1, 1 << 20), [])

    def test_a_flipped_payload_byte_sets_that_record_aside(self) -> None:
        store = self.open()
        self.fill(store, 5)
        store.close()
        path = segments(self.directory)[0]
        flip(path, 2 * (HEADER_SIZE + 40) + HEADER_SIZE + 7)  # inside record 3's payload
        store = self.open()
        self.assertEqual((self.report.set_aside, self.report.damaged_bytes), (1, HEADER_SIZE + 40))
        self.assertEqual(self.read_all(store), [1, 2, 4, 5])
        self.assertEqual(store.stats().set_aside, 1)
        self.assertEqual(store.stats().records, 4)
        copies = os.listdir(os.path.join(self.directory, DAMAGED))
        self.assertEqual(len(copies), 1)
        # Set aside once: a restart does not count it again.
        store = self.reopen(store)
        self.assertEqual(self.read_all(store), [1, 2, 4, 5])
        self.assertEqual(store.stats().set_aside, 0)

    def test_a_flipped_header_byte_is_skipped_and_counted_by_the_id_gap(self) -> None:
        store = self.open()
        self.fill(store, 5)
        store.close()
        flip(segments(self.directory)[0], (HEADER_SIZE + 40) + 9)  # record 2's id
        store = self.open()
        self.assertEqual(self.report.set_aside, 1)
        self.assertEqual(self.read_all(store), [1, 3, 4, 5])

    def test_damage_in_the_last_record_is_not_mistaken_for_a_torn_write(self) -> None:
        store = self.open()
        self.fill(store, 3)
        store.close()
        flip(segments(self.directory)[0], 3 * (HEADER_SIZE + 40) - 3)
        store = self.open()
        self.assertEqual((self.report.set_aside, self.report.torn_bytes), (1, 0))
        self.assertEqual(self.read_all(store), [1, 2])
        self.assertEqual(store.append([entry(b"n\r\n", 1, 0.0)]), [4])
        self.assertEqual(self.read_all(store), [4])

    def test_a_truncated_sealed_segment_loses_its_tail_counted(self) -> None:
        store = self.open(segment_bytes=500)
        self.fill(store, 10)  # 760 bytes: the first segment
        self.fill(store, 2)  # the second
        store.close()
        first = segments(self.directory)[0]
        os.truncate(first, 4 * (HEADER_SIZE + 40) + 10)
        store = self.open(segment_bytes=500)
        self.assertEqual(self.report.set_aside, 6)  # 5..10: the torn 5th and 6 more gone
        self.assertEqual(self.read_all(store), [1, 2, 3, 4, 11, 12])

    def test_damage_that_appears_while_running_is_set_aside_when_read(self) -> None:
        self.fresh = False  # delivery behind: the records are read from disk
        store = self.open()
        self.fill(store, 4)
        flip(segments(self.directory)[0], HEADER_SIZE + 40 + HEADER_SIZE + 1)
        self.assertEqual(self.read_all(store), [1, 3, 4])
        self.assertEqual(store.stats().set_aside, 1)
        self.assertEqual(store.stats().records, 3)


RECORD = HEADER_SIZE + 40  # a record of payload(i)


class ReuseTests(StoreTestCase):
    """A spent segment's file is written over as a later segment; its older
    records past the new ones are known by their ids on open."""

    def reused(self, **options: object) -> SegmentStore:
        """A store whose active segment (first id 7) is the file of the first
        (records 1-3), holding nothing yet."""
        store = self.open(segment_bytes=3 * RECORD, **options)
        self.fill(store, 3)  # segment 1, full
        store.retire([r.record_id for r in store.read(10, 1 << 20)])  # spent: kept as a spare
        self.assertEqual(len(spares(self.directory)), 1)
        self.first_file = os.stat(spares(self.directory)[0]).st_ino
        self.fill(store, 3)  # segment 4
        store.retire([r.record_id for r in store.read(10, 1 << 20)])  # segment 7 from the spare
        self.assertEqual([os.path.basename(p) for p in segments(self.directory)],
                         [f"{7:020d}.seg"])
        self.assertEqual(os.stat(segments(self.directory)[0]).st_ino, self.first_file)
        return store

    def test_a_spent_segment_is_written_over_as_the_next(self) -> None:
        store = self.reused()
        self.assertEqual(os.path.getsize(segments(self.directory)[0]), 3 * RECORD)
        self.fill(store, 2, at=200.0)
        self.assertEqual(self.read_all(store), [7, 8])
        self.assertEqual(os.stat(segments(self.directory)[0]).st_ino, self.first_file)

    def test_older_records_past_the_new_ones_are_cut_off_on_open(self) -> None:
        store = self.reused()
        store.append([entry(payload(7), 1, 7.0)])
        store = self.reopen(store)
        self.assertEqual((self.report.set_aside, self.report.damaged_bytes,
                          self.report.torn_bytes), (0, 0, 0))
        self.assertEqual([(r.record_id, r.payload) for r in store.read(10, 1 << 20)],
                         [(7, payload(7))])
        self.assertEqual(os.path.getsize(segments(self.directory)[0]), RECORD)
        self.assertEqual(store.append([entry(b"next\r\n", 1, 0.0)]), [8])

    def test_older_bytes_cut_mid_record_are_no_damage(self) -> None:
        store = self.reused()
        store.append([entry(payload(7, size=50), 1, 7.0)])  # ends inside old record 2
        store = self.reopen(store)
        self.assertEqual((self.report.set_aside, self.report.damaged_bytes,
                          self.report.torn_bytes), (0, 0, 0))
        self.assertEqual(self.read_all(store), [7])
        self.assertFalse(os.path.exists(os.path.join(self.directory, DAMAGED)))

    def test_a_torn_write_over_older_records_is_cut_off_and_reported(self) -> None:
        store = self.reused()
        store.append([entry(payload(7), 1, 7.0)])
        torn = encode(8, 1, 8.0, payload(8)) + payload(8)[:10]  # the rest never made it
        with open(segments(self.directory)[0], "r+b") as segment:
            segment.seek(RECORD)
            segment.write(torn)
        store = self.reopen(store)
        self.assertEqual(self.report.torn_bytes, RECORD)  # up to the next older record
        self.assertEqual((self.report.set_aside, self.report.damaged_bytes), (0, 0))
        self.assertEqual(self.read_all(store), [7])
        self.assertEqual(store.append([entry(b"again\r\n", 1, 0.0)]), [8])

    def test_damage_among_the_new_records_is_still_set_aside(self) -> None:
        store = self.reused()
        self.fill(store, 2, at=200.0)  # 7 and 8, then older record 3
        flip(segments(self.directory)[0], HEADER_SIZE + 5)  # record 7's payload
        store = self.reopen(store)
        self.assertEqual((self.report.set_aside, self.report.torn_bytes), (1, 0))
        self.assertEqual(self.read_all(store), [8])
        self.assertEqual(os.path.getsize(segments(self.directory)[0]), 2 * RECORD)

    def test_a_torn_write_ending_inside_an_older_record_is_cut_off_once(self) -> None:
        store = self.reused()
        store.append([entry(payload(7), 1, 7.0)])
        longer = payload(8, 50)  # its claimed extent ends inside older record 3
        with open(segments(self.directory)[0], "r+b") as segment:
            segment.seek(RECORD)
            segment.write(encode(8, 1, 8.0, longer) + longer[:10])
        store = self.reopen(store)
        self.assertEqual((self.report.set_aside, self.report.damaged_bytes), (0, 0))
        self.assertEqual(self.report.torn_bytes, 2 * RECORD)  # up to the older record 3
        self.assertFalse(os.path.exists(os.path.join(self.directory, DAMAGED)))
        self.assertEqual(store.append([entry(b"after\r\n", 1, 0.0)]), [8])
        store = self.reopen(store)
        self.assertEqual((self.report.set_aside, self.report.damaged_bytes,
                          self.report.torn_bytes), (0, 0, 0))
        self.assertEqual(self.read_all(store), [7, 8])

    def test_a_spare_that_cannot_be_opened_is_left_as_it_was(self) -> None:
        store = self.open(segment_bytes=3 * RECORD)
        self.fill(store, 3)
        store.retire([r.record_id for r in store.read(10, 1 << 20)])  # a spare, active 4
        self.fill(store, 3)  # 4-6: full
        spare = spares(self.directory)[0]
        real_open = os.open
        failed: list[str] = []

        def open_once_failing(path: str, flags: int, mode: int = 0o777) -> int:
            if path == spare and not failed:
                failed.append(path)
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            return real_open(path, flags, mode)

        with mock.patch.object(store_module.os, "open", open_once_failing):
            self.assertEqual(store.append([entry(b"x\r\n", 1, 0.0)]), [7])  # a new file
        self.assertEqual(failed, [spare])
        self.assertEqual(spares(self.directory), [spare])
        self.assertEqual(store.append([entry(b"y\r\n", 1, 0.0)]), [8])
        store.retire([r.record_id for r in store.read(10, 1 << 20)])
        self.assertEqual(store.stats().records, 0)

    def test_a_refused_write_never_comes_back_through_a_spare(self) -> None:
        store = self.open(segment_bytes=10 * RECORD)
        self.fill(store, 1)

        def failing(*args: object) -> None:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        store._disk = DiskCalls(sync=failing)  # the bytes land, the fsync fails
        with mock.patch.object(store_module.os, "ftruncate", failing):  # and are not cut
            with self.assertRaises(OSError):
                store.append([entry(b"REFUSED %d\r\n" % i, 1, 0.0) for i in range(10)])
        store._disk = DiskCalls()
        store.retire([r.record_id for r in store.read(10, 1 << 20)])  # segment 1 spent
        self.fill(store, 2, size=400)  # 2-3, segment 2
        store.retire([r.record_id for r in store.read(10, 1 << 20)])
        store.append([entry(b"C" * 148 + b"\r\n", 1, 0.0)])  # 4, in segment 1's old file
        store = self.reopen(store)
        self.assertEqual([(r.record_id, r.payload[:1]) for r in store.read(100, 1 << 20)],
                         [(4, b"C")])

    def test_only_one_spare_is_kept(self) -> None:
        store = self.open(segment_bytes=RECORD)
        for _ in range(4):
            self.fill(store, 1)  # a segment each
        store.retire([r.record_id for r in store.read(10, 1 << 20)])
        self.assertEqual(len(spares(self.directory)), 1)
        self.assertEqual(len(segments(self.directory)), 1)
        with open(os.path.join(self.directory, f"{99:020d}.spare"), "wb"):
            pass  # e.g. left by a crash
        self.reopen(store)
        self.assertEqual(len(spares(self.directory)), 1)


class OrderFromDiskTests(OrderTests):
    fresh = False


class RetireFromDiskTests(RetireTests):
    fresh = False


class FreshTests(StoreTestCase):
    """Records appended while delivery has caught up are handed out from
    memory: what was acknowledged, without reading it back."""

    def test_fresh_records_come_from_memory_and_again_from_disk_after_a_rewind(self) -> None:
        store = self.open()
        self.fill(store, 3)
        flip(segments(self.directory)[0], HEADER_SIZE + 40 + HEADER_SIZE + 1)
        records = store.read(10, 1 << 20)
        self.assertEqual([(r.record_id, r.payload) for r in records],
                         [(i + 1, payload(i)) for i in range(3)])
        self.assertEqual(store.stats().set_aside, 0)
        store.rewind()  # handed out again: now from the file, damage and all
        self.assertEqual(self.read_all(store), [1, 3])
        self.assertEqual(store.stats().set_aside, 1)

    def test_a_read_from_disk_continues_into_fresh_records(self) -> None:
        store = self.open()
        store.fresh_bytes = 0
        self.fill(store, 2)
        self.assertEqual(self.read_all(store), [1, 2])
        store.fresh_bytes = SegmentStore.fresh_bytes
        store.append([entry(payload(2), 1, 102.0), entry(payload(3), 1, 103.0)])
        flip(segments(self.directory)[0], 3 * (HEADER_SIZE + 40) + 5)  # record 4, on disk
        store.rewind()
        records = store.read(10, 1 << 20)
        self.assertEqual([(r.record_id, r.payload) for r in records],
                         [(i + 1, payload(i)) for i in range(4)])
        self.assertEqual(store.stats().redelivered, 2)
        self.assertEqual(store.stats().set_aside, 0)

    def test_delivery_falling_behind_drops_fresh_records_and_reads_the_disk(self) -> None:
        store = self.open()
        store.fresh_bytes = 3 * (HEADER_SIZE + 40)
        self.fill(store, 3)  # at the limit: kept
        self.assertEqual(self.read_all(store), [1, 2, 3])
        self.fill(store, 4)  # past it: forgotten
        flip(segments(self.directory)[0], 4 * (HEADER_SIZE + 40) + 5)  # record 5
        self.assertEqual(self.read_all(store), [4, 6, 7])
        self.assertEqual(store.stats().set_aside, 1)
        self.fill(store, 1)  # still behind when it came: read from disk, then caught up
        self.assertEqual(self.read_all(store), [8])

    def test_fresh_records_of_a_new_segment_follow_the_old_one(self) -> None:
        store = self.open(segment_bytes=2 * (HEADER_SIZE + 40))
        self.fill(store, 2)
        self.assertEqual(self.read_all(store), [1, 2])
        self.fill(store, 3)  # starts a new segment, cursor at the old one's end
        self.assertEqual(len(segments(self.directory)), 2)
        flip(segments(self.directory)[1], 5)
        self.assertEqual(self.read_all(store), [3, 4, 5])
        store.retire([1, 2, 3, 4, 5])
        self.assertEqual(store.stats().records, 0)

    def test_the_oldest_record_is_known_without_reading_fresh_records_back(self) -> None:
        store = self.open()
        self.fill(store, 2, at=70.0)
        os.truncate(segments(self.directory)[0], 0)  # the file cannot tell any more
        self.assertEqual(store.stats().oldest_at, 70.0)


class LockTests(StoreTestCase):
    def test_a_second_opener_is_refused_with_the_holders_pid(self) -> None:
        store = self.open()
        with self.assertRaises(SpoolLockedError) as raised:
            SegmentStore.open(self.directory, fsync=True)
        self.assertIn(f"pid {os.getpid()}", str(raised.exception))
        self.assertIn(self.directory, str(raised.exception))
        store.close()
        self.open()  # released on close

    def test_an_unusable_directory_is_an_os_error(self) -> None:
        with open(self.directory, "w") as blocker:
            blocker.write("a file, not a directory")
        with self.assertRaises(OSError):
            SegmentStore.open(self.directory, fsync=True)


class WriteTests(StoreTestCase):
    def test_short_writes_go_on_where_they_stopped(self) -> None:
        calls: list[int] = []

        def dribble(fd: int, buffers: Sequence[bytes | memoryview], offset: int) -> int:
            calls.append(len(buffers))
            return os.pwrite(fd, b"".join(buffers)[:7], offset)  # 7 bytes at most

        store = self.open(disk=DiskCalls(write=dribble))
        self.fill(store, 3)
        self.assertEqual(len(calls), (3 * RECORD + 6) // 7)
        store = self.reopen(store)
        self.assertEqual([(r.record_id, r.payload) for r in store.read(10, 1 << 20)],
                         [(i + 1, payload(i)) for i in range(3)])

    def test_a_batch_of_more_buffers_than_one_call_takes_is_written_whole(self) -> None:
        store = self.open()
        self.fill(store, 700, size=4)  # 1400 buffers
        store = self.reopen(store)
        self.assertEqual(self.read_all(store), list(range(1, 701)))


class DiskErrorTests(StoreTestCase):
    def test_a_failed_write_raises_and_leaves_no_trace(self) -> None:
        disk = FlakyDisk()
        store = self.open(disk=DiskCalls(disk.write, disk.sync))
        self.fill(store, 2)
        disk.failure = errno.ENOSPC
        disk.partial = True
        with self.assertRaises(OSError) as raised:
            self.fill(store, 3)
        self.assertEqual(raised.exception.errno, errno.ENOSPC)
        disk.failure = None
        self.assertEqual(store.append([entry(b"after\r\n", 1, 0.0)]), [3])
        self.assertEqual(self.read_all(store), [1, 2, 3])
        store = self.reopen(store)
        self.assertEqual((self.report.set_aside, self.report.torn_bytes), (0, 0))
        self.assertEqual(self.read_all(store), [1, 2, 3])

    def test_after_a_refused_write_a_delivered_segment_goes_before_the_next_write(
            self) -> None:
        disk = FlakyDisk()
        store = self.open(segment_bytes=1 << 20, disk=DiskCalls(disk.write, disk.sync))
        self.fill(store, 10, size=100)
        store.retire(self.read_all(store))
        # Delivered, but far too small to be worth a new file: it stays...
        self.assertEqual((len(segments(self.directory)), store.stats().bytes), (1, 1360))
        disk.failure = errno.ENOSPC  # ...until the disk is full
        with self.assertRaises(OSError):
            self.fill(store, 1)
        disk.failure = None
        self.assertEqual(store.append([entry(b"after\r\n", 1, 0.0)]), [11])
        self.assertEqual(segments(self.directory),
                         [os.path.join(self.directory, f"{11:020d}.seg")])
        self.assertEqual(store.stats().bytes, HEADER_SIZE + 7)

    def test_after_a_refused_write_delivering_everything_frees_the_segment(self) -> None:
        disk = FlakyDisk()
        store = self.open(segment_bytes=1 << 20, disk=DiskCalls(disk.write, disk.sync))
        self.fill(store, 10, size=100)
        disk.failure = errno.ENOSPC
        with self.assertRaises(OSError):
            self.fill(store, 1)
        disk.failure = None
        store.retire(self.read_all(store))
        self.assertEqual(segments(self.directory),
                         [os.path.join(self.directory, f"{11:020d}.seg")])
        self.assertEqual((store.stats().bytes, store.stats().records), (0, 0))
        self.assertEqual(self.fill(store, 1), [11])

    def test_a_shorter_retire_state_written_over_a_longer_one_is_cut_to_length(self) -> None:
        store = self.open()
        self.fill(store, 300)
        store.retire(list(range(2, 301, 2)))  # out of order: a long list
        store.retire([1])  # still long, in the other slot
        slots = [os.path.join(self.directory, name) for name in retire_state.NAMES]
        self.assertGreater(min(os.path.getsize(path) for path in slots), 500)
        store.retire(list(range(3, 301, 2)))  # everything: a short list over a long one
        self.assertLess(min(os.path.getsize(path) for path in slots), 100)
        state = retire_state.StateFile(self.directory).load()
        self.assertEqual((state.retired_below, state.retired), (301, set()))

    def test_a_failed_fsync_is_a_failed_append(self) -> None:
        disk = FlakyDisk()
        store = self.open(disk=DiskCalls(disk.write, disk.sync))
        disk.failure = errno.EIO
        with self.assertRaises(OSError):
            self.fill(store, 1)
        disk.failure = None
        self.assertEqual(self.fill(store, 1), [1])
        self.assertEqual(self.read_all(store), [1])

    def test_fsync_never_does_not_sync(self) -> None:
        disk = FlakyDisk()
        store = self.open(fsync=False, disk=DiskCalls(disk.write, disk.sync))
        self.fill(store, 3)
        self.assertEqual((disk.writes, disk.syncs), (1, 0))

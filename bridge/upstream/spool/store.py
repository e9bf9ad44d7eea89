"""The spool's engine: append-only segment files of checksummed records.

Every method blocks on the disk and is meant for one writer thread
(:mod:`bridge.upstream.spool.spool` sees to that); nothing here is shared
with the reactor thread except the values returned.

Files in the spool directory:

* ``<first id, 20 digits>.seg``: records in id order; the last one is
  appended to, a new one is started once it holds ``segment_bytes``; a
  segment is spent when every record in it is retired.
* ``<first id>.spare``: one spent segment kept to be written over as the
  next segment.  Writing over blocks the file already has needs no journal
  commit, so an fdatasync costs about half as much (measured: 0.59 ms instead
  of 1.16 ms for 495 kB here), and no large file is deleted in steady state
  (14-50 ms of ext4's time for 16 MiB).  A reused file holds older records
  past the new ones: the scan on open knows them by their ids, lower than
  the segment's first, and cuts them off.  Further spent segments are deleted.
* ``retired.0``, ``retired.1``: see :mod:`.state`.  ``lock``: see :mod:`.lock`.
* ``damaged/``: copies of damaged stretches found in segments, kept for a
  person to look at; the segments themselves are only ever cut at a torn end.

Record ids are dense (each one more than the last), so ids that vanished
(a truncated segment, a damaged header) are found as gaps and counted.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from bridge.upstream.spool import state as retire_state
from bridge.upstream.spool.lock import DirectoryLock, claim
from bridge.upstream.spool.record import HEADER_SIZE, encode
from bridge.upstream.spool.walk import Damaged, Intact, walk

IOV_MAX = 1024  # buffers one pwritev takes (Linux)
SUFFIX = ".seg"
SPARE = ".spare"
#: Spent segments kept for reuse (disk space held beyond the records).
SPARES = 1
DAMAGED = "damaged"
READ_WINDOW = 256 * 1024
#: Bytes of just-appended records kept in memory for delivery while it has
#: caught up (see SegmentStore._fresh); past this it reads them from disk.
#: Two of delivery's reads: more only held memory while delivery was behind
#: (1 MiB made the 1 GB spool_memory peak 64.0 MB instead of 62.7).
FRESH_BYTES = 512 << 10


@dataclass(frozen=True)
class DiskCalls:
    """The calls that put a batch on disk and delete spent segments; tests
    swap them to fail or stall, the spool deletes on a thread of its own."""

    write: Callable[[int, Sequence[bytes | memoryview], int], int] = os.pwritev  # at offset
    sync: Callable[[int], None] = os.fdatasync
    remove: Callable[[str], None] = os.unlink


#: What :meth:`SegmentStore.append` takes per record: the payload, its line
#: count, when it was accepted, and its :func:`.record.checksum`.
Entry = tuple[bytes, int, float, int]


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled /send request: its framed lines and how many there are."""

    record_id: int
    payload: bytes
    lines: int
    accepted_at: float


@dataclass(frozen=True, slots=True)
class StoreStats:
    records: int  # not yet retired
    bytes: int  # on disk, segments only: what max_bytes limits
    oldest_at: float | None  # acceptance time of the oldest record not retired
    retired: int  # since open
    redelivered: int  # handed out again (after a restart or a rewind)
    set_aside: int  # damaged records found since open
    next_id: int


@dataclass(frozen=True, slots=True)
class OpenReport:
    """What the scan on open found, for the one log line about it."""

    records: int
    segments: int
    set_aside: int
    damaged_bytes: int
    torn_bytes: int
    damaged_dir: str


class _Segment:
    __slots__ = ("damaged", "fd", "first_id", "path", "size")

    def __init__(self, directory: str, first_id: int, create: bool,
                 spare: str | None = None) -> None:
        """Open segment ``first_id``; ``create`` it, from the ``spare`` file
        when given (whose older bytes it then writes over)."""
        self.first_id = first_id
        self.path = os.path.join(directory, f"{first_id:020d}{SUFFIX}")
        if spare is not None:
            # Opened before it is renamed: a failed open leaves the spare as it was.
            self.fd = os.open(spare, os.O_RDWR)
            try:
                os.rename(spare, self.path)
            except OSError:
                os.close(self.fd)
                raise
        else:
            flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
            self.fd = os.open(self.path, flags, 0o600)
        #: Where its records end (a reused file goes on past it).
        self.size = 0 if create else os.fstat(self.fd).st_size
        self.damaged: set[int] = set()  # offsets of damaged stretches already counted

    def close(self) -> None:
        os.close(self.fd)


class SegmentStore:
    """Append, read in order, retire; blocking, for one thread."""

    fresh_bytes = FRESH_BYTES

    def __init__(self, directory: str, lock: DirectoryLock, fsync: bool,
                 segment_bytes: int, disk: DiskCalls) -> None:
        self.directory = directory
        self._disk = disk
        self._lock = lock
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._state_file = retire_state.StateFile(directory)
        self._state = self._state_file.load()
        self._segments: list[_Segment] = []
        self._spares: list[str] = []  # spent segment files to write over
        self._next_id = 1
        self._in_flight: dict[int, float] = {}  # handed out, not retired: id -> accepted_at
        self._cursor: _Segment | None = None
        self._offset = 0
        self._walk_next = 0  # the id the cursor expects next (gaps are damage)
        # Records appended while the cursor was at the end of the log, in
        # order, each with where it starts: what the next reads hand out,
        # from memory instead of reading back what was just written.
        self._fresh: deque[tuple[_Segment, int, Record]] = deque()
        self._fresh_bytes = 0
        # A failed write may have left bytes in this segment past its size.
        self._uncut: _Segment | None = None
        # The disk refused a write since the last segment was started: once
        # every record is retired, start another so that this one can go.
        self._refused = False
        self.retired = self.redelivered = self.set_aside = 0

    # -- opening ------------------------------------------------------------------

    @classmethod
    def open(cls, directory: str, *, fsync: bool, segment_bytes: int = 64 << 20,
             disk: DiskCalls | None = None,
             lock: DirectoryLock | None = None) -> tuple[SegmentStore, OpenReport]:
        """Lock the directory (unless ``lock`` holds it already: see
        :func:`.lock.claim`), scan every segment, cut a torn end, set damage
        aside.  The store owns the lock from here on, also when this fails.

        Raises SpoolLockedError when another process holds the directory and
        OSError when the directory is unusable."""
        if lock is None:
            lock = claim(directory)
        try:
            store = cls(directory, lock, fsync, segment_bytes, disk or DiskCalls())
            report = store._scan()
        except BaseException:
            lock.release()
            raise
        return store, report

    def _scan(self) -> OpenReport:
        names = os.listdir(self.directory)
        spares = sorted(os.path.join(self.directory, n) for n in names
                        if n.endswith(SPARE) and n[:-len(SPARE)].isdigit())
        self._spares, extra = spares[:SPARES], spares[SPARES:]
        for path in extra:
            self._disk.remove(path)
        names = sorted((n for n in names if n.endswith(SUFFIX) and n[:-len(SUFFIX)].isdigit()),
                       key=lambda n: int(n[:-len(SUFFIX)]))
        state = self._state
        expected: int | None = None
        damaged_bytes = torn = 0
        for index, name in enumerate(names):
            segment = _Segment(self.directory, int(name[:-len(SUFFIX)]), create=False)
            self._segments.append(segment)
            if expected is None:
                state.advance_to(segment.first_id)
                expected = segment.first_id
            expected = self._lost(expected, segment.first_id)
            last = index == len(names) - 1
            end: int | None = None  # where its records end, short of the file's end
            pending: list[Damaged] = []  # damage, unless no record of ours follows
            for item in walk(segment.fd, 0, segment.size, payloads=False):
                if isinstance(item, Intact):
                    if item.header.record_id >= segment.first_id:
                        # A record of this segment: the stretches before it are damage.
                        for stretch in pending:
                            damaged_bytes += self._set_aside_bytes(segment, stretch)
                            expected = self._passed(expected, stretch)
                        pending = []
                        expected = self._lost(expected, item.header.record_id) + 1
                        continue
                    # A record older than the segment: the file is a reused
                    # spare, and no record of this segment follows.
                    stretches, limit = pending, item.offset
                elif not item.torn:
                    pending.append(item)
                    continue
                else:  # damage to the end of the file
                    stretches, limit = [*pending, item], segment.size
                cut = stretches[0].offset if stretches else limit
                # Ours: a stretch names a record of this segment, or ids are
                # missing before the next segment (a damaged header).
                ours = any(_ours(segment, stretch) for stretch in stretches) or (
                    bool(stretches) and not last
                    and int(names[index + 1][:-len(SUFFIX)]) > expected)
                if last and (ours or limit == segment.size):
                    # A write cut short by a crash (never acknowledged with
                    # fsync always: the fsync comes after the write).
                    torn = limit - cut
                elif ours:
                    # In a sealed segment our records were all written whole:
                    # damage, set aside (and any older bytes after it cut off).
                    for stretch in stretches:
                        damaged_bytes += self._set_aside_bytes(segment, stretch)
                        expected = self._passed(expected, stretch)
                    cut = limit
                # else: the remains of a reused spare's older records, cut off.
                end = cut if cut < segment.size else None
                pending = []
                break
            for stretch in pending:  # (not reached: damage at the end is torn)
                damaged_bytes += self._set_aside_bytes(segment, stretch)
                expected = self._passed(expected, stretch)
            if end is not None:
                os.ftruncate(segment.fd, end)
                if self._fsync:
                    os.fdatasync(segment.fd)
                segment.size = end
        if expected is None:
            expected = max(state.retired_below, state.handed_out + 1)
        self._next_id = max(expected, state.retired_below,
                            self._segments[-1].first_id if self._segments else 1)
        if not self._segments:
            self._new_segment()
        self._reclaim()
        self.rewind()
        # Both slots, so that each holds its disk space from the start.
        self._state_file.save(state)
        self._state_file.save(state)
        return OpenReport(self.records(), len(self._segments), self.set_aside, damaged_bytes,
                          torn, os.path.join(self.directory, DAMAGED))

    def _passed(self, expected: int, item: Damaged) -> int:
        if item.record_id is not None and item.record_id >= expected:
            return self._lost(expected, item.record_id + 1)
        return expected

    def _lost(self, expected: int, found: int) -> int:
        """Ids ``[expected, found)`` are not in the spool: damaged, set aside."""
        for record_id in range(max(expected, self._state.retired_below), found):
            if self._state.retire(record_id):
                self.set_aside += 1
        return max(expected, found)

    def _set_aside_bytes(self, segment: _Segment, item: Damaged) -> int:
        if item.offset in segment.damaged:
            return 0
        segment.damaged.add(item.offset)
        if item.record_id is not None and self._state.retire(item.record_id):
            self.set_aside += 1
        try:
            os.makedirs(os.path.join(self.directory, DAMAGED), exist_ok=True)
            target = os.path.join(self.directory, DAMAGED,
                                  f"{segment.first_id:020d}.{item.offset}.bin")
            with open(target, "wb") as copy:
                position = item.offset
                while position < item.end:
                    chunk = os.pread(segment.fd, min(1 << 20, item.end - position), position)
                    if not chunk:
                        break
                    copy.write(chunk)
                    position += len(chunk)
        except OSError:
            pass  # the copy is a courtesy; the segment still holds the bytes
        return item.end - item.offset

    # -- appending ----------------------------------------------------------------

    def append(self, batch: list[Entry]) -> list[int]:
        """Write ``(payload, lines, accepted_at, payload_crc)`` records in one write, then
        (with fsync) one fdatasync: durable when this returns.  OSError when
        the disk refuses; then nothing of the batch counts."""
        if self._uncut is not None:
            if self._uncut in self._segments:
                os.ftruncate(self._uncut.fd, self._uncut.size)
            self._uncut = None
        segment = self._segments[-1]
        caught_up = bool(self._fresh) or (self._cursor is segment
                                          and self._offset >= segment.size)
        if segment.size >= self._segment_bytes or self._spent(segment):
            segment = self._new_segment()
            self._reclaim()
        first = self._next_id
        parts: list[bytes] = []
        for index, (payload, lines, accepted_at, crc) in enumerate(batch):
            parts.append(encode(first + index, lines, accepted_at, payload, crc))
            parts.append(payload)
        try:
            size = self._write_all(segment.fd, parts, segment.size)
            if self._fsync:
                self._disk.sync(segment.fd)
        except OSError:
            self._refused = True
            self._uncut = segment
            try:
                os.ftruncate(segment.fd, segment.size)
                self._uncut = None
            except OSError:
                pass  # tried again before the next write
            raise
        if caught_up:
            self._keep_fresh(segment, first, batch)
        segment.size += size
        self._next_id = first + len(batch)
        return list(range(first, self._next_id))

    def _write_all(self, fd: int, parts: list[bytes], offset: int) -> int:
        """Write ``parts`` at ``offset`` with as few pwritev calls as it takes
        (no joined copy of the batch); returns the bytes written."""
        buffers: list[bytes | memoryview] = [part for part in parts if part]
        index = written = 0
        while index < len(buffers):
            count = self._disk.write(fd, buffers[index:index + IOV_MAX], offset + written)
            written += count
            while count and index < len(buffers):  # past what was written
                length = len(buffers[index])
                if count < length:
                    buffers[index] = memoryview(buffers[index])[count:]
                    break
                count -= length
                index += 1
        return written

    def _keep_fresh(self, segment: _Segment, first: int, batch: list[Entry]) -> None:
        """Remember the batch just written for the next reads; forget every
        fresh record once delivery falls this far behind (it reads from disk)."""
        fresh = self._fresh
        offset = segment.size
        for index, (payload, lines, accepted_at, _) in enumerate(batch):
            fresh.append((segment, offset, Record(first + index, payload, lines, accepted_at)))
            offset += HEADER_SIZE + len(payload)
        self._fresh_bytes += offset - segment.size
        if self._fresh_bytes > self.fresh_bytes:
            fresh.clear()
            self._fresh_bytes = 0

    def _spent(self, segment: _Segment) -> bool:
        """The disk refused a write and everything in the active segment
        is retired: its space is worth more than the files a new one costs."""
        return self._refused and segment.size > 0 and self.records() == 0

    def _new_segment(self) -> _Segment:
        segment = None
        while segment is None and self._spares:
            try:
                segment = _Segment(self.directory, self._next_id, create=True,
                                   spare=self._spares.pop())
            except OSError:
                pass  # gone or unusable: the next, or a new file
        if segment is None:
            segment = _Segment(self.directory, self._next_id, create=True)
        self._segments.append(segment)
        self._refused = False
        if self._fsync:
            # The new file's name must be durable before records in it are acknowledged.
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return segment

    # -- reading ----------------------------------------------------------------------

    def read(self, max_records: int, max_bytes: int) -> list[Record]:
        """The next records in order that are not retired, from where the
        last read stopped (or the oldest, after :meth:`rewind`)."""
        records: list[Record] = []
        size = 0
        while len(records) < max_records and size < max_bytes and self._cursor is not None:
            segment = self._cursor
            if self._offset >= segment.size:
                index = self._segments.index(segment)
                if index + 1 >= len(self._segments):
                    break
                self._cursor, self._offset = self._segments[index + 1], 0
                continue
            fresh = self._fresh
            if fresh and fresh[0][0] is segment and fresh[0][1] == self._offset:
                size += self._take_fresh(records, max_records, max_bytes - size)
                continue
            # Read from disk up to the fresh records, if they are in this segment.
            end = fresh[0][1] if fresh and fresh[0][0] is segment else segment.size
            for item in walk(segment.fd, self._offset, end, payloads=True,
                             window=READ_WINDOW):
                if isinstance(item, Damaged):
                    self._offset = item.end
                    self._set_aside_bytes(segment, item)
                    continue
                header = item.header
                self._offset = item.offset + header.size
                self._walk_next = self._lost(self._walk_next, header.record_id) + 1
                if self._state.is_retired(header.record_id):
                    continue
                assert item.payload is not None
                records.append(Record(header.record_id, item.payload, header.lines,
                                      header.accepted_at))
                size += header.length
                if len(records) >= max_records or size >= max_bytes:
                    break
        if records:
            state = self._state
            for record in records:
                if record.record_id <= state.handed_out:
                    self.redelivered += 1
                self._in_flight[record.record_id] = record.accepted_at
            if records[-1].record_id > state.handed_out:
                state.handed_out = records[-1].record_id
                try:
                    self._state_file.save(state)
                except OSError:
                    # Only the redelivered count after a restart needs it:
                    # never a reason not to deliver.  Saved with the next retire.
                    pass
        return records

    def _take_fresh(self, records: list[Record], max_records: int, max_bytes: int) -> int:
        """Hand out fresh records from memory (the cursor is at the first);
        returns their payload bytes."""
        fresh = self._fresh
        size = 0
        while fresh and len(records) < max_records and size < max_bytes:
            segment, offset, record = fresh[0]
            if segment is not self._cursor or offset != self._offset:
                break
            fresh.popleft()
            stored = HEADER_SIZE + len(record.payload)
            self._fresh_bytes -= stored
            self._offset = offset + stored
            self._walk_next = record.record_id + 1
            if not self._state.is_retired(record.record_id):
                records.append(record)
                size += len(record.payload)
        return size

    def rewind(self) -> None:
        """Hand out again from the oldest record not retired (e.g. after the
        connection the records were written to was lost)."""
        self._in_flight.clear()
        self._cursor = self._segments[0] if self._segments else None
        self._offset = 0
        self._walk_next = self._cursor.first_id if self._cursor is not None else self._next_id

    # -- retiring ----------------------------------------------------------------------

    def retire(self, record_ids: list[int]) -> None:
        """Mark records delivered; delete segments left with none to deliver."""
        changed = False
        for record_id in record_ids:
            if record_id < self._next_id and self._state.retire(record_id):
                self.retired += 1
                changed = True
            self._in_flight.pop(record_id, None)
        if changed:
            active = self._segments[-1]
            if self.records() == 0 and (active.size >= self._segment_bytes // 4
                                        or self._spent(active)):
                # Everything delivered: start afresh so the full segment can go,
                # rather than wait for the next append to roll it.
                self._new_segment()
            self._reclaim()
            self._state_file.save(self._state)

    def _reclaim(self) -> None:
        segments = self._segments
        while len(segments) > 1 and self._state.retired_below >= segments[1].first_id:
            segment = segments.pop(0)
            self._spend(segment)
            if self._cursor is segment:
                self._cursor, self._offset = segments[0], 0

    def _spend(self, segment: _Segment) -> None:
        """Close a spent segment; keep its file for reuse, or delete it."""
        keep = len(self._spares) < SPARES
        if segment is self._uncut:
            # A failed write's bytes past its end, not cut yet: a spare must
            # hold only records older than any later segment's.
            self._uncut = None
            try:
                os.ftruncate(segment.fd, segment.size)
            except OSError:
                keep = False
        segment.close()
        if keep:
            spare = os.path.join(self.directory, f"{segment.first_id:020d}{SPARE}")
            try:
                os.rename(segment.path, spare)
            except OSError:
                pass
            else:
                self._spares.append(spare)
                return
        self._disk.remove(segment.path)

    # -- what stats() shows ------------------------------------------------------------------

    def records(self) -> int:
        state = self._state
        return max(0, self._next_id - state.retired_below - len(state.retired))

    def stats(self) -> StoreStats:
        return StoreStats(
            records=self.records(),
            bytes=sum(segment.size for segment in self._segments),
            oldest_at=self._oldest_at(),
            retired=self.retired,
            redelivered=self.redelivered,
            set_aside=self.set_aside,
            next_id=self._next_id,
        )

    def _oldest_at(self) -> float | None:
        # Delivery goes in order and a rewind forgets what was handed out,
        # so the oldest record is the first handed out, or the one at the cursor.
        for accepted_at in self._in_flight.values():
            return accepted_at
        if self.records() == 0:
            return None
        if self._fresh and self._fresh[0][0] is self._cursor \
                and self._fresh[0][1] == self._offset:
            return self._fresh[0][2].accepted_at
        segment = self._cursor
        offset = self._offset
        while segment is not None:
            for item in walk(segment.fd, offset, segment.size, payloads=False, window=4096):
                if isinstance(item, Intact) and not self._state.is_retired(item.header.record_id):
                    return item.header.accepted_at
            index = self._segments.index(segment)
            segment = self._segments[index + 1] if index + 1 < len(self._segments) else None
            offset = 0
        return None

    def close(self) -> None:
        try:
            self._state_file.save(self._state)
        finally:
            self._state_file.close()
            for segment in self._segments:
                segment.close()
            self._segments = []
            self._fresh.clear()
            self._lock.release()


def _ours(segment: _Segment, item: Damaged) -> bool:
    """The damaged stretch names a record of ``segment`` (not an older one)."""
    return item.record_id is not None and item.record_id >= segment.first_id

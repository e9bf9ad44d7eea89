"""The spool as the reactor sees it: Deferreds, group commit, never a disk wait.

Everything that touches the disk runs as *jobs* on the runner (one writer
thread), one at a time.  Appends, retires and reads queue up in the next
job; a job takes everything queued when it starts, so every append that
arrived during one fsync shares the next fsync (group commit).  Work that
arrives while a job runs hands the runner the next run at once, so that it
starts on the writer thread as soon as the job ends, with everything queued
by then, instead of waiting for a busy reactor to notice and ask.  An
append's Deferred fires only after the job that wrote it returned: after the
fsync with ``always``, after the write reached the operating system with
``never``.

The queue is the one thing both threads touch, under a lock; everything
else the reactor reads comes back as a job's results and a fresh
:class:`StoreStats`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from bridge.errors import SpoolFullError, SpoolUnavailableError
from bridge.upstream.spool.lock import DirectoryLock, claim
from bridge.upstream.spool.record import FAST_CHECKSUM, HEADER_SIZE, checksum
from bridge.upstream.spool.runner import Runner
from bridge.upstream.spool.store import (
    DiskCalls,
    Entry,
    OpenReport,
    Record,
    SegmentStore,
    StoreStats,
)

ALWAYS = "always"
NEVER = "never"
MAX_SEGMENT = 64 << 20
MIN_SEGMENT = 64 << 10

RecordId = int
_CLOSED: list[Deferred[None]] = []  # self._closed once closed


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """What /status and /metrics show about one upstream's spool."""

    records: int
    bytes: int
    max_bytes: int
    oldest_age: float | None  # seconds since the oldest record not retired was accepted
    retired: int
    redelivered: int
    set_aside: int
    queued: int  # appends waiting for the next group commit


@dataclass(eq=False)
class _Read:
    max_records: int
    max_bytes: int
    wait: bool  # park when nothing is found (the reactor's to change)
    done: Deferred[list[Record]]


@dataclass
class _Job:
    appends: list[tuple[Entry, Deferred[RecordId]]] = field(default_factory=list)
    retires: list[RecordId] = field(default_factory=list)
    reads: list[_Read] = field(default_factory=list)
    rewind: bool = False
    close: bool = False

    def __bool__(self) -> bool:
        return bool(self.appends or self.retires or self.reads or self.rewind or self.close)


@dataclass
class _Outcome:
    ids: list[RecordId] | None = None
    append_error: OSError | None = None
    retire_error: OSError | None = None
    reads: list[list[Record] | OSError] = field(default_factory=list)
    stats: StoreStats | None = None
    bug: Failure | None = None  # the job raised: logged on the reactor


def segment_size(max_bytes: int, filesystem_bytes: int | None = None) -> int:
    """Segments small enough that retiring frees space well before the
    limit, or before the filesystem is full when it is the smaller."""
    limit = max_bytes if filesystem_bytes is None else min(max_bytes, filesystem_bytes)
    return max(MIN_SEGMENT, min(MAX_SEGMENT, limit // 16))


def filesystem_bytes(directory: str) -> int | None:
    """The size of the filesystem ``directory`` is on, or None if unknown."""
    try:
        info = os.statvfs(directory)
    except OSError:
        return None
    return info.f_blocks * info.f_frsize or None


def open_spool(
    directory: str, max_bytes: int, fsync: str, *, runner: Runner, clock: IReactorTime,
    segment_bytes: int | None = None, disk: DiskCalls | None = None,
    lock: DirectoryLock | None = None,
) -> Deferred[Spool]:
    """Open (scanning and repairing) the spool in ``directory``, locking it
    unless ``lock`` (from :func:`.lock.claim`) holds it already.

    Fails with SpoolLockedError when another process holds the directory,
    SpoolUnavailableError when the directory is unusable."""
    if fsync not in (ALWAYS, NEVER):
        raise ValueError(f"fsync must be {ALWAYS} or {NEVER}, got {fsync!r}")

    def opening() -> tuple[SegmentStore, OpenReport, StoreStats]:
        held = lock if lock is not None else claim(directory)
        size = segment_bytes if segment_bytes is not None else segment_size(
            max_bytes, filesystem_bytes(directory))
        store, report = SegmentStore.open(directory, fsync=fsync == ALWAYS, segment_bytes=size,
                                          disk=disk, lock=held)
        return store, report, store.stats()

    def opened(result: tuple[SegmentStore, OpenReport, StoreStats]) -> Spool:
        store, report, stats = result
        Spool.log_open(directory, report)
        return Spool(store, runner, clock, max_bytes, stats)

    def unusable(failure: Failure) -> Failure:
        if failure.check(OSError):
            error = failure.value
            raise SpoolUnavailableError(f"cannot open the spool in {directory}: {error}")
        return failure

    return runner(opening).addCallbacks(opened, unusable)


class Spool:
    """An append-only queue of /send records on disk, in acceptance order."""

    log = Logger()

    def __init__(self, store: SegmentStore, runner: Runner, clock: IReactorTime,
                 max_bytes: int, stats: StoreStats) -> None:
        self._store = store
        self._runner = runner
        self._clock = clock
        self.max_bytes = max_bytes
        self._stats = stats
        self._lock = threading.Lock()  # guards _next: the writer thread takes it
        self._next = _Job()
        # Runs of the job loop handed to the runner, and started by it: at
        # most one waits to start, behind at most one at work.
        self._submitted = self._started = 0
        self._store_closed = False  # the writer thread's: a job closed the store
        self._reserved = 0  # bytes of appends not yet reflected in _stats.bytes
        self._closed: list[Deferred[None]] | None = None  # waiters, once closing
        self._failing = False  # the last append failed: log the recovery once
        self._retire_failing = False  # the same for recording retires
        self._parked: list[_Read] = []  # reads waiting for the next append
        self._reading: set[_Read] = set()  # reads queued or being read
        #: Called after each job that stored records (delivery wakes up).
        self.on_stored: Callable[[], None] | None = None

    @staticmethod
    def log_open(directory: str, report: OpenReport) -> None:
        if not FAST_CHECKSUM:
            Spool.log.warn(
                "spool {directory}: google-crc32c has no compiled extension on this "
                "platform; its pure-Python CRC makes every spooled /send much slower",
                directory=directory)
        if report.set_aside or report.damaged_bytes:
            Spool.log.warn(
                "spool {directory}: {set_aside} damaged records set aside ({bytes} bytes "
                "copied to {where}); {records} intact records kept for delivery",
                directory=directory, set_aside=report.set_aside, bytes=report.damaged_bytes,
                where=report.damaged_dir, records=report.records,
            )
        if report.torn_bytes:
            Spool.log.info(
                "spool {directory}: removed an incomplete last write of {torn} bytes "
                "(cut short by a crash; it was never acknowledged)",
                directory=directory, torn=report.torn_bytes,
            )

    # -- the operations --------------------------------------------------------------

    def append(self, payload: bytes, lines: int) -> Deferred[RecordId]:
        """Store one request's framed lines.  Fires with the record id once
        durable per the fsync mode; fails with SpoolFullError (429) or
        SpoolUnavailableError (503), never after the fact."""
        if self._closed is not None:
            return fail(SpoolUnavailableError("the spool is closed"))
        size = HEADER_SIZE + len(payload)
        if self._stats.bytes + self._reserved + size > self.max_bytes:
            return fail(SpoolFullError(
                f"the spool holds {self._stats.bytes + self._reserved} bytes and "
                f"spool_max_bytes is {self.max_bytes}; nothing was stored"))
        done: Deferred[RecordId] = Deferred()
        # Here, not on the writer thread: a couple of microseconds, and the
        # writer thread takes the GIL back from a busy reactor fewer times.
        crc = checksum(payload)
        self._reserved += size
        parked, self._parked = self._parked, []
        with self._lock:
            self._next.appends.append(((payload, lines, self._clock.seconds(), crc), done))
            self._next.reads.extend(parked)
            run = self._claim_run()
        if run:
            self._run()
        return done

    def peek_batch(self, max_records: int, max_bytes: int = 4 << 20,
                   wait: bool = False) -> Deferred[list[Record]]:
        """The next records to deliver, oldest first: up to ``max_records``
        (and about ``max_bytes``), continuing after the last batch handed
        out; empty when delivery has caught up.  Handing out is remembered on
        disk, so records handed out again after a restart are counted as
        redelivered.

        With ``wait``, a read that finds nothing is parked and done again by
        the job that stores the next appends (one job, not two, per batch of
        requests once delivery has caught up); :meth:`release_reads` ends
        the wait with an empty list."""
        if self._closed is not None:
            return fail(SpoolUnavailableError("the spool is closed"))
        done: Deferred[list[Record]] = Deferred()
        self._queue_read(_Read(max_records, max_bytes, wait, done))
        return done

    def _queue_read(self, read: _Read) -> None:
        self._reading.add(read)
        with self._lock:
            self._next.reads.append(read)
        self._kick()

    def release_reads(self) -> None:
        """Parked reads fire now, with nothing; so do waiting reads that are
        queued or being read now, once they find nothing (none of them parks)."""
        parked, self._parked = self._parked, []
        for read in self._reading:
            read.wait = False
        for read in parked:
            self._reading.discard(read)
            read.done.callback([])

    def retire(self, *record_ids: RecordId) -> None:
        """The records are delivered: never hand them out again; their space
        is reclaimed with their segment.  Written with the next job, unsynced:
        a retire lost in a crash means one more delivery, not a loss."""
        with self._lock:
            self._next.retires.extend(record_ids)
            run = self._claim_run()
        if run:
            self._run()

    def rewind(self) -> None:
        """Hand out again from the oldest record not retired (the connection
        the handed-out records went to was lost before they were confirmed)."""
        with self._lock:
            self._next.rewind = True
        self._kick()

    @property
    def redelivered(self) -> int:
        """Records handed out again, after a restart or a rewind."""
        return self._stats.redelivered

    @property
    def failing(self) -> bool:
        """The last append failed (the disk refused)."""
        return self._failing

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def stats(self) -> SpoolStats:
        stats = self._stats
        return SpoolStats(
            records=stats.records,
            bytes=stats.bytes,
            max_bytes=self.max_bytes,
            oldest_age=None if stats.oldest_at is None
            else max(0.0, self._clock.seconds() - stats.oldest_at),
            retired=stats.retired,
            redelivered=stats.redelivered,
            set_aside=stats.set_aside,
            queued=self._queued(),
        )

    def _queued(self) -> int:
        with self._lock:
            return len(self._next.appends)

    def close(self) -> Deferred[None]:
        """Finish what is queued, then release the files and the lock."""
        done: Deferred[None] = Deferred()
        if self._closed is None:
            self._closed = []
            with self._lock:
                self._next.close = True
            self.release_reads()
            self._kick()
        if self._closed is _CLOSED:
            done.callback(None)
        else:
            self._closed.append(done)
        return done

    # -- the job loop ------------------------------------------------------------------

    def _kick(self) -> None:
        """Hand the runner a run of the job loop, unless one waits to start
        already (it will take this work too)."""
        with self._lock:
            run = self._claim_run()
        if run:
            self._run()

    def _claim_run(self) -> bool:
        """With the lock held: whether to hand the runner a run now."""
        if not self._next or self._submitted > self._started or self._store_closed:
            return False
        self._submitted += 1
        return True

    def _run(self) -> None:
        self._runner(self._take_and_work).addBoth(self._finished)

    def _take_and_work(self) -> tuple[_Job, _Outcome] | None:
        """On the writer thread: take what is queued now, and do it."""
        with self._lock:
            self._started += 1
            job, self._next = self._next, _Job()
        if not job:
            return None  # the run before took it
        outcome = _Outcome()
        try:
            self._work(job, outcome)
        except Exception as error:  # a bug, not the disk: fail what has no result
            failed = OSError(f"the spool failed: {error!r}")
            outcome.bug = Failure()
            if outcome.ids is None:
                outcome.append_error = outcome.append_error or failed
            outcome.reads += [failed] * (len(job.reads) - len(outcome.reads))
        return job, outcome

    def _work(self, job: _Job, outcome: _Outcome) -> None:
        """On the writer thread: the job's writes, then its retires and reads,
        each result into ``outcome`` as soon as it is known."""
        store = self._store
        if self._store_closed:  # work queued after the close: nothing to do it with
            outcome.append_error = OSError("the spool is closed")
            outcome.reads = [OSError("the spool is closed")] * len(job.reads)
            return
        if job.appends:
            try:
                outcome.ids = store.append([entry for entry, _ in job.appends])
            except OSError as error:
                outcome.append_error = error
        if job.retires:
            try:
                store.retire(job.retires)
            except OSError as error:
                outcome.retire_error = error
        if job.rewind:
            store.rewind()
        for read in job.reads:
            try:
                outcome.reads.append(store.read(read.max_records, read.max_bytes))
            except OSError as error:
                outcome.reads.append(error)
        outcome.stats = store.stats()
        if job.close:
            self._store_closed = True
            store.close()

    def _finished(self, result: tuple[_Job, _Outcome] | Failure | None) -> None:
        if isinstance(result, Failure):  # the runner itself failed
            self.log.failure("spool runner failed", result)
        elif result is not None:
            self._done(*result)
            if result[0].close and self._closed is not None:
                waiters, self._closed = self._closed, _CLOSED
                for waiter in waiters:
                    waiter.callback(None)
                return
        self._kick()

    def _done(self, job: _Job, outcome: _Outcome) -> None:
        if outcome.bug is not None:
            self.log.failure("spool job failed", outcome.bug)
        for (payload, _, _, _), _ in job.appends:
            self._reserved -= HEADER_SIZE + len(payload)
        if outcome.stats is not None:
            self._stats = outcome.stats
        self._settle_appends(job, outcome)
        if job.retires:
            self._note_retire_error(outcome.retire_error)
        for read, found in zip(job.reads, outcome.reads, strict=True):
            self._reading.discard(read)
            if isinstance(found, OSError):
                read.done.errback(SpoolUnavailableError(f"cannot read the spool: {found}"))
            elif not found and read.wait and self._closed is None:
                # Nothing yet: read again with the next append.
                self._parked.append(read)
                self._reading.add(read)
            else:
                read.done.callback(found)
        if self._parked:
            with self._lock:
                # Records the parked reads did not see: stored by this job (a
                # read that found nothing ran in an earlier run), or queued.
                if outcome.ids or self._next.appends:
                    self._next.reads.extend(self._parked)
                    self._parked = []

    def _note_retire_error(self, error: OSError | None) -> None:
        """One line when recording retires starts failing, one when it works again."""
        if error is not None and not self._retire_failing:
            self.log.warn("spool: could not record retired records ({error}); they may be "
                          "delivered again after a restart", error=error)
        elif error is None and self._retire_failing:
            self.log.info("spool: recording retired records again")
        self._retire_failing = error is not None

    def _settle_appends(self, job: _Job, outcome: _Outcome) -> None:
        if not job.appends:
            return
        if outcome.ids is None:
            error = outcome.append_error
            if not self._failing:
                self.log.error("spool: cannot store lines: {error}; answering 503 "
                               "spool_unavailable until the disk takes them", error=error)
            self._failing = True
            for _, done in job.appends:
                if not done.called:
                    done.errback(SpoolUnavailableError(
                        f"the spool could not store the lines ({error}); nothing was stored"))
            return
        if self._failing:
            self._failing = False
            self.log.info("spool: storing lines again")
        for record_id, (_, done) in zip(outcome.ids, job.appends, strict=True):
            if not done.called:  # cancelled: the record stays and is delivered
                done.callback(record_id)
        if self.on_stored is not None:
            self.on_stored()

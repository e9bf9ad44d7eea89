"""The spool as the reactor sees it: Deferreds, group commit, never a disk wait.

Everything that touches the disk runs as one *job* at a time on the runner
(one writer thread).  While a job runs, new appends, retires and reads
queue up; the next job takes all of them at once, so every append that
arrived during one fsync shares the next fsync (group commit).  An append's
Deferred fires only after the job that wrote it returned: after the fsync
with ``always``, after the write reached the operating system with ``never``.

Nothing the reactor reads is touched by the writer thread: each job returns
its results and a fresh :class:`StoreStats`, and the reactor keeps those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from bridge.errors import SpoolFullError, SpoolUnavailableError
from bridge.upstream.spool.lock import DirectoryLock, claim
from bridge.upstream.spool.record import HEADER_SIZE
from bridge.upstream.spool.runner import Runner
from bridge.upstream.spool.store import DiskCalls, OpenReport, Record, SegmentStore, StoreStats

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


_Read = tuple[int, int, bool, "Deferred[list[Record]]"]  # max records, max bytes, wait


@dataclass
class _Job:
    appends: list[tuple[bytes, int, float, Deferred[RecordId]]] = field(default_factory=list)
    retires: list[RecordId] = field(default_factory=list)
    reads: list[_Read] = field(default_factory=list)
    rewind: bool = False
    close: bool = False
    reserved: int = 0

    def __bool__(self) -> bool:
        return bool(self.appends or self.retires or self.reads or self.rewind or self.close)


@dataclass
class _Outcome:
    ids: list[RecordId] | None = None
    append_error: OSError | None = None
    retire_error: OSError | None = None
    reads: list[list[Record] | OSError] = field(default_factory=list)
    stats: StoreStats | None = None


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
        self._next = _Job()
        self._busy = False
        self._reserved = 0  # bytes of appends not yet reflected in _stats.bytes
        self._closed: list[Deferred[None]] | None = None  # waiters, once closing
        self._failing = False  # the last append failed: log the recovery once
        self._retire_failing = False  # the same for recording retires
        self._parked: list[_Read] = []  # reads waiting for the next append
        self._released_while_busy = False  # release_reads() came while a job ran
        #: Called after each job that stored records (delivery wakes up).
        self.on_stored: Callable[[], None] | None = None

    @staticmethod
    def log_open(directory: str, report: OpenReport) -> None:
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
        self._next.appends.append((payload, lines, self._clock.seconds(), done))
        self._next.reserved += size
        self._reserved += size
        if self._parked:
            self._next.reads.extend(self._parked)
            self._parked = []
        self._kick()
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
        done: Deferred[list[Record]] = Deferred()
        self._next.reads.append((max_records, max_bytes, wait, done))
        self._kick()
        return done

    def release_reads(self) -> None:
        """Parked reads fire now, with nothing; so do waiting reads that are
        queued or being read now, once they find nothing (none of them parks)."""
        parked, self._parked = self._parked, []
        for _, _, _, done in parked:
            done.callback([])
        self._next.reads = [(most, size, False, done)
                            for most, size, _, done in self._next.reads]
        if self._busy:
            self._released_while_busy = True

    def retire(self, record_id: RecordId) -> None:
        """The record is delivered: never hand it out again; its space is
        reclaimed with its segment.  Written with the next job, unsynced:
        a retire lost in a crash means one more delivery, not a loss."""
        self._next.retires.append(record_id)
        self._kick()

    def rewind(self) -> None:
        """Hand out again from the oldest record not retired (the connection
        the handed-out records went to was lost before they were confirmed)."""
        self._next.rewind = True
        self._kick()

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
            queued=len(self._next.appends),
        )

    def close(self) -> Deferred[None]:
        """Finish what is queued, then release the files and the lock."""
        done: Deferred[None] = Deferred()
        if self._closed is None:
            self._closed = []
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
        if self._busy or not self._next:
            return
        job, self._next = self._next, _Job()
        self._busy = True
        self._runner(lambda: self._work(job)).addBoth(self._finished, job)

    def _work(self, job: _Job) -> _Outcome:
        """On the writer thread: the job's writes, then its retires and reads."""
        store = self._store
        outcome = _Outcome()
        if job.appends:
            try:
                outcome.ids = store.append([(p, n, at) for p, n, at, _ in job.appends])
            except OSError as error:
                outcome.append_error = error
        if job.retires:
            try:
                store.retire(job.retires)
            except OSError as error:
                outcome.retire_error = error
        if job.rewind:
            store.rewind()
        for max_records, max_bytes, _, _ in job.reads:
            try:
                outcome.reads.append(store.read(max_records, max_bytes))
            except OSError as error:
                outcome.reads.append(error)
        outcome.stats = store.stats()
        if job.close:
            store.close()
        return outcome

    def _finished(self, result: _Outcome | Failure, job: _Job) -> None:
        self._busy = False
        released, self._released_while_busy = self._released_while_busy, False
        self._reserved -= job.reserved
        if isinstance(result, Failure):
            # A bug, not the disk: fail what waited, keep the reactor alive.
            self.log.failure("spool job failed", result)
            result = _Outcome(append_error=OSError(str(result.value)),
                              reads=[OSError(str(result.value))] * len(job.reads))
        if result.stats is not None:
            self._stats = result.stats
        self._settle_appends(job, result)
        if job.retires:
            self._note_retire_error(result.retire_error)
        for request, read in zip(job.reads, result.reads, strict=True):
            done = request[3]
            if isinstance(read, OSError):
                done.errback(SpoolUnavailableError(f"cannot read the spool: {read}"))
            elif not read and request[2] and self._closed is None and not released:
                if self._next.appends:
                    # Appends came in while this job ran: read with them.
                    self._next.reads.append(request)
                else:
                    self._parked.append(request)
            else:
                done.callback(read)
        if job.close and self._closed is not None:
            waiters, self._closed = self._closed, _CLOSED
            for waiter in waiters:
                waiter.callback(None)
            return
        self._kick()

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
            for _, _, _, done in job.appends:
                if not done.called:
                    done.errback(SpoolUnavailableError(
                        f"the spool could not store the lines ({error}); nothing was stored"))
            return
        if self._failing:
            self._failing = False
            self.log.info("spool: storing lines again")
        for record_id, (_, _, _, done) in zip(outcome.ids, job.appends, strict=True):
            if not done.called:  # cancelled: the record stays and is delivered
                done.callback(record_id)
        if self.on_stored is not None:
            self.on_stored()

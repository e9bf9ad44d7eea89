"""One upstream's spool as a service: opened on start, fed by POST /send,
emptied by :mod:`.delivery`, closed on stop with what is left kept on disk."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from bridge.config import Config
from bridge.errors import SpoolUnavailableError
from bridge.upstream.lines import Lines
from bridge.upstream.spool.delivery import Delivery, Pool
from bridge.upstream.spool.lock import DirectoryLock, SpoolLockedError, claim
from bridge.upstream.spool.record import HEADER_SIZE
from bridge.upstream.spool.runner import Reclaimer, Runner, WriterThread
from bridge.upstream.spool.spool import Spool, SpoolStats, open_spool
from bridge.upstream.spool.store import DiskCalls

#: Exit status for a spool that cannot be used at start (as for bad settings).
EXIT_SPOOL = 2
#: The interpreter's thread switch interval once a spool's writer thread runs
#: (the default is 5 ms).  The writer takes the GIL back from a busy reactor
#: several times a job (after the write, the fsync, to hand the results
#: over); each time it may wait out the whole interval.  Measured with a
#: reactor kept busy in Python (150 us a request, 16 in flight, 33 kB each):
#: fsync always 2,556 appends/s at 5 ms, 3,301 at 1 ms, 3,705 at 0.5 ms,
#: 4,005 at 0.2 ms; fsync never 4,102 / 4,656 / 4,602 / 4,488.
SWITCH_INTERVAL = 0.0005

OPENING = "opening"
ACCEPTING = "accepting"
FULL = "full"
FAILING = "failing"
CLOSED = "closed"


class SpooledSend(Service):
    """POST /send's lines for one upstream go to disk first (``spool = "disk"``)."""

    log = Logger()

    def __init__(
        self,
        config: Config,
        pool: Pool,
        clock: IReactorTime,
        *,
        runner: Runner | None = None,
        on_fatal: Callable[[str, int], None] | None = None,
        disk: DiskCalls | None = None,
        segment_bytes: int | None = None,
    ) -> None:
        assert config.spool_dir is not None
        self.config = config
        self.directory = config.spool_dir
        self._clock = clock
        self._thread = WriterThread(clock) if runner is None else None
        self._runner: Runner = runner if runner is not None else self._thread  # type: ignore[assignment]
        self._on_fatal = on_fatal
        # With threads (not in step-by-step tests), spent segments are deleted
        # on a thread of their own.
        self._reclaimer = Reclaimer() if runner is None else None
        if self._reclaimer is not None:
            disk = replace(disk or DiskCalls(), remove=self._reclaimer.remove)
        self._disk = disk
        self._segment_bytes = segment_bytes
        self._pool = pool
        # Full (not ready) once the largest request might not fit, or a tenth
        # of the spool is left, whichever is less.
        self._headroom = min(config.max_body_bytes + HEADER_SIZE, config.spool_max_bytes // 10)
        self.spool: Spool | None = None
        self._lock: DirectoryLock | None = None  # claimed, not yet handed to the spool
        self.delivery: Delivery | None = None
        self.opened: Deferred[None] = Deferred()
        self._closing: Deferred[None] | None = None
        self._opening = False  # the writer thread is opening the spool
        self._after_open: Deferred[None] | None = None  # close() asked meanwhile
        self.setName(f"spool-{config.name}")

    # -- start and stop -----------------------------------------------------------

    def claim(self) -> str | None:
        """Lock the spool directory now, on the calling thread (the bridge
        does this before it listens, so that a second bridge on the same
        directory never opens its port).  Returns the one line to exit with
        when the directory is held by another process or unusable."""
        if self._lock is not None:
            return None
        try:
            self._lock = claim(self.directory)
        except SpoolLockedError as error:
            return str(error)
        except OSError as error:
            return f"setting 'spool_dir': cannot open the spool in {self.directory}: {error}"
        return None

    def unclaim(self) -> None:
        """Give up a claim that was not used (another spool's claim failed)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def startService(self) -> None:
        super().startService()
        if self._thread is not None:
            if sys.getswitchinterval() > SWITCH_INTERVAL:
                sys.setswitchinterval(SWITCH_INTERVAL)  # for the process: see above
            self._thread.start()
        if self._reclaimer is not None:
            self._reclaimer.start()
        config = self.config
        # Without a claim (an upstream added by a reload) the writer thread locks.
        lock, self._lock = self._lock, None
        opening = open_spool(
            self.directory, config.spool_max_bytes, config.spool_fsync, runner=self._runner,
            clock=self._clock, segment_bytes=self._segment_bytes, disk=self._disk, lock=lock,
        )
        self._opening = True
        opening.addCallbacks(self._opened, self._unusable)

    def _opened(self, spool: Spool) -> None:
        self._opening = False
        if self._closing is not None:  # stopped while it was being opened
            closed = spool.close()
            if self._after_open is not None:
                closed.chainDeferred(self._after_open)
            return
        self.spool = spool
        delivery = Delivery(spool, self._pool, self._clock, self.config.name)
        self.delivery = delivery
        spool.on_stored = delivery.appended
        stats = spool.stats()
        self.log.info("spool {name}: {records} records ({bytes} bytes) in {directory} to "
                      "deliver", name=self.config.name, records=stats.records,
                      bytes=stats.bytes, directory=self.directory)
        delivery.start()
        self.opened.callback(None)

    def _unusable(self, failure: Failure) -> None:
        self._opening = False
        if self._after_open is not None:
            self._after_open.callback(None)
        if failure.check(SpoolLockedError):
            message = str(failure.value)
        else:
            message = f"setting 'spool_dir': {failure.getErrorMessage()}"
        self.opened.errback(failure)
        self.opened.addErrback(lambda _: None)
        if self._on_fatal is not None:
            self._on_fatal(message, EXIT_SPOOL)
        else:
            self.log.error("{why}", why=message)

    def rebind(self, pool: Pool) -> None:
        """A reload replaced the upstream's pool: deliver to the new one."""
        self._pool = pool
        if self.delivery is not None:
            self.delivery.pool = pool

    def stop_delivery(self) -> None:
        """Write nothing more (shutdown): what is not delivered stays spooled."""
        if self.delivery is not None:
            self.delivery.stop()

    def close(self) -> Deferred[None]:
        """Finish the spool's queued work and release it; idempotent."""
        if self._closing is not None:
            return _chain(self._closing)
        self.stop_delivery()
        spool = self.spool
        if spool is not None:
            stats = spool.stats()
            self.log.info("spool {name}: closing; {records} records ({bytes} bytes) stay in "
                          "{directory} for the next start", name=self.config.name,
                          records=stats.records, bytes=stats.bytes, directory=self.directory)
        if spool is not None:
            closed = spool.close()
        elif self._opening:
            # The writer thread is still opening it: close it once open, and
            # only then stop the thread (stopping it now would wait for the
            # scan on the reactor thread, and drop the close).
            closed = self._after_open = Deferred()
        else:
            closed = succeed(None)

        def stop_thread(_: object) -> None:
            if self._thread is not None:
                self._thread.stop()
            if self._reclaimer is not None:
                self._reclaimer.stop()

        self._closing = closed.addBoth(stop_thread)
        return _chain(self._closing)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.close()

    # -- what /send, /readyz and /status ask ----------------------------------------

    def append(self, lines: Lines) -> Deferred[int]:
        """Store one request's lines: fires once stored (per spool_fsync);
        fails with SpoolFullError or SpoolUnavailableError."""
        spool = self.spool
        if spool is None or self._closing is not None:
            why = "is still being opened" if self._closing is None else "is closed"
            return fail(SpoolUnavailableError(f"the spool {why}; nothing was stored"))
        return spool.append(lines.payload, lines.count)

    def state(self) -> str:
        spool = self.spool
        if self._closing is not None:
            return CLOSED
        if spool is None:
            return OPENING
        if spool.failing:
            return FAILING
        stats = spool.stats()
        return FULL if stats.max_bytes - stats.bytes < self._headroom else ACCEPTING

    def accepting(self) -> bool:
        """Ready to take lines: open and not full.  A disk that refused the
        last write still counts: each /send tries it again (503 until it
        works), and a probe that failed would keep the traffic away that
        shows the disk is back."""
        return self.state() in (ACCEPTING, FAILING)

    def stats(self) -> SpoolStats | None:
        return self.spool.stats() if self.spool is not None else None

    def status(self) -> dict[str, Any]:
        """The spool part of /status."""
        stats = self.stats()
        document: dict[str, Any] = {
            "state": self.state(), "directory": self.directory,
            "fsync": self.config.spool_fsync, "max_bytes": self.config.spool_max_bytes,
        }
        if stats is not None:
            document.update({
                "records": stats.records, "bytes": stats.bytes,
                "oldest_age": None if stats.oldest_age is None else round(stats.oldest_age, 3),
                "retired": stats.retired, "redelivered": stats.redelivered,
                "set_aside": stats.set_aside,
            })
        return document


def _chain(deferred: Deferred[None]) -> Deferred[None]:
    """A new Deferred that fires when ``deferred`` has (several may wait)."""
    result: Deferred[None] = Deferred()

    def fire(value: object) -> object:
        result.callback(None)
        return value

    deferred.addBoth(fire)
    return result

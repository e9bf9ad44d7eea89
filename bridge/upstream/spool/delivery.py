"""Delivery: records leave the spool in acceptance order, on one connection at a time.

One connection carries the spool's records until it stops taking work; a
new one is chosen only once every record written to the old one is
settled, so the upstream sees records in the order they were accepted.
Each record (one /send request) is one write: its lines stay contiguous.

A record is retired

* when it has been written to a live connection, if nothing answers /send
  lines (send_replies none, no fence);
* otherwise when its replies (or its fence reply) have arrived.

When the connection ends with records written but not confirmed, the spool
is rewound: they are handed out again (and counted as redelivered).  At
most one read of the spool is outstanding; a rewind waits for it.
"""

from __future__ import annotations

from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from bridge.errors import BodyError, BridgeError
from bridge.logs import LogBudget
from bridge.upstream.lines import Lines
from bridge.upstream.protocol import UpstreamProtocol
from bridge.upstream.replies.frames import Plan
from bridge.upstream.slots import CHECK, DISCARD
from bridge.upstream.spool.spool import Spool
from bridge.upstream.spool.store import Record

#: Seconds between looks for a connection (none live, or congested).
RETRY = 0.1
#: Seconds before reading again after the spool could not be read.
READ_RETRY = 1.0
BATCH = 256
#: Bytes of records read at once: with the connection's write_high_water
#: (1 MiB by default) what delivery holds in memory (1 MiB made the peak RSS
#: of delivering a 1 GB spool 1.4 MB higher, and delivery no faster).
BATCH_BYTES = 256 << 10


class Pool(TypingProtocol):
    """What delivery needs of :class:`bridge.upstream.pool.UpstreamPool`."""

    send_mode: str

    @property
    def fence(self) -> object | None: ...

    def pick(self, replies: bool = True) -> UpstreamProtocol: ...

    def plan(self, lines: Lines) -> Plan: ...

    def expected(self, plan: Plan) -> int | None: ...

    @property
    def reply_timeout(self) -> float: ...

    @property
    def max_pending(self) -> int: ...


class Delivery:
    """Moves records from ``spool`` to ``pool``'s connections."""

    log = Logger()

    def __init__(self, spool: Spool, pool: Pool, clock: IReactorTime, name: str = "default",
                 batch: int = BATCH) -> None:
        self._spool = spool
        self.pool = pool
        self._clock = clock
        self._name = name
        self._batch = batch
        self._running = False
        self._protocol: UpstreamProtocol | None = None
        self._epoch = 0  # one more each time the delivering connection is lost
        self._unconfirmed = 0  # records written on the connection, replies not yet in
        self._reading = False
        self._appended = False  # an append was stored since the last read was asked for
        self._rewind = False
        self._timer: IDelayedCall | None = None
        self._read_failing = False
        self._redelivered = 0  # the spool's count when last logged
        self._resume_awaited = False  # waiting for the congested connection to drain
        self._unsendable_log = LogBudget(clock)  # a whole backlog may not fit a new framing

    def start(self) -> None:
        self._running = True
        self._kick()

    def stop(self) -> None:
        """Write nothing more; replies still arriving retire their records."""
        self._running = False
        self._spool.release_reads()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def appended(self) -> None:
        """A record was stored: deliver it if delivery had caught up."""
        self._appended = True
        self._kick()

    @property
    def _confirms(self) -> bool:
        return self.pool.send_mode != "none" or self.pool.fence is not None

    @property
    def _window(self) -> int:
        return max(1, self.pool.max_pending // 2)

    # -- the loop ---------------------------------------------------------------

    def _kick(self) -> None:
        if not self._running or self._reading:
            return
        if self._rewind:
            self._rewind = False
            self._spool.rewind()
        protocol = self._connection()
        if protocol is None:
            self._wait(RETRY)
            return
        if protocol.paused:
            # Write more once the socket took what it holds (no polling):
            # records wait on disk, not in the transport's buffer (up to
            # write_high_water, which is for /send without a spool).
            if not self._resume_awaited:
                self._resume_awaited = True
                protocol.when_resumed(self._resumed)
            return
        room = self._window - self._unconfirmed if self._confirms else self._batch
        if room <= 0:
            return  # replies will make room
        self._reading = True
        self._appended = False
        # Parked once caught up: the job storing the next appends reads them.
        self._spool.peek_batch(min(self._batch, room), BATCH_BYTES, wait=True).addCallbacks(
            self._read, self._read_failed)

    def _connection(self) -> UpstreamProtocol | None:
        current = self._protocol
        if current is not None:
            if current.accepts_work():
                return current
            if self._unconfirmed:
                return None  # the old connection's records settle first: order
            self._protocol = None
        try:
            protocol = self.pool.pick(replies=self._confirms)
        except BridgeError:
            return None
        self._protocol = protocol
        protocol.on_lost(lambda reason: self._lost(protocol))
        return protocol

    def _resumed(self) -> None:
        self._resume_awaited = False
        self._kick()

    def _wait(self, delay: float) -> None:
        if self._timer is None or not self._timer.active():
            self._timer = self._clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._kick()

    def _lost(self, protocol: UpstreamProtocol) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        self._resume_awaited = False
        self._epoch += 1
        if self._unconfirmed:
            self._unconfirmed = 0
            self._rewind = True
        if self._reading:
            self._spool.release_reads()  # a parked read: end it, to rewind now
        self._kick()

    def _read(self, records: list[Record]) -> None:
        self._reading = False
        if self._read_failing:
            self._read_failing = False
            self.log.info("spool {name}: reading again", name=self._name)
        if not self._running:
            return  # left in the spool for the next start
        self._note_redelivery()
        if not records:
            # Released (a lost connection, a rewind to do) or nothing yet.
            if self._appended or self._rewind:
                self._kick()
            return
        # A rewind due: these come again after the unconfirmed ones.  Else
        # they are the next in order, for whichever connection is live now.
        protocol = None if self._rewind else self._connection()
        if protocol is None:
            self._rewind = True
            self._kick()
            return
        epoch = self._epoch
        if not self._confirms:
            # Retired once written: one write call per record (contiguous
            # lines), one retire for the batch.
            for record in records:
                protocol.write_lines(record.payload, record.lines)
            self._spool.retire(*[record.record_id for record in records])
        else:
            for record in records:
                self._write(protocol, record, epoch)
        self._kick()

    def _note_redelivery(self) -> None:
        """One line per batch handed out again (after a restart or a lost
        connection): those records may reach the upstream twice."""
        redelivered = self._spool.redelivered
        if redelivered > self._redelivered:
            self.log.info("spool {name}: {count} records handed out again ({total} since "
                          "start); the upstream may receive them twice", name=self._name,
                          count=redelivered - self._redelivered, total=redelivered)
            self._redelivered = redelivered

    def _read_failed(self, failure: Failure) -> None:
        self._reading = False
        if not self._read_failing:
            self._read_failing = True
            self.log.error("spool {name}: {error}; trying again every {delay:g} s",
                           name=self._name, error=failure.getErrorMessage(), delay=READ_RETRY)
        self._rewind = True
        if self._running:
            self._wait(READ_RETRY)

    def _write(self, protocol: UpstreamProtocol, record: Record, epoch: int) -> None:
        spool = self._spool
        pool = self.pool
        try:
            plan = pool.plan(Lines(record.lines, record.payload))
        except BodyError as error:
            # Checked when accepted; only a changed reply_framing gets here.
            if self._unsendable_log.allow():
                self.log.error("spool {name}: record {record} cannot be sent with this "
                               "upstream's framing ({error}); retired without sending "
                               "({suppressed} more not logged so far)", name=self._name,
                               record=record.record_id, error=error.message,
                               suppressed=self._unsendable_log.suppressed)
            spool.retire(record.record_id)
            return
        expected = 0 if pool.send_mode == "none" else pool.expected(plan)
        self._unconfirmed += 1

        def done(arrived: bool, record_id: int = record.record_id) -> None:
            if epoch != self._epoch:
                return  # the connection was lost: the rewind hands it out again
            if arrived:
                self._unconfirmed -= 1
                spool.retire(record_id)
                self._kick()

        protocol.submit(
            record.payload, record.lines, mode=CHECK if pool.send_mode == "check" else DISCARD,
            expected=expected, timeout=pool.reply_timeout, plan=plan, on_done=done,
        )

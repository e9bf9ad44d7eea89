"""The life of one upstream connection, as a table (:mod:`bridge.upstream.machine`).

``NEW`` until Twisted connects it; ``OPEN`` while the greeting and handshake
(if any) are under way, which only they may use; ``READY`` once its member
accepted it: it takes work; ``DRAINING`` once half-closed (shutdown, or the
member moved to a new connection): no new work, the replies still due are read
until the server closes; ``CLOSING`` once the bridge closed or aborted it:
nothing more is read or taken, ``connectionLost`` is on its way (a TCP
transport delivers it a reactor turn later); ``CLOSED`` after ``connectionLost``.

The drain rules of a connection are the rows of ``DRAINING``: no new work and
no heartbeat (``accepts_work()`` is false), a heartbeat that fails does not
reset it (the server may be slow with a backlog, and a reset makes it throw
away lines it accepted), while a connection out of step and the end of
``shutdown_grace`` (``ABORT``) still close it at once.

Once closing or closed, every further request to close a connection (drain,
close, abort, out of step, heartbeat failure) is already done: callers need
not ask first, and racing the server's own close is harmless.
"""

from __future__ import annotations

from enum import Enum

from bridge.upstream.machine import Table


class ConnectionState(Enum):
    NEW = "new", False
    OPEN = "open", True
    READY = "ready", True
    DRAINING = "draining", True
    CLOSING = "closing", False
    CLOSED = "closed", False

    #: Frames are still decoded and delivered (read on every frame).
    reads: bool

    def __init__(self, label: str, reads: bool) -> None:
        self.reads = reads


class ConnectionEvent(Enum):
    MADE = "connectionMade"
    ACCEPTED = "greeting and handshake passed: its member takes it"
    DRAIN = "half-close: flush, FIN, read until the server closes"
    CLOSE = "close after what was written (loseConnection)"
    ABORT = "close at once (RST)"
    OUT_OF_STEP = "replies can no longer be matched to requests"
    HEARTBEAT_FAILED = "no (or a wrong) heartbeat reply"
    LOST = "connectionLost"


NEW = ConnectionState.NEW
OPEN = ConnectionState.OPEN
READY = ConnectionState.READY
DRAINING = ConnectionState.DRAINING
CLOSING = ConnectionState.CLOSING
CLOSED = ConnectionState.CLOSED

MADE = ConnectionEvent.MADE
ACCEPTED = ConnectionEvent.ACCEPTED
DRAIN = ConnectionEvent.DRAIN
CLOSE = ConnectionEvent.CLOSE
ABORT = ConnectionEvent.ABORT
OUT_OF_STEP = ConnectionEvent.OUT_OF_STEP
HEARTBEAT_FAILED = ConnectionEvent.HEARTBEAT_FAILED
LOST = ConnectionEvent.LOST

#: Closing a connection that is closing or closed already.
_ALREADY_CLOSING = {
    (state, event): (state, None)
    for state in (CLOSING, CLOSED)
    for event in (DRAIN, CLOSE, ABORT, OUT_OF_STEP, HEARTBEAT_FAILED)
}

TABLE: Table[ConnectionState, ConnectionEvent] = Table("connection", {
    (NEW, MADE): (OPEN, "_made"),
    (OPEN, ACCEPTED): (READY, None),
    # Every open connection can be closed, or found out of step.
    (OPEN, CLOSE): (CLOSING, "_close"),
    (READY, CLOSE): (CLOSING, "_close"),
    (DRAINING, CLOSE): (CLOSING, "_close"),
    (OPEN, ABORT): (CLOSING, "_abort"),
    (READY, ABORT): (CLOSING, "_abort"),
    (DRAINING, ABORT): (CLOSING, "_abort"),  # e.g. shutdown_grace is over
    (OPEN, OUT_OF_STEP): (CLOSING, "_out_of_step"),
    (READY, OUT_OF_STEP): (CLOSING, "_out_of_step"),
    (DRAINING, OUT_OF_STEP): (CLOSING, "_out_of_step"),
    # Heartbeats run on ready connections only.
    (READY, HEARTBEAT_FAILED): (CLOSING, "_heartbeat_failed"),
    (DRAINING, HEARTBEAT_FAILED): (DRAINING, None),  # the drain waits for the server
    (READY, DRAIN): (DRAINING, "_half_close"),
    **_ALREADY_CLOSING,
    (OPEN, LOST): (CLOSED, "_lost"),
    (READY, LOST): (CLOSED, "_lost"),
    (DRAINING, LOST): (CLOSED, "_lost"),
    (CLOSING, LOST): (CLOSED, "_lost"),
})

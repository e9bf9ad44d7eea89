"""The states of a pool member, as a table (:mod:`bridge.upstream.machine`).

ClientService runs the reconnect loop; the member's table follows it and adds
what ClientService does not know: moves to a new connection while the old one
serves, and the drain.  Its events come from the connector (``ATTEMPT``: an
attempt starts), from ``prepareConnection`` (``READY``: connected, greeting
and handshake passed), from ClientService's retry policy (``RETRY``: it asks
how long to wait before the next attempt, after an attempt failed or its
connection ended), from the connection the member holds (``LOST``), and from
the pool and the group (``RETIRE``, ``DRAIN``, ``GRACE_OVER``, ``STOP``).

``STOPPED`` before ``start()`` and after ``stop()``; ``CONNECTING`` while an
attempt (with its greeting and handshake) is under way; ``WAITING`` for the
next one; ``CONNECTED`` with a ready connection.  A move (failback,
rebalance, ``max_connection_age``) is ``REPLACING`` while ClientService is
told to connect anew (it asks for its delay at once: none), then
``REPLACING_CONNECTING`` and ``REPLACING_WAITING`` while the old connection
still serves: /status shows them as ``connected``.  ``DRAINING`` from the
shutdown's drain on.

The drain rules of a member are the rows of ``DRAINING``: its connection is
half-closed and takes no work, an attempt already scheduled may still start
but a connection ready after the drain began is closed unused, ClientService
waits an hour (stopService cancels that) instead of reconnecting, and when
``shutdown_grace`` is over whatever is left is aborted.
"""

from __future__ import annotations

from enum import Enum

from bridge.upstream.machine import Table

#: What /status shows as a member's "state" (and the pool's).
STOPPED_SHOWN = "stopped"
CONNECTING_SHOWN = "connecting"
WAITING_SHOWN = "waiting"
CONNECTED_SHOWN = "connected"
DRAINING_SHOWN = "draining"


class MemberState(Enum):
    STOPPED = "stopped", STOPPED_SHOWN
    CONNECTING = "connecting", CONNECTING_SHOWN
    WAITING = "waiting", WAITING_SHOWN
    CONNECTED = "connected", CONNECTED_SHOWN
    REPLACING = "replacing", CONNECTED_SHOWN
    REPLACING_CONNECTING = "replacing, connecting", CONNECTED_SHOWN
    REPLACING_WAITING = "replacing, waiting", CONNECTED_SHOWN
    DRAINING = "draining", DRAINING_SHOWN

    #: What /status shows.
    shown: str

    def __init__(self, label: str, shown: str) -> None:
        self.shown = shown


class MemberEvent(Enum):
    ATTEMPT = "a connection attempt starts"
    READY = "connected, greeting and handshake passed"
    RETRY = "ClientService asks how long to wait before its next attempt"
    LOST = "the connection the member holds ended"
    RETIRE = "move to a new connection (the old one serves until it is ready)"
    DRAIN = "shutdown: half-close, take no work, make no new connection"
    GRACE_OVER = "shutdown_grace is over: abort what is left"
    STOP = "stop ClientService and close everything"


STOPPED = MemberState.STOPPED
CONNECTING = MemberState.CONNECTING
WAITING = MemberState.WAITING
CONNECTED = MemberState.CONNECTED
REPLACING = MemberState.REPLACING
REPLACING_CONNECTING = MemberState.REPLACING_CONNECTING
REPLACING_WAITING = MemberState.REPLACING_WAITING
DRAINING = MemberState.DRAINING

ATTEMPT = MemberEvent.ATTEMPT
READY = MemberEvent.READY
RETRY = MemberEvent.RETRY
LOST = MemberEvent.LOST
RETIRE = MemberEvent.RETIRE
DRAIN = MemberEvent.DRAIN
GRACE_OVER = MemberEvent.GRACE_OVER
STOP = MemberEvent.STOP

#: The old connection still serves in these (see ``retire``).
REPLACING_STATES = (REPLACING, REPLACING_CONNECTING, REPLACING_WAITING)

TABLE: Table[MemberState, MemberEvent] = Table("member", {
    # Connecting and reconnecting (ClientService's loop).
    (STOPPED, ATTEMPT): (CONNECTING, "_attempt_started"),
    (WAITING, ATTEMPT): (CONNECTING, "_attempt_started"),
    (CONNECTING, READY): (CONNECTED, "_serve"),
    (CONNECTING, RETRY): (WAITING, "_schedule_retry"),
    (CONNECTED, LOST): (WAITING, "_connection_lost"),
    (WAITING, RETRY): (WAITING, "_schedule_retry"),  # right after LOST
    # Moving: the old connection serves until the new one is ready.
    (CONNECTED, RETIRE): (REPLACING, "_replace"),
    (REPLACING, RETRY): (REPLACING_WAITING, "_retry_at_once"),
    (REPLACING_WAITING, ATTEMPT): (REPLACING_CONNECTING, "_attempt_started"),
    (REPLACING_CONNECTING, RETRY): (REPLACING_WAITING, "_schedule_retry"),
    (REPLACING_CONNECTING, READY): (CONNECTED, "_serve_instead"),
    (REPLACING_CONNECTING, LOST): (CONNECTING, "_old_connection_lost"),
    (REPLACING_WAITING, LOST): (WAITING, "_old_connection_lost"),
    (REPLACING_CONNECTING, RETIRE): (REPLACING_CONNECTING, "_refuse_move"),
    (REPLACING_WAITING, RETIRE): (REPLACING_WAITING, "_refuse_move"),
    # Draining (shutdown).
    (CONNECTING, DRAIN): (DRAINING, "_drain"),
    (WAITING, DRAIN): (DRAINING, "_drain"),
    (CONNECTED, DRAIN): (DRAINING, "_drain"),
    (REPLACING_CONNECTING, DRAIN): (DRAINING, "_drain"),  # the successor is not wanted
    (REPLACING_WAITING, DRAIN): (DRAINING, "_drain"),
    (DRAINING, DRAIN): (DRAINING, "_drained_when"),
    (DRAINING, ATTEMPT): (DRAINING, "_attempt_started"),  # scheduled before the drain
    (DRAINING, READY): (DRAINING, "_refuse_late"),
    (DRAINING, RETRY): (DRAINING, "_hold_retries"),
    (DRAINING, LOST): (DRAINING, "_drained"),
    (DRAINING, GRACE_OVER): (DRAINING, "_abort_all"),
    # Stopping.
    (STOPPED, STOP): (STOPPED, "_stop"),
    (CONNECTING, STOP): (STOPPED, "_stop"),
    (WAITING, STOP): (STOPPED, "_stop"),
    (CONNECTED, STOP): (STOPPED, "_stop"),
    (REPLACING_CONNECTING, STOP): (STOPPED, "_stop"),  # closes the old one too
    (REPLACING_WAITING, STOP): (STOPPED, "_stop"),
    (DRAINING, STOP): (STOPPED, "_stop"),
    (STOPPED, LOST): (STOPPED, "_closed_by_stop"),
    (STOPPED, DRAIN): (STOPPED, "_drained_when"),  # never started: nothing to drain
    (STOPPED, GRACE_OVER): (STOPPED, "_abort_all"),
})

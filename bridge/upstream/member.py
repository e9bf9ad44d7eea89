"""One pool member: a self-healing connection to the upstream.

Twisted's ClientService keeps the connection (reconnect loop, backoff); this
class adds what the HTTP side needs to decide synchronously: the ready
protocol that takes work or None, the state, when the next attempt is due,
and counters.  Its state is one attribute moved by the table of
:mod:`bridge.upstream.member_states`; the methods below that take part in it
fire its events, and the table's actions follow them.

Each attempt goes to the address the member's group chooses
(:mod:`bridge.upstream.group`), which hears how it went.  A member can also
*move* (failback, rebalance, ``max_connection_age``): a new connection is made
at once, to the address the group chooses then, while the old one still
serves; once the new one is ready, the old one takes no more work and drains
in the background as on shutdown (half-closed, replies still delivered; see
:mod:`bridge.upstream.departures`).  So a member of a pool of one moves
without a moment of 503s.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.application.internet import ClientService
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from bridge.config import Config
from bridge.upstream import member_states as states
from bridge.upstream.backoff import Backoff
from bridge.upstream.connector import Connector, Guard
from bridge.upstream.departures import Departures
from bridge.upstream.fence import Fence
from bridge.upstream.group import AddressGroup
from bridge.upstream.handshake import Handshake, HandshakeError
from bridge.upstream.heartbeat import Heartbeat
from bridge.upstream.machine import StateMachine
from bridge.upstream.member_states import (
    CONNECTING,
    REPLACING_STATES,
    REPLACING_WAITING,
    STOPPED,
    WAITING,
)
from bridge.upstream.protocol import Counters, UpstreamProtocol
from bridge.upstream.replies.frames import Frame, Framing
from bridge.upstream.resolution import Target

#: (kind, member name, frame, line number of the /send line it answers or None)
MemberListener = Callable[[str, str, Frame, "int | None"], None]

POOL = "pool"  # a member that takes requests
SUBSCRIBER = "subscriber"  # the events_subscribe connection

#: max_connection_age is shortened by up to this fraction, at random, so that
#: connections made together are not all replaced together.
AGE_JITTER = 0.1

#: While draining, ClientService's next attempt waits at least this long
#: (stopService cancels it).
HOLD = 3600.0


class NotWantedError(Exception):
    """prepareConnection's answer for a connection ready after the drain
    began: ClientService counts it as a failed attempt."""


class _ProtocolFactory(Factory):
    noisy = False  # no "Starting factory" on every reconnect

    def __init__(self, member: UpstreamMember) -> None:
        self._member = member

    def buildProtocol(self, addr: Any) -> UpstreamProtocol:
        return self._member.new_protocol()


class UpstreamMember(StateMachine):
    """Keeps one connection; ``protocol`` is set only while it takes work."""

    log = Logger()
    _table = states.TABLE

    def __init__(
        self,
        name: str,
        config: Config,
        clock: IReactorTime,
        group: AddressGroup,
        on_line: MemberListener,
        backoff: Backoff,
        on_give_up: Callable[[str], None] | None = None,
        *,
        framing: Framing,
        fence: Fence | None = None,
        role: str = POOL,
        is_error: Callable[[Frame], bool] | None = None,
        index: int = 0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._state = STOPPED
        self.name = name
        self.role = role
        self.index = index
        self.balanced = role == POOL
        self._framing = framing
        self._fence = fence
        self._is_error = is_error
        self.config = config
        self._clock = clock
        self._on_line = on_line
        self._backoff = backoff
        self._on_give_up = on_give_up
        self.counters = Counters()
        #: The connection that takes work, or None: what pool.pick() reads,
        #: once per member and request.  Cleared as soon as that connection
        #: stops taking work (drained, closing, lost).
        self.protocol: UpstreamProtocol | None = None
        #: The ready connection the member holds: the one serving, while
        #: moving the old one (still serving), while draining the drained one.
        self._connection: UpstreamProtocol | None = None
        self._guard: Guard | None = None  # the guard of _connection
        self.connected_since: float | None = None
        self.attempts_since_success = 0
        self.ever_connected = False
        self.current_delay: float | None = None
        self.retry_at: float | None = None
        self.last_error: str | None = None
        #: The level of the next "next attempt in" line (warn after a handshake failed).
        self._retry_level = LogLevel.info
        #: Entries of ClientService's count of failed attempts that were no
        #: failed attempt: a move (retire() told ClientService the connection
        #: ended), or the loss of a connection that had been up a while (the
        #: first retry after it is at once).
        self._uncounted = 0
        self._attempt: UpstreamProtocol | None = None
        self._attempt_guard: Guard | None = None
        self._jitter = jitter
        self._group = group
        #: The address connected to or being tried; before the first attempt,
        #: the only one of a single upstream.
        order = group.order()
        self.address: str | None = order[0] if len(order) == 1 else None
        self._attempt_address: str | None = None
        self._attempt_started_at = 0.0
        self._connected_address: str | None = None  # where the last ready connection was
        self._age_timer: IDelayedCall | None = None
        self._departures = Departures(clock, config.stale_timeout, name)
        self._handshake = Handshake(
            config.handshake, config.handshake_expect, config.handshake_timeout,
            config.delimiter_bytes, config.greeting_expect,
        )
        self.service = ClientService(
            Connector(lambda: self._group.choose(self), clock, config.connect_timeout, self,
                      group.label),
            _ProtocolFactory(self),
            retryPolicy=self._next_delay,
            clock=clock,
            prepareConnection=self._prepare,
        )
        self.service.setName(f"upstream-{name}")

    # -- what the pool and the group tell it --------------------------------------

    def start(self) -> None:
        self.service.startService()

    def stop(self) -> Deferred[None]:
        stopped: Deferred[None] = self._fire(states.STOP)
        return stopped

    def drain(self) -> Deferred[None]:
        """Stop taking work on this member and half-close its connection
        (and wait for connections it moved away from to finish draining)."""
        drained: Deferred[None] = self._fire(states.DRAIN)
        return drained

    def abort(self) -> None:
        """Grace is over: close whatever is left at once."""
        self._fire(states.GRACE_OVER)

    def retire(self, why: str) -> bool:
        """Move to a new connection, made at once to the address the group
        chooses then; this one serves until the new one is ready, then drains
        (:mod:`bridge.upstream.departures`).  False when no connection takes
        work, or a move is under way."""
        if self.protocol is None:
            return False  # nothing serves: nothing to move
        moved: bool = self._fire(states.RETIRE, why)
        return moved

    @property
    def connected(self) -> bool:
        """A ready connection that takes work (what the group counts)."""
        return self.protocol is not None

    @property
    def state(self) -> str:
        """What /status shows: stopped, connecting, waiting, connected, draining."""
        return self._state.shown

    def new_protocol(self) -> UpstreamProtocol:
        config = self.config
        protocol = UpstreamProtocol(
            clock=self._clock,
            counters=self.counters,
            stale_timeout=config.stale_timeout,
            on_frame=self._frame_from_upstream,
            framing=self._framing,
            fence=self._fence,
            is_error=self._is_error,
            name=self.name,
            write_high_water=config.write_high_water,
            write_low_water=config.write_low_water,
        )
        if self.role == SUBSCRIBER:
            protocol.unsolicited_kind = "message"
        return protocol

    def _frame_from_upstream(self, kind: str, frame: Frame, line: int | None) -> None:
        self._on_line(kind, self.name, frame, line)

    # -- AttemptObserver (called by the Connector) ------------------------------

    def attempt_started(self) -> None:
        self._fire(states.ATTEMPT)

    def target_chosen(self, target: Target) -> None:
        self._attempt_address = target.name
        if self._state not in REPLACING_STATES:
            self.address = target.name  # while moving, the old address still serves
        self.log.info(
            "upstream {member}: connecting to {address} (attempt {attempt})",
            member=self.name, address=target.name, attempt=self.attempts_since_success,
        )

    def attempt_failed(self, reason: str, cancelled: bool) -> None:
        self.last_error = reason
        if not cancelled:
            self._group.attempt_failed(self, self._attempt_address, reason,
                                       self._attempt_started_at)

    def protocol_built(self, protocol: UpstreamProtocol, guard: Guard) -> None:
        self._attempt = protocol
        self._attempt_guard = guard

    # -- ClientService hooks ----------------------------------------------------

    def _prepare(self, proxy: object) -> Deferred[None] | None:
        protocol, guard = self._attempt, self._attempt_guard
        assert protocol is not None and guard is not None
        if not self._handshake:
            self._fire(states.READY, protocol, guard)
            return None
        done = self._handshake.run(protocol)

        def accepted(_: None) -> None:
            self._fire(states.READY, protocol, guard)

        def rejected(failure: Failure) -> Failure:
            self.counters.handshake_failures += 1
            if failure.check(HandshakeError):
                self.last_error = str(failure.value)
            else:
                self.last_error = f"handshake interrupted: {failure.getErrorMessage()}"
            self._retry_level = LogLevel.warn  # the retry line says why, at warn level
            protocol.abort("handshake failed", quiet=True)
            if not failure.check(CancelledError):
                self._group.attempt_failed(self, self._attempt_address, self.last_error,
                                           self._attempt_started_at)
            return failure

        done.addCallbacks(accepted, rejected)
        return done

    def _next_delay(self, failed_attempts: int) -> float:
        delay: float = self._fire(states.RETRY, failed_attempts)
        return delay

    def _heard_lost(self, protocol: UpstreamProtocol, reason: Failure) -> None:
        if protocol is self._connection:
            self._fire(states.LOST, protocol, reason)
        # Otherwise the member moved away from it: departures hear of it.

    def _stopped_taking_work(self, protocol: UpstreamProtocol) -> None:
        if self.protocol is protocol:
            self.protocol = None

    # -- the actions of the table (member_states) ----------------------------------

    def _attempt_started(self) -> None:
        self.counters.attempts += 1
        self.attempts_since_success += 1
        self.retry_at = None
        self._attempt_address = None
        self._attempt_started_at = self._clock.seconds()

    def _serve(self, protocol: UpstreamProtocol, guard: Guard) -> None:
        guard.attach()
        protocol.accept()
        protocol.on_lost(lambda reason: self._heard_lost(protocol, reason))
        protocol.on_closing(lambda: self._stopped_taking_work(protocol))
        self.protocol = self._connection = protocol
        self._guard = guard
        self._uncounted = 0
        self.connected_since = self._clock.seconds()
        self.attempts_since_success = 0
        self.ever_connected = True
        self.current_delay = None
        self.retry_at = None
        self.counters.connects += 1
        address = self._attempt_address or self._group.label
        self.address = address
        previous, self._connected_address = self._connected_address, address
        self.log.info(
            "upstream {member}: connected to {address}{handshake}{note}",
            member=self.name, address=address,
            handshake=self._handshake.accepted_note(),
            note=self._group.connect_note(previous, address),
        )
        config = self.config
        if config.max_connection_age is not None and self.role == POOL:
            age = config.max_connection_age * (1 - AGE_JITTER * self._jitter())
            self._age_timer = self._clock.callLater(age, self._aged, protocol)
        if self.role == SUBSCRIBER:
            lines = config.events_subscribe
            protocol.write_lines(
                b"".join(line.encode("utf-8") + config.delimiter_bytes for line in lines),
                len(lines),
            )
        elif config.heartbeat_interval is not None:
            Heartbeat(
                protocol, self._clock, (config.heartbeat_line or "PING").encode("utf-8")
                + config.delimiter_bytes, config.heartbeat_interval,
                config.heartbeat_timeout, config.heartbeat_expect,
            ).start()
        # Last: the group may move members (this one too) when it hears of it.
        self._group.connected(self, address)

    def _serve_instead(self, protocol: UpstreamProtocol, guard: Guard) -> None:
        """The new connection of a move is ready: the old one takes no more work."""
        old = self._connection
        assert old is not None
        self.protocol = self._connection = None
        self._departures.add(old, self._connected_address)
        self._serve(protocol, guard)

    def _refuse_late(self, protocol: UpstreamProtocol, guard: Guard) -> None:
        """Connected (or its handshake passed) after the drain began: nothing
        was written on it; close it instead of taking work."""
        self.log.info("upstream {member}: connected after the drain began; closed unused",
                      member=self.name)
        protocol.close()
        raise NotWantedError(f"upstream {self.name} is draining")

    def _backoff_delay(self, failed_attempts: int) -> tuple[int, float]:
        """(failed attempts, our delay) for ClientService's count."""
        failures = failed_attempts - self._uncounted
        if failures == 0:  # the loss of a connection that had been up a while
            return failures, self._backoff.at_once()
        return failures, self._backoff(failures)

    def _schedule_retry(self, failed_attempts: int) -> float:
        failures, delay = self._backoff_delay(failed_attempts)
        delay = self._group.retry_delay(self, delay)
        self.current_delay = delay
        self.retry_at = self._clock.seconds() + delay
        if self._gave_up(failures):
            return delay
        serving = ""
        if self._state is REPLACING_WAITING:
            serving = f" (the connection to {self._connected_address} still serves)"
        level, self._retry_level = self._retry_level, LogLevel.info
        self.log.emit(
            level, "upstream {member}: {error}; next attempt in {delay:.3g} s{serving}",
            member=self.name, error=self.last_error or "not connected", delay=delay,
            serving=serving,
        )
        return delay

    def _retry_at_once(self, failed_attempts: int) -> float:
        return 0.0  # retire() detached the connection: the new one is made at once

    def _hold_retries(self, failed_attempts: int) -> float:
        # A drained connection was closed by the server, or an attempt made
        # before the drain ended: no new one while the other members drain.
        failures, delay = self._backoff_delay(failed_attempts)
        self.current_delay = delay
        self.retry_at = self._clock.seconds() + delay
        self._gave_up(failures)
        return max(delay, HOLD)

    def _gave_up(self, failures: int) -> bool:
        limit = self.config.startup_max_attempts
        if not limit or self.ever_connected or failures < limit or self._on_give_up is None:
            return False
        self._on_give_up(
            f"could not connect to {self._group.label} after {failures} attempts "
            f"(startup_max_attempts); last error: {self.last_error}"
        )
        return True

    def _forget(self, protocol: UpstreamProtocol, reason: Failure) -> None:
        """What every end of the connection the member holds does."""
        if self.protocol is protocol:
            self.protocol = None
        self._connection = self._guard = None
        self._cancel_age_timer()
        self.connected_since = None
        self.counters.disconnects += 1
        address = self._connected_address or self._group.label
        if protocol.close_reason is not None:
            self.last_error = f"closed by the bridge: {protocol.close_reason}"
        elif reason.check(ConnectionDone):
            self.last_error = f"{address} closed the connection"
        elif reason.check(ConnectionLost):
            self.last_error = f"the connection to {address} was lost"
        else:
            self.last_error = f"connection lost: {reason.getErrorMessage()}"

    def _connection_lost(self, protocol: UpstreamProtocol, reason: Failure) -> None:
        self._forget(protocol, reason)
        # A connection that had been up a while reconnects at once: the
        # upstream probably restarted (backoff starts with the next failure).
        connected_for = self._clock.seconds() - protocol.connected_at
        self._uncounted = int(connected_for >= max(1.0, self.config.backoff_initial))
        self._report_loss(protocol)

    def _old_connection_lost(self, protocol: UpstreamProtocol, reason: Failure) -> None:
        # Lost while its successor was on the way: ClientService, told at
        # retire(), is already making that one; the member just waits.
        # ClientService's count still holds the move (_uncounted).
        self._forget(protocol, reason)
        self._report_loss(protocol)

    def _report_loss(self, protocol: UpstreamProtocol) -> None:
        # At info level the retry line that follows carries this reason.
        self.log.debug("upstream {member}: {error}", member=self.name, error=self.last_error)
        # Closed by the bridge for misbehaving (out of step, no heartbeat
        # reply): the address is at fault, not just this connection.
        self._group.lost(self, self._connected_address, protocol.close_reason,
                         protocol.connected_at)

    def _drained(self, protocol: UpstreamProtocol, reason: Failure) -> None:
        self._forget(protocol, reason)
        self.log.info("upstream {member}: drained and closed", member=self.name)
        self._group.lost(self, self._connected_address, None, protocol.connected_at)

    def _closed_by_stop(self, protocol: UpstreamProtocol, reason: Failure) -> None:
        self._forget(protocol, reason)
        self._group.lost(self, self._connected_address, None, protocol.connected_at)

    def _replace(self, why: str) -> bool:
        self._cancel_age_timer()
        self.log.info(
            "upstream {member}: replacing its connection to {address} ({why}); it serves "
            "until the new one is ready", member=self.name, address=self._connected_address,
            why=why,
        )
        self._uncounted = 1
        assert self._guard is not None
        self._guard.detach()  # ClientService asks for its delay now (none), then connects
        return True

    def _refuse_move(self, why: str) -> bool:
        return False  # a move is under way

    def _drain(self) -> Deferred[None]:
        self._cancel_age_timer()
        self.protocol = None
        connection = self._connection
        if connection is not None:
            self.log.info(
                "upstream {member}: flushing {unsent} bytes and closing the write side",
                member=self.name, unsent=connection.unsent(),
            )
            connection.drain()
        return self._drained_when()

    def _drained_when(self) -> Deferred[None]:
        """Fires once the connection it holds and those it moved away from closed."""
        waits = [self._departures.wait()]
        if self._connection is not None:
            waits.append(self._connection.when_closed())
        done: Deferred[None] = Deferred()
        gatherResults(waits).addCallback(lambda _: done.callback(None))
        return done

    def _abort_all(self) -> None:
        if self._connection is not None:
            self._connection.abort("shutdown_grace is over")
        self._departures.abort_all("shutdown_grace is over")

    def _stop(self) -> Deferred[None]:
        self._cancel_age_timer()
        stopped: Deferred[None] = self.service.stopService()
        # ClientService closes the connection it counts; not the old one of a
        # move (detached), nor those moved away from.
        if self._connection is not None:
            self._connection.close()
        self._departures.close_all()
        return stopped

    # -- connection age ---------------------------------------------------------------

    def _aged(self, protocol: UpstreamProtocol) -> None:
        self._age_timer = None
        if self.protocol is protocol:
            self.retire(f"older than max_connection_age, {self.config.max_connection_age:g} s")

    def _cancel_age_timer(self) -> None:
        if self._age_timer is not None and self._age_timer.active():
            self._age_timer.cancel()
        self._age_timer = None

    # -- what the HTTP side asks ----------------------------------------------

    def retry_in(self) -> float | None:
        """Seconds until the next connection attempt (0 while connecting)."""
        if self._state is WAITING and self.retry_at is not None:
            return max(0.0, self.retry_at - self._clock.seconds())
        if self._state is CONNECTING:
            return 0.0
        return None

    def why_not_connected(self) -> str:
        """Why there is no usable connection, for a 503's message."""
        if self._state is CONNECTING:
            reason = "connecting now"
            if self.last_error:
                reason = f"{self.last_error}; connecting again now"
            return reason
        retry_in = self.retry_in()
        if self._state is WAITING and retry_in is not None:
            return f"{self.last_error or 'not connected'}; next attempt in {retry_in:.1f} s"
        return self.state

    def status(self) -> dict[str, object]:
        now = self._clock.seconds()
        protocol = self.protocol
        return {
            "name": self.name,
            "state": self.state,
            "address": self.address,
            "connected_since": self.connected_since,
            "connected_for": None if self.connected_since is None
            else round(now - self.connected_since, 3),
            "attempts_since_success": self.attempts_since_success,
            "retry_delay": None if self.current_delay is None else round(self.current_delay, 3),
            "retry_in": None if self.retry_in() is None else round(self.retry_in() or 0.0, 3),
            "last_error": self.last_error,
            "pending": protocol.pending if protocol is not None else 0,
            "waiting_for_late_replies": protocol.suspect if protocol is not None else False,
        }

"""One pool member: a self-healing connection to the upstream.

Twisted's ClientService keeps the connection (reconnect loop, backoff); this
class adds what the HTTP side needs to decide synchronously: the live, ready
protocol or None, the state, when the next attempt is due, and counters.

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
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from bridge.config import Config
from bridge.errors import NotConnectedError
from bridge.upstream.backoff import Backoff
from bridge.upstream.connector import Connector, Guard
from bridge.upstream.departures import Departures
from bridge.upstream.fence import Fence
from bridge.upstream.group import AddressGroup
from bridge.upstream.handshake import Handshake, HandshakeError
from bridge.upstream.heartbeat import Heartbeat
from bridge.upstream.protocol import Counters, UpstreamProtocol
from bridge.upstream.replies.frames import Frame, Framing
from bridge.upstream.resolution import Target

CONNECTING = "connecting"
CONNECTED = "connected"
WAITING = "waiting"
STOPPED = "stopped"
DRAINING = "draining"

#: (kind, member name, frame, line number of the /send line it answers or None)
MemberListener = Callable[[str, str, Frame, "int | None"], None]

POOL = "pool"  # a member that takes requests
SUBSCRIBER = "subscriber"  # the events_subscribe connection

#: max_connection_age is shortened by up to this fraction, at random, so that
#: connections made together are not all replaced together.
AGE_JITTER = 0.1


class _ProtocolFactory(Factory):
    noisy = False  # no "Starting factory" on every reconnect

    def __init__(self, member: UpstreamMember) -> None:
        self._member = member

    def buildProtocol(self, addr: Any) -> UpstreamProtocol:
        return self._member.new_protocol()


class UpstreamMember:
    """Keeps one connection; ``protocol`` is set only while it is usable."""

    log = Logger()

    def __init__(
        self,
        name: str,
        config: Config,
        clock: IReactorTime,
        endpoint: IStreamClientEndpoint | None,
        on_line: MemberListener,
        backoff: Backoff,
        on_give_up: Callable[[str], None] | None = None,
        *,
        framing: Framing | None = None,
        fence: Fence | None = None,
        role: str = POOL,
        is_error: Callable[[Frame], bool] | None = None,
        group: AddressGroup | None = None,
        index: int = 0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
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
        self.state = STOPPED
        self.protocol: UpstreamProtocol | None = None
        self.connected_since: float | None = None
        self.attempts_since_success = 0
        self.ever_connected = False
        self.current_delay: float | None = None
        self.retry_at: float | None = None
        self.last_error: str | None = None
        self._attempt: UpstreamProtocol | None = None
        self._attempt_guard: Guard | None = None
        self._guard: Guard | None = None
        self._reconnect_at_once = False
        self._handshake_failed = False
        self._jitter = jitter
        if group is None:
            assert endpoint is not None
            group = AddressGroup.single(config.upstream, endpoint, clock)
            group.add(self)
        self._group = group
        #: The address connected to or being tried; before the first attempt,
        #: the only one of a single upstream.
        order = group.order()
        self.address: str | None = order[0] if len(order) == 1 else None
        self._attempt_address: str | None = None
        self._attempt_started_at = 0.0
        self._connected_address: str | None = None  # where the last ready connection was
        #: While moving: the old connection, still serving until the new one is ready.
        self._replacing: UpstreamProtocol | None = None
        self._detaching = False  # retire() is telling ClientService to connect anew
        self._detached = False  # ClientService counts that as a failed attempt, until ready
        self._attempting = False  # a connection attempt (or its handshake) is under way
        self._draining: UpstreamProtocol | None = None  # the connection drain() closes
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

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self.service.startService()

    def stop(self) -> Deferred[None]:
        self.state = STOPPED
        self._cancel_age_timer()
        self._departures.close_all()
        replacing, self._replacing = self._replacing, None
        if replacing is not None and replacing.transport is not None and not replacing.lost:
            replacing.transport.loseConnection()  # no longer ClientService's to close
        stopped: Deferred[None] = self.service.stopService()
        return stopped

    @property
    def connected(self) -> bool:
        """A ready connection that takes work (what the group counts)."""
        return self.protocol is not None

    def new_protocol(self) -> UpstreamProtocol:
        config = self.config
        protocol = UpstreamProtocol(
            clock=self._clock,
            counters=self.counters,
            max_line_bytes=config.max_line_bytes,
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
        # DRAINING: a retry timer set before the drain began; a member moving
        # stays connected through its old connection meanwhile.
        if self.state != DRAINING and self._replacing is None:
            self.state = CONNECTING
        self._attempting = True
        self.counters.attempts += 1
        self.attempts_since_success += 1
        self.retry_at = None
        self._attempt_address = None
        self._attempt_started_at = self._clock.seconds()

    def target_chosen(self, target: Target) -> None:
        self._attempt_address = target.name
        if self._replacing is None:
            self.address = target.name
        self.log.info(
            "upstream {member}: connecting to {address} (attempt {attempt})",
            member=self.name, address=target.name, attempt=self.attempts_since_success,
        )

    def attempt_failed(self, reason: str, cancelled: bool = False) -> None:
        self.last_error = reason
        self._attempting = False
        if not cancelled:
            self._group.attempt_failed(self, self._attempt_address, reason,
                                       self._attempt_started_at)

    def protocol_built(self, protocol: UpstreamProtocol, guard: Guard) -> None:
        self._attempt = protocol
        self._attempt_guard = guard

    # -- ClientService hooks ----------------------------------------------------

    def _prepare(self, proxy: object) -> Deferred[None] | None:
        protocol = self._attempt
        assert protocol is not None
        if not self._handshake:
            self._ready(protocol)
            return None
        done = self._handshake.run(protocol)

        def accepted(_: None) -> None:
            self._ready(protocol)

        def rejected(failure: Failure) -> Failure:
            self._attempting = False
            self.counters.handshake_failures += 1
            if failure.check(HandshakeError):
                self.last_error = str(failure.value)
            else:
                self.last_error = f"handshake interrupted: {failure.getErrorMessage()}"
            self._handshake_failed = True  # the retry line says why, at warn level
            if not protocol.lost:
                protocol.abort("handshake failed", quiet=True)
            if not failure.check(CancelledError):
                self._group.attempt_failed(self, self._attempt_address, self.last_error,
                                           self._attempt_started_at)
            return failure

        done.addCallbacks(accepted, rejected)
        return done

    def _ready(self, protocol: UpstreamProtocol) -> None:
        self._attempting = False
        protocol.ready = True
        protocol.lost_listeners.append(lambda reason: self._lost(protocol, reason))
        if self.state == DRAINING:
            # Connected (or its handshake finished) after the drain began:
            # nothing was written on it; close it instead of taking work.
            assert protocol.transport is not None
            protocol.transport.loseConnection()
            return
        self._detached = False
        old, self._replacing = self._replacing, None
        if old is not None:
            # The new connection is ready: the old one takes no more work.
            self._departures.add(old, self._connected_address)
        self.protocol = protocol
        self._guard = self._attempt_guard
        self._reconnect_at_once = False
        self.state = CONNECTED
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

    def _lost(self, protocol: UpstreamProtocol, reason: Failure) -> None:
        if protocol in self._departures:
            return  # moved away from: see bridge.upstream.departures
        if self.protocol is protocol:
            self.protocol = None
        replaced = protocol is self._replacing
        if replaced:
            # Lost while its successor was on the way: ClientService, told at
            # retire(), is already making that one; the member just waits.
            self._replacing = None
            if self.state == CONNECTED:
                self.state = CONNECTING if self._attempting else WAITING
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
        # A connection that had been up a while reconnects at once: the
        # upstream probably restarted (backoff starts with the next failure).
        connected_for = self._clock.seconds() - protocol.connected_at
        self._reconnect_at_once = (not replaced
                                   and connected_for >= max(1.0, self.config.backoff_initial))
        if self.state == DRAINING:
            self.log.info("upstream {member}: drained and closed", member=self.name)
        elif self.state != STOPPED:
            # At info level the retry line that follows carries this reason.
            self.log.debug(
                "upstream {member}: {error}", member=self.name, error=self.last_error
            )
        # Closed by the bridge for misbehaving (out of step, no heartbeat
        # reply): the address is at fault, not just this connection.
        fault = protocol.close_reason if self.state not in (STOPPED, DRAINING) else None
        self._group.lost(self, self._connected_address, fault, protocol.connected_at)

    # -- moving to a new connection ------------------------------------------------

    def retire(self, why: str) -> bool:
        """Move to a new connection, made at once to the address the group
        chooses then; this one serves until the new one is ready, then drains
        (:mod:`bridge.upstream.departures`).  False when there is no ready
        connection to move, or a move is under way."""
        protocol, guard = self.protocol, self._guard
        if (protocol is None or guard is None or self.state != CONNECTED
                or self._replacing is not None):
            return False
        self._replacing = protocol
        self._cancel_age_timer()
        self.log.info(
            "upstream {member}: replacing its connection to {address} ({why}); it serves "
            "until the new one is ready", member=self.name, address=self._connected_address,
            why=why,
        )
        self._detaching = self._detached = True
        guard.detach()  # ClientService connects anew, at once (see _next_delay)
        return True

    def _aged(self, protocol: UpstreamProtocol) -> None:
        self._age_timer = None
        if self.protocol is protocol:
            self.retire(f"older than max_connection_age, {self.config.max_connection_age:g} s")

    def _cancel_age_timer(self) -> None:
        if self._age_timer is not None and self._age_timer.active():
            self._age_timer.cancel()
        self._age_timer = None

    # -- shutdown -------------------------------------------------------------------

    def drain(self) -> Deferred[None]:
        """Stop taking work on this member and half-close its connection
        (and wait for connections it moved away from to finish draining)."""
        protocol = self.protocol
        self.protocol = None
        self._replacing = None  # it drains like any other, and its successor is not wanted
        self._draining = protocol
        self.state = DRAINING
        self._cancel_age_timer()
        waits = [self._departures.wait()]
        if protocol is not None:
            self.log.info(
                "upstream {member}: flushing {unsent} bytes and closing the write side",
                member=self.name, unsent=protocol.unsent(),
            )
            waits.append(protocol.drain())
        done: Deferred[None] = Deferred()
        gatherResults(waits).addCallback(lambda _: done.callback(None))
        return done

    def abort(self) -> None:
        """Grace is over: close whatever is left at once."""
        for protocol in (self._draining, self._attempt):
            if protocol is not None and not protocol.lost and protocol.ready:
                protocol.abort("shutdown_grace is over")
        self._departures.abort_all("shutdown_grace is over")

    def _next_delay(self, failed_attempts: int) -> float:
        if self._detaching:
            # retire() detached the connection: the new one is made at once.
            self._detaching = False
            return 0.0
        if self._detached:
            failed_attempts -= 1  # the move was no failure
        if self._reconnect_at_once:
            # failed_attempts counts the lost connection as the first failure.
            delay = (self._backoff.at_once() if failed_attempts == 1
                     else self._backoff(failed_attempts - 1))
        else:
            delay = self._backoff(failed_attempts)
        if self.state not in (STOPPED, DRAINING):
            delay = self._group.retry_delay(self, delay)
        self.current_delay = delay
        self.retry_at = self._clock.seconds() + delay
        limit = self.config.startup_max_attempts
        if limit and not self.ever_connected and failed_attempts >= limit:
            if self._on_give_up is not None:
                self._on_give_up(
                    f"could not connect to {self._group.label} after {failed_attempts} "
                    f"attempts (startup_max_attempts); last error: {self.last_error}"
                )
                return delay
        if self.state == DRAINING:
            # A drained connection was closed by the server: no new one while
            # the other members drain; stopService cancels this retry.
            return max(delay, 3600.0)
        if self.state not in (STOPPED, DRAINING):
            serving = ""
            if self._replacing is not None:
                serving = f" (the connection to {self._connected_address} still serves)"
            else:
                self.state = WAITING
            level = LogLevel.warn if self._handshake_failed else LogLevel.info
            self._handshake_failed = False
            self.log.emit(
                level, "upstream {member}: {error}; next attempt in {delay:.3g} s{serving}",
                member=self.name, error=self.last_error or "not connected", delay=delay,
                serving=serving,
            )
        return delay

    # -- what the HTTP side asks ----------------------------------------------

    def retry_in(self) -> float | None:
        """Seconds until the next connection attempt (0 while connecting)."""
        if self.state == WAITING and self.retry_at is not None:
            return max(0.0, self.retry_at - self._clock.seconds())
        if self.state == CONNECTING:
            return 0.0
        return None

    def why_not_connected(self) -> str:
        """Why there is no usable connection, for a 503's message."""
        if self.state == CONNECTING:
            reason = "connecting now"
            if self.last_error:
                reason = f"{self.last_error}; connecting again now"
            return reason
        retry_in = self.retry_in()
        if self.state == WAITING and retry_in is not None:
            return f"{self.last_error or 'not connected'}; next attempt in {retry_in:.1f} s"
        return self.state

    def live(self) -> UpstreamProtocol:
        """The usable protocol, or NotConnectedError at once."""
        protocol = self.protocol
        if protocol is None:
            raise NotConnectedError(
                f"the upstream {self.address or self._group.label} is not connected "
                f"({self.why_not_connected()})",
                self.retry_in(),
            )
        return protocol

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

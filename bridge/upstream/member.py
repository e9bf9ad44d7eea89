"""One pool member: a self-healing connection to the upstream.

Twisted's ClientService keeps the connection (reconnect loop, backoff); this
class adds what the HTTP side needs to decide synchronously: the live, ready
protocol or None, the state, when the next attempt is due, and counters.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.internet import ClientService
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from bridge.config import Config
from bridge.errors import NotConnectedError
from bridge.upstream.backoff import Backoff
from bridge.upstream.connector import Connector
from bridge.upstream.fence import Fence
from bridge.upstream.handshake import Handshake, HandshakeError
from bridge.upstream.heartbeat import Heartbeat
from bridge.upstream.protocol import Counters, UpstreamProtocol
from bridge.upstream.replies.frames import Frame, Framing

CONNECTING = "connecting"
CONNECTED = "connected"
WAITING = "waiting"
STOPPED = "stopped"
DRAINING = "draining"

#: (kind, member name, frame, line number of the /send line it answers or None)
MemberListener = Callable[[str, str, Frame, "int | None"], None]

POOL = "pool"  # a member that takes requests
SUBSCRIBER = "subscriber"  # the events_subscribe connection


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
        endpoint: IStreamClientEndpoint,
        on_line: MemberListener,
        backoff: Backoff,
        on_give_up: Callable[[str], None] | None = None,
        *,
        framing: Framing | None = None,
        fence: Fence | None = None,
        role: str = POOL,
        is_error: Callable[[Frame], bool] | None = None,
    ) -> None:
        self.name = name
        self.role = role
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
        self._reconnect_at_once = False
        self._handshake_failed = False
        self._handshake = Handshake(
            config.handshake, config.handshake_expect, config.handshake_timeout,
            config.delimiter_bytes, config.greeting_expect,
        )
        self.service = ClientService(
            Connector(endpoint, clock, config.connect_timeout, self, config.upstream),
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
        stopped: Deferred[None] = self.service.stopService()
        return stopped

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
        if self.state != DRAINING:  # a retry timer set before the drain began
            self.state = CONNECTING
        self.counters.attempts += 1
        self.attempts_since_success += 1
        self.retry_at = None
        self.log.info(
            "upstream {member}: connecting to {address} (attempt {attempt})",
            member=self.name, address=self.config.upstream, attempt=self.attempts_since_success,
        )

    def attempt_failed(self, reason: str) -> None:
        self.last_error = reason

    def protocol_built(self, protocol: UpstreamProtocol) -> None:
        self._attempt = protocol

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
            self.counters.handshake_failures += 1
            if failure.check(HandshakeError):
                self.last_error = str(failure.value)
            else:
                self.last_error = f"handshake interrupted: {failure.getErrorMessage()}"
            self._handshake_failed = True  # the retry line says why, at warn level
            if not protocol.lost:
                protocol.abort("handshake failed", quiet=True)
            return failure

        done.addCallbacks(accepted, rejected)
        return done

    def _ready(self, protocol: UpstreamProtocol) -> None:
        protocol.ready = True
        protocol.lost_listeners.append(lambda reason: self._lost(protocol, reason))
        if self.state == DRAINING:
            # Connected (or its handshake finished) after the drain began:
            # nothing was written on it; close it instead of taking work.
            assert protocol.transport is not None
            protocol.transport.loseConnection()
            return
        self.protocol = protocol
        self._reconnect_at_once = False
        self.state = CONNECTED
        self.connected_since = self._clock.seconds()
        self.attempts_since_success = 0
        self.ever_connected = True
        self.current_delay = None
        self.retry_at = None
        self.counters.connects += 1
        self.log.info(
            "upstream {member}: connected to {address}{handshake}",
            member=self.name, address=self.config.upstream,
            handshake=self._handshake.accepted_note(),
        )
        config = self.config
        if self.role == SUBSCRIBER:
            lines = config.events_subscribe
            protocol.write_lines(
                b"".join(line.encode("utf-8") + config.delimiter_bytes for line in lines),
                len(lines),
            )
            return
        if config.heartbeat_interval is not None:
            Heartbeat(
                protocol, self._clock, (config.heartbeat_line or "PING").encode("utf-8")
                + config.delimiter_bytes, config.heartbeat_interval,
                config.heartbeat_timeout, config.heartbeat_expect,
            ).start()

    def _lost(self, protocol: UpstreamProtocol, reason: Failure) -> None:
        if self.protocol is protocol:
            self.protocol = None
        self.connected_since = None
        self.counters.disconnects += 1
        if protocol.close_reason is not None:
            self.last_error = f"closed by the bridge: {protocol.close_reason}"
        elif reason.check(ConnectionDone):
            self.last_error = f"{self.config.upstream} closed the connection"
        elif reason.check(ConnectionLost):
            self.last_error = f"the connection to {self.config.upstream} was lost"
        else:
            self.last_error = f"connection lost: {reason.getErrorMessage()}"
        # A connection that had been up a while reconnects at once: the
        # upstream probably restarted (backoff starts with the next failure).
        connected_for = self._clock.seconds() - protocol.connected_at
        self._reconnect_at_once = connected_for >= max(1.0, self.config.backoff_initial)
        if self.state == DRAINING:
            self.log.info("upstream {member}: drained and closed", member=self.name)
        elif self.state != STOPPED:
            # At info level the retry line that follows carries this reason.
            self.log.debug(
                "upstream {member}: {error}", member=self.name, error=self.last_error
            )

    def drain(self) -> Deferred[None]:
        """Stop taking work on this member and half-close its connection."""
        protocol = self.protocol
        self.protocol = None
        self.state = DRAINING
        if protocol is None:
            done: Deferred[None] = Deferred()
            done.callback(None)
            return done
        self.log.info(
            "upstream {member}: flushing {unsent} bytes and closing the write side",
            member=self.name, unsent=protocol.unsent(),
        )
        return protocol.drain()

    def abort(self) -> None:
        """Grace is over: close whatever is left at once."""
        if self._attempt is not None and not self._attempt.lost and self._attempt.ready:
            self._attempt.abort("shutdown_grace is over")

    def _next_delay(self, failed_attempts: int) -> float:
        if self._reconnect_at_once:
            # failed_attempts counts the lost connection as the first failure.
            delay = (self._backoff.at_once() if failed_attempts == 1
                     else self._backoff(failed_attempts - 1))
        else:
            delay = self._backoff(failed_attempts)
        self.current_delay = delay
        self.retry_at = self._clock.seconds() + delay
        limit = self.config.startup_max_attempts
        if limit and not self.ever_connected and failed_attempts >= limit:
            if self._on_give_up is not None:
                self._on_give_up(
                    f"could not connect to {self.config.upstream} after {failed_attempts} "
                    f"attempts (startup_max_attempts); last error: {self.last_error}"
                )
                return delay
        if self.state == DRAINING:
            # A drained connection was closed by the server: no new one while
            # the other members drain; stopService cancels this retry.
            return max(delay, 3600.0)
        if self.state not in (STOPPED, DRAINING):
            self.state = WAITING
            level = LogLevel.warn if self._handshake_failed else LogLevel.info
            self._handshake_failed = False
            self.log.emit(
                level, "upstream {member}: {error}; next attempt in {delay:.3g} s",
                member=self.name, error=self.last_error or "not connected", delay=delay,
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
                f"the upstream {self.config.upstream} is not connected "
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

"""The line protocol spoken on one upstream connection.

It frames lines in both directions and correlates replies with requests
through a FIFO of reply slots (section 6 of the engineering guide):

* every written line owns one slot; replies fill slots in order;
* a request that timed out or was cancelled keeps its slots, and the late
  replies that fill them are discarded (published as ``late_reply``), never
  handed to the next request;
* when the oldest slot stays unanswered too long the connection is out of
  step: it is closed, and everything pending on it fails;
* lines that arrive while no slot waits are unsolicited.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from bridge.errors import ReplyTimeoutError, UpstreamLostError

_LF = b"\n"
_CR = b"\r"


@dataclass
class Counters:
    """What one pool member has done; read by /status and /metrics."""

    lines_sent: int = 0
    bytes_sent: int = 0
    lines_received: int = 0
    unsolicited: int = 0
    late_replies: int = 0
    lines_too_long: int = 0
    attempts: int = 0
    connects: int = 0
    disconnects: int = 0
    handshake_failures: int = 0
    heartbeat_failures: int = 0
    desyncs: int = 0


class LineListener(TypingProtocol):
    """Receives lines nobody asked for: ``kind`` is unsolicited or late_reply."""

    def __call__(self, kind: str, line: bytes) -> None: ...


class ReplySlot:
    """One request's claim on ``expected`` consecutive replies."""

    __slots__ = ("_timer", "abandoned", "deferred", "expected", "replies", "timeout")

    def __init__(self, expected: int, timeout: float) -> None:
        self.expected = expected
        self.replies: list[bytes] = []
        self.deferred: Deferred[list[bytes]] = Deferred(self._cancel)
        self.timeout = timeout
        self._timer: IDelayedCall | None = None
        self.abandoned = False

    def _cancel(self, deferred: Deferred[list[bytes]]) -> None:
        # The HTTP client went away: free what we hold; the slots stay queued.
        self._abandon()

    def _abandon(self) -> None:
        self.abandoned = True
        self.replies = []
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def start_timer(self, clock: IReactorTime) -> None:
        self._timer = clock.callLater(self.timeout, self._expire)

    def _expire(self) -> None:
        self._timer = None
        replies = self.replies
        self._abandon()
        self.deferred.errback(
            ReplyTimeoutError(
                # self.expected counts the replies still missing, not the total
                f"the upstream sent {len(replies)} of {len(replies) + self.expected} replies "
                f"within {self.timeout:g} s",
                replies,
            )
        )

    def fail(self, reason: Exception) -> None:
        if self.abandoned:
            return
        replies = self.replies
        self._abandon()
        if isinstance(reason, UpstreamLostError) and not reason.replies:
            reason = UpstreamLostError(reason.message, replies)
        self.deferred.errback(reason)

    def add(self, line: bytes) -> bool:
        """Take one reply; True when this slot is now complete."""
        if not self.abandoned:
            self.replies.append(line)
        self.expected -= 1
        if self.expected == 0:
            if not self.abandoned:
                if self._timer is not None and self._timer.active():
                    self._timer.cancel()
                self._timer = None
                self.abandoned = True  # done: nothing more may happen to it
                replies, self.replies = self.replies, []
                self.deferred.callback(replies)
            return True
        return False


def _innermost(transport: object) -> object:
    """The socket transport under any TLS layers."""
    for _ in range(4):
        inner = getattr(transport, "transport", None)
        if inner is None or hasattr(transport, "socket"):
            break
        transport = inner
    return transport


def unsent_bytes(transport: object) -> int:
    """Bytes written to ``transport`` and not yet handed to the kernel."""
    inner = _innermost(transport)
    buffered = getattr(inner, "dataBuffer", b"")
    offset = getattr(inner, "offset", 0)
    temporary = getattr(inner, "_tempDataLen", 0)
    try:
        return max(0, len(buffered) - offset + temporary)
    except TypeError:
        return 0


@implementer(IPushProducer)
class UpstreamProtocol(Protocol):
    """Frames lines and correlates replies on one connection.

    It is also the push producer of its transport: the transport pauses it
    when more than ``write_high_water`` bytes wait to be sent, which marks the
    connection congested until its buffer is drained below ``write_low_water``.
    """

    log = Logger()

    def __init__(
        self,
        *,
        clock: IReactorTime,
        counters: Counters,
        max_line_bytes: int,
        stale_timeout: float,
        on_line: LineListener,
        name: str = "0",
        write_high_water: int = 1024 * 1024,
        write_low_water: int = 256 * 1024,
    ) -> None:
        self._clock = clock
        self.counters = counters
        self._max_line_bytes = max_line_bytes
        self._stale_timeout = stale_timeout
        self._on_line = on_line
        self.name = name
        self._buffer = b""
        self._slots: deque[ReplySlot] = deque()
        self._pending_lines = 0
        self._stale_timer: IDelayedCall | None = None
        self.last_activity = clock.seconds()
        self.connected_at = clock.seconds()
        self.lost = False
        self.aborted = False  # abort() called; connectionLost may come later
        self.ready = False  # set once the handshake (if any) passed
        self.draining = False
        self.paused = False  # by the transport: its write buffer is full
        self.congested = False
        self._high_water = write_high_water
        self._low_water = write_low_water
        self.lost_listeners: list[Callable[[Failure], None]] = []

    # -- connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected_at = self.last_activity = self._clock.seconds()
        transport = self.transport
        inner = _innermost(transport)
        # The transport pauses us once bufferSize bytes wait (64 KiB; also its
        # recv() size, so it is not raised); congestion is then decided by
        # is_congested() against the water marks.  SEND_LIMIT caps what one
        # reactor iteration sends (128 KiB): with many bulk requests per
        # iteration it would fill the buffer even for a fast upstream.
        if getattr(inner, "bufferSize", 0) > self._high_water:
            inner.bufferSize = self._high_water  # type: ignore[attr-defined]
        if getattr(inner, "SEND_LIMIT", self._high_water) < self._high_water:
            inner.SEND_LIMIT = self._high_water  # type: ignore[attr-defined]
        register = getattr(transport, "registerProducer", None)
        if register is not None:
            register(self, True)
        keepalive = getattr(self.transport, "setTcpKeepAlive", None)
        if keepalive is not None:
            try:
                keepalive(True)
            except OSError:  # not a TCP socket (e.g. some test transports)
                pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        if reason is None:
            reason = Failure(ConnectionError("connection closed"))
        self.lost = True
        self._cancel_stale_timer()
        slots, self._slots = self._slots, deque()
        self._pending_lines = 0
        error = UpstreamLostError(
            "the upstream connection closed before every reply arrived; "
            "the lines may or may not have been processed"
        )
        for slot in slots:
            slot.fail(error)
        for listener in self.lost_listeners:
            listener(reason)

    # -- write backpressure (IPushProducer) -----------------------------------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = self.congested = False

    def stopProducing(self) -> None:
        pass

    def is_congested(self) -> bool:
        """While the transport has us paused: congested once more than
        ``write_high_water`` bytes wait, until they fall to ``write_low_water``."""
        if not self.paused:
            self.congested = False
            return False
        unsent = self.unsent()
        if self.congested:
            if unsent <= self._low_water:
                self.congested = False
        elif unsent > self._high_water:
            self.congested = True
        return self.congested

    def unsent(self) -> int:
        return unsent_bytes(self.transport) if self.transport is not None else 0

    def drain(self) -> Deferred[None]:
        """Half-close: flush what is buffered, send FIN, keep reading until
        the server closes its side.  Fires when the connection is closed."""
        closed: Deferred[None] = Deferred()
        if self.lost:
            closed.callback(None)
            return closed
        self.draining = True
        self.lost_listeners.append(lambda reason: closed.callback(None))
        transport = self.transport
        assert transport is not None
        half_close = getattr(transport, "loseWriteConnection", None)
        if half_close is not None:
            half_close()
        else:
            transport.loseConnection()
        return closed

    def abort(self, why: str) -> None:
        """Close the connection at once (RST), e.g. when out of step."""
        self.log.warn("upstream {member}: closing connection: {why}", member=self.name, why=why)
        # A TCP transport delivers connectionLost one reactor turn later and
        # drops whatever is written meanwhile: take no more work from now on.
        self.aborted = True
        transport = self.transport
        if transport is None:
            return
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()

    # -- writing ------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Requests whose reply slots are still queued (abandoned ones too)."""
        return len(self._slots)

    @property
    def pending_lines(self) -> int:
        return self._pending_lines

    def write_lines(self, payload: bytes, count: int) -> None:
        """Write ``count`` already framed lines in one write."""
        assert self.transport is not None
        self.transport.write(payload)
        self.counters.lines_sent += count
        self.counters.bytes_sent += len(payload)
        self.last_activity = self._clock.seconds()

    def expect_replies(self, count: int, timeout: float) -> Deferred[list[bytes]]:
        """Queue ``count`` reply slots for lines just written.

        The Deferred fires with the replies, or fails with
        :class:`ReplyTimeoutError` or :class:`UpstreamLostError`; cancelling it
        frees it and leaves its slots to swallow the late replies.
        """
        slot = ReplySlot(count, timeout)
        if self.lost:
            slot.fail(UpstreamLostError("the upstream connection is closed"))
            return slot.deferred
        slot.start_timer(self._clock)
        self._slots.append(slot)
        self._pending_lines += count
        if len(self._slots) == 1:
            self._start_stale_timer()
        return slot.deferred

    def request(self, payload: bytes, count: int, timeout: float) -> Deferred[list[bytes]]:
        """Write lines and wait for one reply per line."""
        self.write_lines(payload, count)
        return self.expect_replies(count, timeout)

    def discard_replies(self, count: int) -> None:
        """Reserve slots whose replies nobody wants (lines sent by /send to a
        server that answers every line)."""
        slot = ReplySlot(count, 0)
        slot.abandoned = True
        self._slots.append(slot)
        self._pending_lines += count
        if len(self._slots) == 1:
            self._start_stale_timer()

    # -- reading ------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self.last_activity = self._clock.seconds()
        buffer = self._buffer + data if self._buffer else data
        if _LF not in data:
            self._buffer = buffer
            self._check_partial_line()
            return
        lines = buffer.split(_LF)
        self._buffer = lines.pop()
        for line in lines:
            if line.endswith(_CR):
                line = line[:-1]
            if len(line) > self._max_line_bytes:
                self._line_too_long(len(line))
                return
            self.line_received(line)
            if self.lost:
                return
        self._check_partial_line()

    def _check_partial_line(self) -> None:
        if len(self._buffer) > self._max_line_bytes + 1:
            self._line_too_long(len(self._buffer))

    def _line_too_long(self, length: int) -> None:
        self.counters.lines_too_long += 1
        self._buffer = b""
        self.abort(
            f"received a line of at least {length} bytes; max_line_bytes is "
            f"{self._max_line_bytes}"
        )

    def line_received(self, line: bytes) -> None:
        self.counters.lines_received += 1
        if not self._slots:
            self.counters.unsolicited += 1
            self.log.debug(
                "upstream {member}: unsolicited line {line!r}", member=self.name, line=line
            )
            self._on_line("unsolicited", line)
            return
        slot = self._slots[0]
        late = slot.abandoned
        self._pending_lines -= 1
        if slot.expected == 1:
            # Dequeue before add() fires the caller's callbacks: they may write
            # a new request or close the connection (which empties the queue).
            self._slots.popleft()
        slot.add(line)
        if late:
            self.counters.late_replies += 1
            self.log.debug(
                "upstream {member}: late reply discarded {line!r}", member=self.name, line=line
            )
            self._on_line("late_reply", line)
        if self._slots:
            self._start_stale_timer()
        else:
            self._cancel_stale_timer()

    # -- out-of-step detection ----------------------------------------------

    def _start_stale_timer(self) -> None:
        delay = max(self._stale_timeout, self._slots[0].timeout)
        if self._stale_timer is not None and self._stale_timer.active():
            self._stale_timer.reset(delay)
        else:
            self._stale_timer = self._clock.callLater(delay, self._stale)

    def _cancel_stale_timer(self) -> None:
        if self._stale_timer is not None and self._stale_timer.active():
            self._stale_timer.cancel()
        self._stale_timer = None

    def _stale(self) -> None:
        self._stale_timer = None
        self.counters.desyncs += 1
        self.abort(
            f"the oldest awaited reply is more than {self._stale_timeout:g} s late; "
            "the connection is out of step"
        )

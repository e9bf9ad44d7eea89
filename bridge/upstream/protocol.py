"""The protocol spoken on one upstream connection.

Lines go out; the bytes that come back go through the upstream's reply
framing (:mod:`bridge.upstream.replies`) and the frames fill the connection's
FIFO of reply slots in order (section 6 of the engineering guide):

* every request that awaits replies owns one slot; frames fill slots in order;
* a request that timed out or was cancelled keeps its slot, and the late
  frames that fill it are discarded (published as ``late_reply``), never
  handed to the next request;
* when the connection is out of step (bytes the framing cannot parse, a fence
  reply where another reply was due, a slot waiting far too long) it is
  closed, and everything pending on it fails;
* frames that arrive while no slot waits, and RESP3 pushes, are unsolicited.

The connection's own life (open, ready, draining, closing, closed) is the
table of :mod:`bridge.upstream.connection_states`; the methods below that
change it only fire its events.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from bridge.errors import UpstreamLostError
from bridge.logs import LogBudget
from bridge.twisted_private import tune_send_buffer, unsent_bytes
from bridge.upstream import connection_states as states
from bridge.upstream.connection_states import CLOSED, NEW, READY
from bridge.upstream.fence import NONE, OWN, Fence
from bridge.upstream.judge import ErrorRule
from bridge.upstream.machine import StateMachine
from bridge.upstream.replies.frames import Frame, Framing, FramingError, Plan
from bridge.upstream.slots import CHECK, REQUEST, ReplySlot


@dataclass
class Counters:
    """What one pool member has done; read by /status and /metrics."""

    lines_sent: int = 0
    bytes_sent: int = 0
    frames_received: int = 0
    unsolicited: int = 0
    late_replies: int = 0
    discarded_replies: int = 0
    send_errors: int = 0
    fences: int = 0
    attempts: int = 0
    connects: int = 0
    disconnects: int = 0
    handshake_failures: int = 0
    heartbeat_failures: int = 0
    desyncs: int = 0
    #: Replies to POST /send commands (202: written to a live connection) still
    #: due when the connection ended: the upstream may or may not have
    #: processed those commands (known only when send_replies consumes replies).
    send_unconfirmed: int = 0


class FrameListener(TypingProtocol):
    """Receives frames nobody waits for.

    ``kind`` is ``unsolicited``, ``late_reply``, ``send_error`` (with the
    1-based ``line`` of the /send line it answers) or ``message`` (on the
    events_subscribe connection).
    """

    def __call__(self, kind: str, frame: Frame, line: int | None) -> None: ...


@implementer(IPushProducer)
class UpstreamProtocol(Protocol, StateMachine):
    """Writes lines and correlates reply frames on one connection.

    It is also the push producer of its transport: the transport pauses it
    when more than ``write_high_water`` bytes wait to be sent, which marks the
    connection congested until its buffer is drained below ``write_low_water``.
    """

    log = Logger()
    _table = states.TABLE

    def __init__(
        self,
        *,
        clock: IReactorTime,
        counters: Counters,
        stale_timeout: float,
        on_frame: FrameListener,
        framing: Framing,
        fence: Fence | None = None,
        is_error: Callable[[Frame], bool] | None = None,
        name: str = "0",
        write_high_water: int = 1024 * 1024,
        write_low_water: int = 256 * 1024,
    ) -> None:
        self._state = NEW
        self._clock = clock
        self.counters = counters
        self._stale_timeout = stale_timeout
        self._on_frame = on_frame
        self.framing = framing
        self._decoder = self.framing.decoder()
        self._fence = fence
        # Replies can be told apart after a timeout only when the framing
        # knows every command's count, or a fence closes each request.
        self._counts_verified = self.framing.counts_known or fence is not None
        self.is_error = is_error or ErrorRule(None)
        self.name = name
        self._slots: deque[ReplySlot] = deque()
        self._uncertain: set[ReplySlot] = set()
        self._stale_timer: IDelayedCall | None = None
        self.last_activity = clock.seconds()
        self.connected_at = clock.seconds()
        self.unsolicited_kind = "unsolicited"
        # Anyone who may POST /send can make the upstream answer errors.
        self._send_error_log = LogBudget(clock)
        self.close_reason: str | None = None  # why the bridge aborted it, if it did
        self.paused = False  # by the transport: its write buffer is full
        self.congested = False
        self._high_water = write_high_water
        self._low_water = write_low_water
        self._lost_listeners: list[Callable[[Failure], None]] = []
        self._closing_listeners: list[Callable[[], None]] = []
        self._resume_waiters: list[Callable[[], None]] = []

    # -- what the connection's owners ask and tell (the events of its table) --

    def accepts_work(self) -> bool:
        """Ready, and neither draining nor closing: requests and heartbeats
        may be written."""
        return self._state is READY

    def accept(self) -> None:
        """The greeting and handshake (if any) passed: it takes work now."""
        self._fire(states.ACCEPTED)

    def drain(self) -> None:
        """Half-close: flush what is buffered, send FIN, keep reading until
        the server closes its side (see :meth:`when_closed`)."""
        self._fire(states.DRAIN)

    def close(self) -> None:
        """Close after what was written (no reason: nobody is at fault)."""
        self._fire(states.CLOSE)

    def abort(self, why: str, quiet: bool = False) -> None:
        """Close the connection at once (RST), e.g. when out of step.
        ``quiet`` when the caller logs the reason itself."""
        self._fire(states.ABORT, why, quiet)

    def out_of_step(self, why: str) -> None:
        """The replies can no longer be matched to requests: close, so that
        everything pending fails (502) and a fresh connection is made."""
        self._fire(states.OUT_OF_STEP, why)

    def heartbeat_failed(self, why: str) -> None:
        """No heartbeat reply in time, or not the expected one."""
        self._fire(states.HEARTBEAT_FAILED, why)

    def on_lost(self, listener: Callable[[Failure], None]) -> None:
        """Call ``listener`` with the reason once the connection is lost."""
        self._lost_listeners.append(listener)

    def on_closing(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when the bridge closes or aborts the connection,
        before ``connectionLost`` (which a TCP transport delivers a turn later)."""
        self._closing_listeners.append(listener)

    def when_closed(self) -> Deferred[None]:
        """Fires once the connection is lost (at once if it is)."""
        if self._state is CLOSED:
            return succeed(None)
        closed: Deferred[None] = Deferred()
        self.on_lost(lambda reason: closed.callback(None))
        return closed

    # -- connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        self._fire(states.MADE)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if reason is None:
            reason = Failure(ConnectionError("connection closed"))
        self._fire(states.LOST, reason)

    # -- the actions of the table (connection_states) ----------------------------

    def _made(self) -> None:
        self.connected_at = self.last_activity = self._clock.seconds()
        transport = self.transport
        # Congestion is decided by is_congested() against the water marks
        # once the transport has paused us.
        tune_send_buffer(transport, self._high_water)
        register = getattr(transport, "registerProducer", None)
        if register is not None:
            register(self, True)
        keepalive = getattr(self.transport, "setTcpKeepAlive", None)
        if keepalive is not None:
            try:
                keepalive(True)
            except OSError:  # not a TCP socket (e.g. some test transports)
                pass

    def _lost(self, reason: Failure) -> None:
        self._cancel_stale_timer()
        slots, self._slots = self._slots, deque()
        self._uncertain.clear()
        if self.close_reason is not None:
            message = (f"the bridge closed the upstream connection ({self.close_reason}) "
                       "before every reply arrived; the lines may or may not have been "
                       "processed")
        else:
            message = ("the upstream connection closed before every reply arrived; "
                       "the lines may or may not have been processed")
        error = UpstreamLostError(message)
        unconfirmed = 0
        for slot in slots:
            if slot.mode != REQUEST:
                unconfirmed += slot.replies_due()
            slot.fail(error)
        if unconfirmed:
            self.counters.send_unconfirmed += unconfirmed
            self.log.warn(
                "upstream {member}: the connection ended before the replies to {count} "
                "POST /send commands came; the upstream may or may not have processed them",
                member=self.name, count=unconfirmed,
            )
        for listener in self._lost_listeners:
            listener(reason)

    def _half_close(self) -> None:
        transport = self.transport
        assert transport is not None
        half_close = getattr(transport, "loseWriteConnection", None)
        if half_close is not None:
            half_close()
        else:
            transport.loseConnection()

    def _closing(self) -> None:
        for listener in self._closing_listeners:
            listener()

    def _close(self) -> None:
        self._closing()
        assert self.transport is not None
        self.transport.loseConnection()

    def _abort(self, why: str, quiet: bool = False) -> None:
        if not quiet:
            self.log.warn("upstream {member}: closing connection: {why}", member=self.name,
                          why=why)
        # A TCP transport delivers connectionLost one reactor turn later and
        # drops whatever is written meanwhile: the table takes no more work
        # (CLOSING) from now on.
        self.close_reason = why
        self._closing()
        transport = self.transport
        assert transport is not None
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()

    def _out_of_step(self, why: str) -> None:
        self.counters.desyncs += 1
        self._abort(f"out of step: {why}")

    def _heartbeat_failed(self, why: str) -> None:
        self.counters.heartbeat_failures += 1
        self._abort(why)

    # -- write backpressure (IPushProducer) -----------------------------------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = self.congested = False
        waiting, self._resume_waiters = self._resume_waiters, []
        for waiter in waiting:
            waiter()

    def when_resumed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the transport has sent what it held
        (its next ``resumeProducing``), e.g. to write more."""
        self._resume_waiters.append(callback)

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

    # -- writing ------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Requests whose reply slots are still queued (abandoned ones too)."""
        return len(self._slots)

    @property
    def suspect(self) -> bool:
        """A request gave up while its replies were still due, and the framing
        cannot tell its late replies from the next request's: take no new
        requests until they came (or the connection is closed as stale)."""
        return bool(self._uncertain)

    def write_lines(self, payload: bytes, count: int) -> None:
        """Write ``count`` already framed lines in one write; no replies awaited."""
        assert self.transport is not None
        self.transport.write(payload)
        self.counters.lines_sent += count
        self.counters.bytes_sent += len(payload)
        self.last_activity = self._clock.seconds()

    def submit(
        self,
        payload: bytes,
        count: int,
        *,
        mode: str,
        expected: int | None,
        timeout: float,
        plan: Plan | None = None,
        fenced: bool = True,
        on_done: Callable[[bool], None] | None = None,
    ) -> Deferred[list[Frame]] | None:
        """Write lines that await ``expected`` replies (None: until the fence).

        For REQUEST the Deferred fires with the frames, or fails with
        ReplyTimeoutError or UpstreamLostError; cancelling it leaves its slot
        to swallow the late replies.  DISCARD and CHECK return None.
        ``on_done`` (see :class:`ReplySlot`) learns whether the replies came.
        """
        fence = self._fence if fenced else None
        if fence is None and expected is None:
            raise ValueError("a slot without a count needs a fence")
        if self._state is CLOSED:
            failed = ReplySlot(mode, expected, timeout, on_done=on_done)
            failed.fail(UpstreamLostError("the upstream connection is closed"))
            return failed.deferred
        nonce: str | None = None
        if fence is not None:
            nonce, fence_line = fence.next()
            payload += fence_line
            self.counters.fences += 1
        self.write_lines(payload, count)
        if nonce is None and expected == 0:
            if on_done is not None:
                on_done(True)
            return succeed([]) if mode == REQUEST else None
        return self._queue(ReplySlot(
            mode, expected, timeout, nonce=nonce, plan=plan, on_abandon=self._abandoned,
            on_done=on_done,
        ))

    def ask(self, payload: bytes, timeout: float) -> Deferred[list[Frame]]:
        """Write one command and await its one reply (handshake, heartbeat)."""
        replies = self.submit(payload, 1, mode=REQUEST, expected=1, timeout=timeout,
                              fenced=False)
        assert replies is not None
        return replies

    def await_greeting(self, timeout: float) -> Deferred[list[Frame]]:
        """Await the frame a server that speaks first sends on connecting."""
        slot = ReplySlot(REQUEST, 1, timeout, on_abandon=self._abandoned)
        if self._state is CLOSED:
            slot.fail(UpstreamLostError("the upstream connection is closed"))
            assert slot.deferred is not None
            return slot.deferred
        deferred = self._queue(slot)
        assert deferred is not None
        return deferred

    def _queue(self, slot: ReplySlot) -> Deferred[list[Frame]] | None:
        if slot.mode == REQUEST:
            slot.start_timer(self._clock)
        self._slots.append(slot)
        if len(self._slots) == 1:
            self._arm_stale_timer()
        return slot.deferred

    def _abandoned(self, slot: ReplySlot) -> None:
        if not self._counts_verified and not slot.closed:
            self._uncertain.add(slot)

    # -- reading ------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if not self._state.reads:
            return  # closing or closed: whatever still arrives goes nowhere
        self.last_activity = self._clock.seconds()
        decoder = self._decoder
        try:
            decoder.feed(data)
            while self._state.reads:
                frame = decoder.gets(bool(self._slots))
                if frame is None:
                    return
                self.frame_received(frame)
        except FramingError as error:
            self.out_of_step(str(error))

    def frame_received(self, frame: Frame) -> None:
        self.counters.frames_received += 1
        if frame.push or not self._slots:
            self._unsolicited(frame)
            return
        slot = self._slots[0]
        if slot.nonce is not None:
            assert self._fence is not None
            verdict = self._fence.match(frame, slot.nonce)
            if verdict == OWN:
                if slot.expected is not None and slot.received != slot.expected:
                    self.out_of_step(
                        f"the fence reply came after {slot.received} of {slot.expected} replies"
                    )
                    return
                self._finish_head()
                return
            if verdict != NONE:
                self.out_of_step("the fence reply of another request arrived")
                return
            if slot.expected is not None and slot.received == slot.expected:
                self.out_of_step(
                    f"a reply arrived where the fence reply was due: {frame.text[:200]!r}"
                )
                return
        index = slot.received
        slot.take(frame)
        self._account(slot, index, frame)
        plan = slot.plan
        if plan is not None and plan.accept:
            check = plan.accept.get(index)
            if check is not None and not check(frame):
                self._finish_head()
                self.out_of_step(
                    f"reply {frame.text[:200]!r} to line {plan.line_of(index)} means the "
                    "lines written after it will be misread"
                )
                return
        if slot.complete_by_count:
            self._finish_head()

    def _account(self, slot: ReplySlot, index: int, frame: Frame) -> None:
        """Counters and events for a frame that filled ``slot``."""
        mode = slot.mode
        if mode == REQUEST:
            if slot.abandoned:
                self.counters.late_replies += 1
                self.log.debug("upstream {member}: late reply discarded {text!r}",
                               member=self.name, text=frame.text)
                self._on_frame("late_reply", frame, None)
            return
        self.counters.discarded_replies += 1
        if mode == CHECK and self.is_error(frame):
            line = slot.plan.line_of(index) if slot.plan is not None else index + 1
            slot.errors.append((line, frame))

    def _finish_head(self) -> None:
        # Dequeue before complete() fires the caller's callbacks: they may
        # write a new request or close the connection (which empties the queue).
        slot = self._slots.popleft()
        self._uncertain.discard(slot)
        self._arm_stale_timer()
        slot.complete()
        if slot.mode == CHECK and slot.errors:
            self._report_send_errors(slot)

    def _report_send_errors(self, slot: ReplySlot) -> None:
        self.counters.send_errors += len(slot.errors)
        first_line, first = slot.errors[0]
        if self._send_error_log.allow():
            self.log.warn(
                "upstream {member}: {count} error replies to POST /send lines; the first, "
                "to line {line}: {text}", member=self.name, count=len(slot.errors),
                line=first_line, text=first.text[:200].decode("utf-8", "replace"),
            )
        for line, frame in slot.errors:
            self._on_frame("send_error", frame, line)

    def _unsolicited(self, frame: Frame) -> None:
        self.counters.unsolicited += 1
        self.log.debug("upstream {member}: unsolicited {text!r}", member=self.name,
                       text=frame.text)
        self._on_frame(self.unsolicited_kind, frame, None)

    # -- out-of-step detection ----------------------------------------------

    def _arm_stale_timer(self) -> None:
        """The slot at the head may wait max(stale_timeout, its own timeout)
        from when it became the head; replies to earlier slots do not extend
        that, so steady traffic cannot hide a connection out of step."""
        if not self._slots:
            self._cancel_stale_timer()
            return
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
        head = self._slots[0] if self._slots else None
        waited = max(self._stale_timeout, head.timeout) if head is not None else 0.0
        self.out_of_step(
            f"the oldest awaited reply is more than {waited:g} s late "
            "(stale_reply_timeout)"
        )

"""Reply slots: one request's claim on the frames that answer it.

Each request that awaits replies owns one slot in its connection's FIFO
(section 6 of the engineering guide).  A slot expects a number of frames
(from the framing's plan, or ``?replies=N``), or, with a fence, every frame
until the fence's reply.  A request that timed out or was cancelled keeps its
slot: the late frames that fill it are discarded, never handed to the next
request.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from bridge.errors import ReplyTimeoutError, UpstreamLostError
from bridge.upstream.replies.frames import Frame, Plan

REQUEST = "request"  # a caller waits for the frames (POST /request, confirmed /send)
DISCARD = "discard"  # POST /send replies that nobody wants
CHECK = "check"  # POST /send replies checked for error replies


class ReplySlot:
    """The frames one request awaits, and what becomes of them."""

    __slots__ = ("_on_abandon", "_on_done", "_timer", "abandoned", "closed", "deferred",
                 "errors", "expected", "frames", "mode", "nonce", "plan", "received", "timeout")

    def __init__(
        self,
        mode: str,
        expected: int | None,
        timeout: float,
        *,
        nonce: str | None = None,
        plan: Plan | None = None,
        on_abandon: Callable[[ReplySlot], None] | None = None,
        on_done: Callable[[bool], None] | None = None,
    ) -> None:
        """``on_done`` is called once: True when every frame arrived, False
        when the connection ended first (the spool retires records with it)."""
        self.mode = mode
        self.expected = expected  # None: every frame until the fence reply
        self.received = 0
        self.frames: list[Frame] = []
        self.errors: list[tuple[int, Frame]] = []  # CHECK: (line number, error reply)
        self.nonce = nonce
        self.plan = plan
        self.timeout = timeout
        self.abandoned = mode != REQUEST  # nobody waits for DISCARD/CHECK frames
        self.closed = False  # complete or failed: nothing more may happen to it
        self._on_abandon = on_abandon
        self._on_done = on_done
        self._timer: IDelayedCall | None = None
        self.deferred: Deferred[list[Frame]] | None = (
            Deferred(self._cancel) if mode == REQUEST else None
        )

    # -- the caller's side -----------------------------------------------------

    def start_timer(self, clock: IReactorTime) -> None:
        self._timer = clock.callLater(self.timeout, self._expire)

    def _cancel(self, deferred: Deferred[list[Frame]]) -> None:
        # The HTTP client went away: free what we hold; the slot stays queued.
        self._abandon()

    def _abandon(self) -> None:
        if self.abandoned:
            return
        self.abandoned = True
        self.frames = []
        self._stop_timer()
        if self._on_abandon is not None:
            self._on_abandon(self)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _expire(self) -> None:
        self._timer = None
        frames = self.frames
        awaited = "" if self.expected is None else f" of {self.expected}"
        self._abandon()
        assert self.deferred is not None
        self.deferred.errback(ReplyTimeoutError(
            f"the upstream sent {len(frames)}{awaited} replies within {self.timeout:g} s",
            frames,
        ))

    # -- the connection's side ---------------------------------------------------

    def take(self, frame: Frame) -> None:
        """One more frame for this slot (the caller may have given up)."""
        self.received += 1
        if not self.abandoned:
            self.frames.append(frame)

    def complete(self) -> None:
        """Every frame arrived: hand them to the caller, if one still waits."""
        self.closed = True
        self._stop_timer()
        self._done(True)
        if not self.abandoned and self.deferred is not None:
            self.abandoned = True
            frames, self.frames = self.frames, []
            self.deferred.callback(frames)

    def fail(self, reason: Exception) -> None:
        """The connection closed (or went out of step) before the frames came."""
        self.closed = True
        self._done(False)
        if self.abandoned or self.deferred is None:
            return
        frames = self.frames
        self.abandoned = True
        self.frames = []
        self._stop_timer()
        if isinstance(reason, UpstreamLostError) and not reason.replies:
            reason = UpstreamLostError(reason.message, frames)
        self.deferred.errback(reason)

    def _done(self, arrived: bool) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(arrived)

    def replies_due(self) -> int:
        """Replies not received yet (with a fence and no count: the plan's)."""
        expected = self.expected
        if expected is None:
            expected = self.plan.replies if self.plan is not None else 0
        return max(0, expected - self.received)

    @property
    def complete_by_count(self) -> bool:
        return self.nonce is None and self.received == self.expected

"""The ``line`` framing: every line is one reply (the default).

Right for upstreams that answer each command with exactly one line; it cannot
know when a command answers nothing or several lines (``counts_known`` is
False), so the documentation recommends a fence for those.  This is the hot
path of bulk traffic: the buffer is split once per feed and each line costs
one small object, no per-byte Python work.
"""

from __future__ import annotations

from typing import Sequence

from bridge.upstream.replies.frames import Frame, Plan
from bridge.upstream.replies.limits import Limits
from bridge.upstream.replies.linequeue import CR, LF, LineQueue


class LineDecoder(LineQueue):
    """One frame per line: value is the line as text, text its bytes."""

    __slots__ = ()

    def gets(self, awaited: bool = True) -> Frame | None:
        # LineQueue.take() inlined: this runs once per reply line.
        index = self._next
        lines = self._lines
        if index >= len(lines):
            self.take()  # raises when the partial line is already too long
            return None
        line = lines[index]
        self._next = index + 1
        raw = line + LF
        self._unread -= len(raw)
        if line.endswith(CR):
            line = line[:-1]
        limits = self._limits
        if len(line) > limits.max_line_bytes:
            raise limits.line_too_long(len(line))
        if len(raw) > limits.max_reply_bytes:
            raise limits.reply_too_long(len(raw))
        return Frame(raw, line.decode("utf-8", "replace"), line)

    def buffered(self) -> int:
        return self._unread


class LineFraming:
    """One reply per line sent, one line per reply."""

    name = "line"
    counts_known = False
    default_send_replies = "none"

    def __init__(self, limits: Limits) -> None:
        self._limits = limits

    def decoder(self) -> LineDecoder:
        return LineDecoder(self._limits)

    def plan(self, lines: Sequence[bytes]) -> Plan:
        return Plan(len(lines))

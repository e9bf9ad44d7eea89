"""The ``terminator`` framing: a reply runs to the first line matching a regex.

For home-grown protocols that end every reply with a marker line (``OK``,
``.``, ``END``, ``>``).  The framing cannot tell a reply from an unsolicited
message by its bytes, so it relies on being told whether a reply is awaited:
while nothing is, each line is a frame on its own, so that an unsolicited line
can never swallow the beginning of the next reply.  It never marks an error
(``reply_error_pattern`` does that), and assumes one reply per line sent.
"""

from __future__ import annotations

import re
from typing import Sequence

from bridge.upstream.replies.frames import Frame, Plan
from bridge.upstream.replies.limits import Limits
from bridge.upstream.replies.linequeue import LF, LineQueue, content


class TerminatorDecoder:
    """Lines up to and including the first one ``terminator`` finds."""

    __slots__ = ("_limits", "_lines", "_queue", "_raw", "_size", "_terminator")

    def __init__(self, limits: Limits, terminator: re.Pattern[bytes]) -> None:
        self._limits = limits
        self._terminator = terminator
        self._queue = LineQueue(limits)
        self._lines: list[bytes] = []  # of the partly received frame
        self._raw: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        self._queue.feed(data)

    def gets(self, awaited: bool = True) -> Frame | None:
        while (line := self._queue.take()) is not None:
            text = content(line)
            raw = line + LF
            if not self._lines and (not awaited or self._terminator.search(text)):
                if len(raw) > self._limits.max_reply_bytes:
                    raise self._limits.reply_too_long(len(raw))
                return Frame(raw, [text.decode("utf-8", "replace")], text)
            self._size += len(raw)
            if self._size > self._limits.max_reply_bytes:
                raise self._limits.reply_too_long(self._size)
            self._lines.append(text)
            self._raw.append(raw)
            if self._terminator.search(text):
                return self._frame()
        return None

    def _frame(self) -> Frame:
        lines, self._lines = self._lines, []
        raw, self._raw = self._raw, []
        self._size = 0
        return Frame(
            b"".join(raw), [line.decode("utf-8", "replace") for line in lines], LF.join(lines)
        )

    def buffered(self) -> int:
        return self._queue.unread() + self._size


class TerminatorFraming:
    """One reply per line sent; each reply ends at a terminator line."""

    name = "terminator"
    counts_known = False
    default_send_replies = "none"

    def __init__(self, limits: Limits, terminator: re.Pattern[bytes]) -> None:
        self._limits = limits
        self.terminator = terminator

    def decoder(self) -> TerminatorDecoder:
        return TerminatorDecoder(self._limits, self.terminator)

    def plan(self, lines: Sequence[bytes]) -> Plan:
        return Plan(len(lines))

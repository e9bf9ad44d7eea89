"""The ``status`` framing: numbered replies of SMTP and FTP (RFC 5321, 959).

Every reply starts with a three-digit code.  ``250-...`` opens a multi-line
reply that ends at the first line starting with ``250 `` (or that is exactly
``250``); FTP allows free-form lines in between.  A 1xx reply (FTP) is
preliminary: the final reply to the same command follows, so both are one
frame.  A final 4xx or 5xx code is an error.

Planning follows SMTP's one exception to "one reply per line": after ``DATA``
the lines up to a line that is exactly ``.`` are the message, answered once,
after the ``.``.  ``DATA`` itself must be answered 3xx (354): with any other
code the server never entered the message, would read each message line as a
command, and the connection is out of step.
"""

from __future__ import annotations

from typing import Sequence

from bridge.errors import BodyError
from bridge.upstream.replies.frames import Acceptance, Frame, FramingError, Plan
from bridge.upstream.replies.limits import Limits, shown
from bridge.upstream.replies.linequeue import LF, LineQueue, content

_DIGITS = frozenset(b"0123456789")
_AFTER_CODE = frozenset(b" -")


def reply_code(frame: Frame) -> str:
    """The code of a frame's final reply (its last line always starts with it)."""
    return str(frame.value[-1][:3])


def accepts_data(frame: Frame) -> bool:
    """Whether a reply to DATA lets the message follow (3xx, normally 354)."""
    return reply_code(frame).startswith("3")


class StatusDecoder:
    """Numbered replies; a preliminary 1xx reply and the next one are one frame."""

    __slots__ = ("_code", "_limits", "_lines", "_queue", "_raw", "_size")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._queue = LineQueue(limits)
        self._lines: list[bytes] = []  # of the partly received frame
        self._raw: list[bytes] = []
        self._size = 0
        #: the code of an open multi-line reply (``b"250 "``), else None
        self._code: bytes | None = None

    def feed(self, data: bytes) -> None:
        self._queue.feed(data)

    def gets(self, awaited: bool = True) -> Frame | None:
        while (line := self._queue.take()) is not None:
            text = content(line)
            self._size += len(line) + 1
            if self._size > self._limits.max_reply_bytes:
                raise self._limits.reply_too_long(self._size)
            self._lines.append(text)
            self._raw.append(line + LF)
            code = self._code
            if code is not None:
                # Inside a multi-line reply: free-form lines until the last one.
                if not (text.startswith(code) or text == code[:3]):
                    continue
                self._code = None
            elif not _starts_reply(text):
                raise _not_a_reply(text)
            elif text[3:4] == b"-":
                self._code = text[:3] + b" "
                continue
            if text[:1] != b"1":  # final reply: the frame is complete
                return self._frame(text[:1] in (b"4", b"5"))
        return None

    def _frame(self, error: bool) -> Frame:
        lines, self._lines = self._lines, []
        raw, self._raw = self._raw, []
        self._size = 0
        return Frame(
            b"".join(raw),
            [line.decode("utf-8", "replace") for line in lines],
            LF.join(lines),
            error=error,
        )

    def buffered(self) -> int:
        return self._queue.unread() + self._size


def _starts_reply(line: bytes) -> bool:
    return (
        len(line) >= 3
        and line[0] in _DIGITS
        and line[1] in _DIGITS
        and line[2] in _DIGITS
        and (len(line) == 3 or line[3] in _AFTER_CODE)
    )


def _not_a_reply(line: bytes) -> FramingError:
    return FramingError(
        f"received {shown(line)} where a status reply was due "
        "(three digits, then a space, '-' or the end of the line)"
    )


class StatusFraming:
    """SMTP/FTP: one reply per command line, the SMTP message answered once."""

    name = "status"
    counts_known = True
    default_send_replies = "check"

    def __init__(self, limits: Limits) -> None:
        self._limits = limits

    def decoder(self) -> StatusDecoder:
        return StatusDecoder(self._limits)

    def plan(self, lines: Sequence[bytes]) -> Plan:
        if b"DATA" not in b"\n".join(lines).upper():  # one C-level search for most requests
            return Plan(len(lines))
        answered: list[int] = []
        accept: dict[int, Acceptance] = {}
        message_from = 0  # line number of the DATA whose message is open, else 0
        for number, line in enumerate(lines, 1):
            if message_from:
                if line == b".":
                    answered.append(number)
                    message_from = 0
                continue
            if line.strip().upper() == b"DATA":
                accept[len(answered)] = accepts_data
                message_from = number
            answered.append(number)
        if message_from:
            raise BodyError(
                400,
                "invalid_command",
                f"line {message_from} is DATA but no later line is exactly '.': the server "
                "would wait for the end of the message and read the next request as its text",
            )
        if len(answered) == len(lines):
            return Plan(len(answered), accept=accept)
        return Plan(len(answered), answered, accept)

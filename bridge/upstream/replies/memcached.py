"""The ``memcached`` framing: replies of memcached's text protocol.

The decoder tells where a reply ends from the reply itself (it never needs to
know which command was sent): ``VALUE`` items (each a header line and a data
block of the announced size, which may hold CRLF or ``END``) run to ``END``;
``STAT``, ``ITEM``, ``PREFIX`` and ``key=`` listings run to ``END``; a meta
``VA <size>`` line carries one data block; every other line is a reply of its
own.  ``ERROR``, ``CLIENT_ERROR`` and ``SERVER_ERROR`` are errors, also when
they cut a listing short.

Data blocks are framed by their size, so the buffer is a ``bytearray``
consumed from the front, like the RESP decoder's.
"""

from __future__ import annotations

from typing import Sequence

from bridge.upstream.replies.frames import Frame, FramingError, Plan
from bridge.upstream.replies.limits import Limits, shown
from bridge.upstream.replies.memcached_plan import plan_memcached

_CR = 13
_LF = 10
_ERRORS = (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")
_LISTINGS = (b"STAT ", b"ITEM ", b"PREFIX ", b"key=")
_END = b"END"

_ONE = 0  # nothing open: the next line starts a reply
_ITEMS = 1  # VALUE items until END
_LISTING = 2  # listing lines until END


class MemcachedDecoder:
    """Frames memcached text-protocol replies."""

    __slots__ = ("_buf", "_limits", "_lines", "_pos", "_scanned", "_start", "_state")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._start = 0  # where the frame being parsed starts
        self._scanned = 0  # bytes known to hold no LF after _pos
        self._pos = 0  # where the next line starts
        self._state = _ONE
        self._lines: list[bytes] = []  # of the frame being parsed

    def feed(self, data: bytes) -> None:
        if self._start:
            del self._buf[: self._start]
            self._pos -= self._start
            self._scanned -= self._start
            self._start = 0
        self._buf += data

    def buffered(self) -> int:
        return len(self._buf) - self._start

    def gets(self, awaited: bool = True) -> Frame | None:
        buf = self._buf
        limits = self._limits
        while True:
            pos = self._pos
            # Resume the search for LF where the last one gave up: a long
            # line trickling in is scanned once, not once per piece.
            newline = buf.find(b"\n", max(pos, self._scanned))
            if newline < 0:
                self._scanned = len(buf)
                if len(buf) - pos > limits.max_line_bytes + 1:
                    raise limits.line_too_long(len(buf) - pos)
                self._check_size(len(buf))
                return None
            stop = newline - 1 if newline > pos and buf[newline - 1] == _CR else newline
            if stop - pos > limits.max_line_bytes:
                raise limits.line_too_long(stop - pos)
            line = bytes(buf[pos:stop])
            after = newline + 1
            state = self._state
            if state == _ONE:
                if line.startswith(b"VALUE "):
                    state = self._state = _ITEMS
                elif line.startswith(_LISTINGS):
                    self._state = _LISTING
                    self._lines.append(line)
                    self._advance(after)
                    continue
                elif line.startswith(b"VA "):
                    end = self._block(line, 1, after)
                    if end < 0:
                        return None
                    return self._frame(end, False)
                else:
                    self._lines.append(line)
                    return self._frame(after, line.startswith(_ERRORS))
            if state == _ITEMS and line.startswith(b"VALUE "):
                end = self._block(line, 3, after)
                if end < 0:
                    return None
                self._advance(end)
                continue
            self._lines.append(line)
            if line == _END:
                return self._frame(after, False)
            if line.startswith(_ERRORS):
                return self._frame(after, True)
            if state == _ITEMS:
                raise FramingError(
                    f"received {shown(line)} among VALUE items, where VALUE or END was due"
                )
            self._advance(after)

    def _block(self, line: bytes, size_at: int, after: int) -> int:
        """Take ``line`` and the data block whose size is its token
        ``size_at``; the end of the block's CRLF, or -1 until it is complete."""
        tokens = line.split(b" ")
        size = tokens[size_at] if len(tokens) > size_at else b""
        if not size.isdigit() or (size_at == 3 and len(tokens) > 5):
            raise FramingError(f"received a malformed item header: {shown(line)}")
        length = int(size)
        if length > self._limits.max_line_bytes:
            raise self._limits.block_too_long("data block", length)
        end = after + length
        buf = self._buf
        if end + 2 > len(buf):
            self._check_size(end + 2)
            return -1
        if buf[end] != _CR or buf[end + 1] != _LF:
            raise FramingError(f"the data block of {shown(line)} is not followed by CRLF")
        self._lines.append(line)
        self._lines.append(bytes(buf[after:end]))
        return end + 2

    def _advance(self, to: int) -> None:
        self._check_size(to)
        self._pos = to

    def _frame(self, end: int, error: bool) -> Frame:
        self._check_size(end)
        raw = bytes(self._buf[self._start : end])
        self._start = self._pos = end
        self._state = _ONE
        lines, self._lines = self._lines, []
        return Frame(
            raw,
            [line.decode("utf-8", "replace") for line in lines],
            b"\n".join(lines),
            error=error,
        )

    def _check_size(self, at_least: int) -> None:
        if at_least - self._start > self._limits.max_reply_bytes:
            raise self._limits.reply_too_long(at_least - self._start)


class MemcachedFraming:
    """memcached's text protocol: storage commands take their data line."""

    name = "memcached"
    counts_known = True
    default_send_replies = "check"

    def __init__(self, limits: Limits) -> None:
        self._limits = limits

    def decoder(self) -> MemcachedDecoder:
        return MemcachedDecoder(self._limits)

    def plan(self, lines: Sequence[bytes]) -> Plan:
        return plan_memcached(lines)

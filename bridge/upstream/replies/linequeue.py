"""The complete lines of a byte stream, for the framings made of whole lines.

The buffer is split on LF once per :meth:`LineQueue.feed` (one C-level
``bytes.split``), never byte by byte in Python: this is what the ``line``
framing always did, and what keeps a burst of thousands of short replies
cheap.  Lines come out one by one, with a CR before the LF still attached, so
that a frame's ``raw`` can keep every byte as received.
"""

from __future__ import annotations

from bridge.upstream.replies.limits import Limits

LF = b"\n"
CR = b"\r"


class LineQueue:
    """Lines received and not yet taken, and the partial line after them."""

    __slots__ = ("_limits", "_lines", "_next", "_partial", "_partial_size", "_unread")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._lines: list[bytes] = []
        self._next = 0
        #: pieces of the partial line, joined once its LF arrives (a long
        #: line trickling in costs no repeated copies)
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._unread = 0

    def feed(self, data: bytes) -> None:
        """Buffer ``data``; split what completes lines."""
        self._unread += len(data)
        if LF not in data:
            self._partial.append(data)
            self._partial_size += len(data)
            return
        if self._partial:
            self._partial.append(data)
            data = b"".join(self._partial)
        lines = data.split(LF)
        last = lines.pop()
        self._partial = [last] if last else []
        self._partial_size = len(last)
        if self._next < len(self._lines):
            lines = self._lines[self._next :] + lines
        self._lines = lines
        self._next = 0

    def take(self) -> bytes | None:
        """The next complete line without its LF (a CR before it is kept:
        ``line + LF`` are the bytes received), or None until one is complete.

        Raises FramingError for a line longer than ``max_line_bytes``, as soon
        as a partial line is known to be too long.
        """
        index = self._next
        if index < len(self._lines):
            line = self._lines[index]
            self._next = index + 1
            self._unread -= len(line) + 1
            length = len(line) - 1 if line.endswith(CR) else len(line)
            if length > self._limits.max_line_bytes:
                raise self._limits.line_too_long(length)
            return line
        if self._partial_size > self._limits.max_line_bytes + 1:  # + a CR
            raise self._limits.line_too_long(self._partial_size)
        return None

    def unread(self) -> int:
        """Bytes received and not yet taken."""
        return self._unread


def content(line: bytes) -> bytes:
    """A line from :meth:`LineQueue.take` without its CR."""
    return line[:-1] if line.endswith(CR) else line

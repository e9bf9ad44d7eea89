"""Walking the records of one segment file, damage included.

Both the scan on open and delivery read through :func:`walk`, so a damaged
stretch is recognised the same way wherever it is met.  The file is read in
windows (4 MiB, or one record when larger): memory stays bounded whatever
the segment holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

from bridge.upstream.spool.record import HEADER_SIZE, MAGIC, Header, decode_header, payload_intact

WINDOW = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Intact:
    """A record whose header and payload check out."""

    offset: int
    header: Header
    payload: bytes | None  # only when asked for


@dataclass(frozen=True, slots=True)
class Damaged:
    """Bytes ``[offset, end)`` that are no intact record.

    ``record_id`` is known when the header survived and only the payload is
    damaged.  ``torn`` when nothing intact follows up to the end of the file:
    at the end of the segment being written that is what a write cut short
    by a crash leaves (never acknowledged with fsync always).
    """

    offset: int
    end: int
    record_id: int | None
    torn: bool


class _Window:
    """A sliding read-only view of the file."""

    def __init__(self, fd: int, end: int, size: int) -> None:
        self._fd = fd
        self.end = end
        self._size = size
        self.base = 0
        self.data = b""

    def at(self, offset: int, need: int) -> int:
        """Make ``need`` bytes at ``offset`` visible (as far as the file
        goes); return ``offset``'s index into ``data``."""
        if offset < self.base or offset + need > self.base + len(self.data):
            self.base = offset
            self.data = os.pread(self._fd, max(self._size, need), offset)
        return offset - self.base


def walk(fd: int, start: int, end: int, *, payloads: bool,
         window: int = WINDOW) -> Iterator[Intact | Damaged]:
    """Every intact record and every damaged stretch from ``start`` to ``end``."""
    view = _Window(fd, end, window)
    position = start
    while position < end:
        index = view.at(position, HEADER_SIZE)
        header = decode_header(view.data, index) if end - position >= HEADER_SIZE else None
        if header is not None and position + header.size <= end:
            index = view.at(position, header.size)
            body = view.data[index + HEADER_SIZE:index + header.size]
            if payload_intact(header, body):
                yield Intact(position, header, body if payloads else None)
            else:
                yield Damaged(position, position + header.size, header.record_id, False)
            position += header.size
            continue
        following = _resync(view, position + 1)
        yield Damaged(position, end if following is None else following,
                      None if header is None else header.record_id, following is None)
        position = end if following is None else following


def _resync(view: _Window, start: int) -> int | None:
    """The offset of the next intact-looking header at or after ``start``."""
    position = start
    while position < view.end:
        index = view.at(position, HEADER_SIZE)
        found = view.data.find(MAGIC, index)
        if found < 0:
            if view.base + len(view.data) >= view.end or not view.data:
                return None
            # The magic may straddle the window's end: look again from just before it.
            position = max(position + 1, view.base + len(view.data) - len(MAGIC) + 1)
            continue
        candidate = view.base + found
        index = view.at(candidate, HEADER_SIZE)
        header = decode_header(view.data, index)
        if header is not None and candidate + header.size <= view.end:
            return candidate
        position = candidate + 1
    return None

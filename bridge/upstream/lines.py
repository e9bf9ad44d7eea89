"""Lines on their way to the upstream: validated, framed, counted."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lines:
    """Validated lines of one request, plus the exact bytes to write."""

    count: int
    payload: bytes  # the lines, each followed by the delimiter

    @property
    def size(self) -> int:
        return len(self.payload)


def split_lines(payload: bytes, delimiter: bytes) -> list[bytes]:
    """Inverse of the payload framing: the lines without delimiters."""
    return payload.split(delimiter)[:-1]

"""The two size limits every decoder enforces, and what their errors say.

A reply that outgrows a limit means the upstream is not speaking the protocol
we think it is (or is sending far more than anyone asked for): the decoder
raises :class:`~bridge.upstream.replies.frames.FramingError` and the
connection is closed.  The messages say what was seen, so that an operator can
tell a too-small limit from a wrong ``reply_framing``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.upstream.replies.frames import FramingError


@dataclass(frozen=True, slots=True)
class Limits:
    """``max_line_bytes`` bounds one line (delimiter excluded) and, for the
    length-prefixed framings, one data block; ``max_reply_bytes`` bounds the
    raw bytes of one frame, delimiters included."""

    max_line_bytes: int
    max_reply_bytes: int

    def __post_init__(self) -> None:
        if self.max_line_bytes < 1 or self.max_reply_bytes < 1:
            raise ValueError("max_line_bytes and max_reply_bytes must be positive")

    def line_too_long(self, length: int) -> FramingError:
        return FramingError(
            f"received a line of at least {length} bytes; "
            f"max_line_bytes is {self.max_line_bytes}"
        )

    def block_too_long(self, what: str, length: int) -> FramingError:
        return FramingError(
            f"received a {what} of {length} bytes; max_line_bytes is {self.max_line_bytes}"
        )

    def reply_too_long(self, length: int) -> FramingError:
        return FramingError(
            f"received a reply of at least {length} bytes; "
            f"max_reply_bytes is {self.max_reply_bytes}"
        )


def text_of(data: bytes | bytearray) -> str:
    """The JSON form of reply bytes: UTF-8, invalid bytes replaced."""
    return data.decode("utf-8", "replace")


def shown(line: bytes, limit: int = 60) -> str:
    """A line quoted for an error message, cut to ``limit`` bytes."""
    quoted = repr(line[:limit])[1:]  # without the b prefix
    if len(line) > limit:
        return quoted[:-1] + "..." + quoted[-1]
    return quoted

"""Reply framings: one decoder and one planner per upstream protocol (see frames)."""

from __future__ import annotations

from bridge.upstream.replies.frames import Framing
from bridge.upstream.replies.line import LineFraming


def make_framing(
    name: str, *, max_line_bytes: int, max_reply_bytes: int, terminator: str | None = None
) -> Framing:
    if name == "line":
        return LineFraming(max_line_bytes)
    raise ValueError(f"unknown reply framing {name!r}")

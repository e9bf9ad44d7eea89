"""``line`` framing: one reply line per line sent (placeholder until the real codec lands)."""

from __future__ import annotations

from typing import Sequence

from bridge.upstream.replies.frames import Frame, FramingError, Plan


class LineDecoder:
    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._buffer = b""
        self._frames: list[Frame] = []
        self._next = 0

    def feed(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if b"\n" not in data:
            self._buffer = buffer
            if len(buffer) > self._max + 1:
                raise FramingError(f"received a line of at least {len(buffer)} bytes; "
                                   f"max_line_bytes is {self._max}")
            return
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        frames = self._frames[self._next:]
        for line in lines:
            raw = line + b"\n"
            if line.endswith(b"\r"):
                line = line[:-1]
            frames.append(Frame(raw, line.decode("utf-8", "replace"), line))
        self._frames = frames
        self._next = 0

    def gets(self, awaited: bool = True) -> Frame | None:
        if self._next < len(self._frames):
            frame = self._frames[self._next]
            self._next += 1
            if len(frame.text) > self._max:
                raise FramingError(f"received a line of at least {len(frame.text)} bytes; "
                                   f"max_line_bytes is {self._max}")
            return frame
        if len(self._buffer) > self._max + 1:
            raise FramingError(f"received a line of at least {len(self._buffer)} bytes; "
                               f"max_line_bytes is {self._max}")
        return None

    def buffered(self) -> int:
        return len(self._buffer)


class LineFraming:
    name = "line"
    counts_known = False
    default_send_replies = "none"

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes

    def decoder(self) -> LineDecoder:
        return LineDecoder(self._max)

    def plan(self, lines: Sequence[bytes]) -> Plan:
        return Plan(len(lines))

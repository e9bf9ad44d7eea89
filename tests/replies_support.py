"""Helpers for the reply framing tests: feeding decoders, splitting streams."""

from __future__ import annotations

from itertools import pairwise
from typing import Any, Iterable, Sequence

from hypothesis import strategies as st

from bridge.upstream.replies import make_framing
from bridge.upstream.replies.frames import Decoder, Frame, Framing

BIG = 1 << 20


def framing(name: str, *, max_line_bytes: int = BIG, max_reply_bytes: int = BIG,
            terminator: str | None = None) -> Framing:
    return make_framing(name, max_line_bytes=max_line_bytes, max_reply_bytes=max_reply_bytes,
                        terminator=terminator)


def drain(decoder: Decoder, awaited: bool = True) -> list[Frame]:
    """Every frame the decoder can give now."""
    frames = []
    while (frame := decoder.gets(awaited)) is not None:
        frames.append(frame)
    return frames


def decode(decoder: Decoder, chunks: Iterable[bytes], awaited: bool = True) -> list[Frame]:
    """Feed ``chunks`` one by one, taking the frames after each, as a protocol does."""
    frames: list[Frame] = []
    for chunk in chunks:
        decoder.feed(chunk)
        frames.extend(drain(decoder, awaited))
    return frames


def pieces(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, duplicates allowed)."""
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points)]


def as_tuple(frame: Frame) -> tuple[Any, ...]:
    return (frame.raw, frame.value, frame.text, frame.error, frame.push, frame.json_events)


def as_tuples(frames: Iterable[Frame]) -> list[tuple[Any, ...]]:
    return [as_tuple(frame) for frame in frames]


#: Offsets to cut a stream at (taken modulo its length + 1).
cuts = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=12)


def assert_splits_anywhere(
    case: Any, make: Any, stream: bytes, expected: list[tuple[Any, ...]],
    awaited: bool = True,
) -> None:
    """``stream`` decodes to ``expected`` whole, cut at every byte boundary, and
    fed byte by byte; nothing is left buffered.  ``make()`` gives a decoder."""
    decoder = make()
    case.assertEqual(as_tuples(decode(decoder, [stream], awaited)), expected)
    case.assertEqual(decoder.buffered(), 0)
    for cut in range(len(stream) + 1):
        decoder = make()
        frames = decode(decoder, [stream[:cut], stream[cut:]], awaited)
        case.assertEqual(as_tuples(frames), expected, f"cut at {cut}")
        case.assertEqual(decoder.buffered(), 0)
    decoder = make()
    frames = decode(decoder, [stream[i : i + 1] for i in range(len(stream))], awaited)
    case.assertEqual(as_tuples(frames), expected, "byte by byte")

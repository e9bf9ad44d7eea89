"""The ``terminator`` framing (bridge.upstream.replies.terminator): replies end
at a line matching a regex; unsolicited lines stay on their own."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from bridge.upstream.replies.frames import FramingError, Plan
from bridge.upstream.replies.terminator import TerminatorDecoder
from tests.replies_support import (
    as_tuples,
    assert_splits_anywhere,
    cuts,
    decode,
    drain,
    framing,
    pieces,
)

TERMINATOR = r"^(OK|ERR\b)"


def decoder(terminator: str = TERMINATOR, max_line_bytes: int = 1 << 20,
            max_reply_bytes: int = 1 << 20) -> TerminatorDecoder:
    made = framing("terminator", terminator=terminator, max_line_bytes=max_line_bytes,
                   max_reply_bytes=max_reply_bytes).decoder()
    assert isinstance(made, TerminatorDecoder)
    return made


def reply(raw: bytes) -> tuple[Any, ...]:
    lines = [line[:-1] if line.endswith(b"\r") else line for line in raw.split(b"\n")[:-1]]
    return (raw, [line.decode("utf-8", "replace") for line in lines], b"\n".join(lines),
            False, False, False)


class TerminatorDecoderTests(SynchronousTestCase):
    def test_reply_runs_to_the_terminator(self) -> None:
        stream = b"item 1\r\nitem 2\nOK 2 items\r\nERR nope\n"
        assert_splits_anywhere(self, decoder, stream, [
            reply(b"item 1\r\nitem 2\nOK 2 items\r\n"), reply(b"ERR nope\n"),
        ])

    def test_error_is_never_set(self) -> None:
        (frame,) = decode(decoder(), [b"ERR bad\n"])
        self.assertFalse(frame.error)

    def test_regex_sees_the_line_without_its_delimiter(self) -> None:
        made = decoder(r"^\.$")
        frames = decode(made, [b"a\r\n.\r\n"])
        self.assertEqual(frames[0].value, ["a", "."])
        self.assertEqual(frames[0].raw, b"a\r\n.\r\n")

    def test_regex_searches_bytes_anywhere_in_the_line(self) -> None:
        frames = decode(decoder("done"), [b"x\nall done!\n"])
        self.assertEqual(frames[0].value, ["x", "all done!"])

    def test_unsolicited_lines_are_frames_of_their_own(self) -> None:
        made = decoder()
        made.feed(b"hello\nworld\n")
        self.assertEqual(as_tuples(drain(made, awaited=False)),
                         [reply(b"hello\n"), reply(b"world\n")])
        made.feed(b"line\nOK\n")
        self.assertEqual(as_tuples(drain(made, awaited=True)), [reply(b"line\nOK\n")])

    def test_a_started_reply_is_finished_even_when_no_longer_awaited(self) -> None:
        # A reply that began while awaited (its slot may since have timed out)
        # keeps its lines together: they are late, not unsolicited.
        made = decoder()
        made.feed(b"line 1\n")
        self.assertEqual(drain(made, awaited=True), [])
        made.feed(b"line 2\nOK\nnext\n")
        self.assertEqual(as_tuples(drain(made, awaited=False)),
                         [reply(b"line 1\nline 2\nOK\n"), reply(b"next\n")])

    def test_buffered(self) -> None:
        made = decoder()
        made.feed(b"a\nb")
        self.assertEqual(drain(made), [])
        self.assertEqual(made.buffered(), 3)
        made.feed(b"\nOK\n")
        self.assertEqual(len(drain(made)), 1)
        self.assertEqual(made.buffered(), 0)

    def test_limits(self) -> None:
        with self.assertRaises(FramingError) as caught:
            decode(decoder(max_line_bytes=4), [b"12345\n"])
        self.assertEqual(str(caught.exception),
                         "received a line of at least 5 bytes; max_line_bytes is 4")
        with self.assertRaises(FramingError) as caught:
            decode(decoder(max_reply_bytes=8), [b"abc\ndef\nOK\n"])
        self.assertEqual(str(caught.exception),
                         "received a reply of at least 11 bytes; max_reply_bytes is 8")
        with self.assertRaises(FramingError):
            decode(decoder(max_reply_bytes=4), [b"long\n"], awaited=False)

    @settings(database=None, max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from([b"item", b"OK", b"OK 3", b"ERR", b"ERRX", b"",
                                               b" OK", b"\xff"]),
                              st.sampled_from([b"\n", b"\r\n"])), max_size=20),
           cuts)
    def test_any_split_gives_the_frames_of_the_whole(
        self, lines: list[tuple[bytes, bytes]], offsets: list[int],
    ) -> None:
        stream = b"".join(line + end for line, end in lines)
        # Reference: group the whole stream's lines up to each terminator.
        pattern = re.compile(TERMINATOR.encode())
        expected, group = [], b""
        for line, end in lines:
            group += line + end
            if pattern.search(line):
                expected.append(reply(group))
                group = b""
        made = decoder()
        self.assertEqual(as_tuples(decode(made, pieces(stream, offsets))), expected)
        self.assertEqual(made.buffered(), len(group))


class TerminatorPlanTests(SynchronousTestCase):
    def test_one_reply_per_line(self) -> None:
        terminator = framing("terminator", terminator="^END$")
        self.assertEqual(terminator.plan([b"a", b"", b"b"]), Plan(3))
        self.assertEqual(
            (terminator.name, terminator.counts_known, terminator.default_send_replies),
            ("terminator", False, "none"),
        )

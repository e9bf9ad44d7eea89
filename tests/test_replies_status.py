"""The ``status`` framing (bridge.upstream.replies.status): SMTP and FTP
numbered replies, and the SMTP DATA section when planning."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from bridge.errors import BodyError
from bridge.upstream.replies.frames import Frame, FramingError, Plan
from bridge.upstream.replies.status import StatusDecoder, accepts_data, reply_code
from tests.replies_support import (
    as_tuples,
    assert_splits_anywhere,
    cuts,
    decode,
    drain,
    framing,
    pieces,
)


def decoder(max_line_bytes: int = 1 << 20, max_reply_bytes: int = 1 << 20) -> StatusDecoder:
    made = framing("status", max_line_bytes=max_line_bytes,
                   max_reply_bytes=max_reply_bytes).decoder()
    assert isinstance(made, StatusDecoder)
    return made


def reply(raw: bytes, error: bool = False) -> tuple[Any, ...]:
    lines = [line[:-1] if line.endswith(b"\r") else line for line in raw.split(b"\n")[:-1]]
    return (raw, [line.decode("utf-8", "replace") for line in lines], b"\n".join(lines),
            error, False, False)


EXAMPLES = [
    b"220 mail.example.com ESMTP ready\r\n",
    b"250-mail.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 HELP\r\n",
    b"354 End data with <CR><LF>.<CR><LF>\r\n",
    b"550 5.1.1 No such user\r\n",
    b"421 Service not available\r\n",
    b"211-Features:\r\n MDTM\r\n REST STREAM\r\n211 End\r\n",
    b"230-First line\r\nSecond line\r\n  234 A line beginning with numbers\r\n"
    b"230 The last line\r\n",
    b"214-help\r\n214\r\n",
    b"150 Opening data connection\r\n226 Transfer complete\r\n",
    b"150 Opening\r\n425 Can't open data connection\r\n",
    b"110-restart marker\r\nMARK yyyy = mmmm\r\n110 end\r\n150 go\r\n250 ok\r\n",
    b"200\n",
    b"331 Password required\n",
]


class StatusDecoderTests(SynchronousTestCase):
    def expected(self, raw: bytes) -> tuple[Any, ...]:
        final = raw.split(b"\n")[-2].lstrip()[:1]
        return reply(raw, error=final in (b"4", b"5"))

    def test_each_reply_split_at_every_byte(self) -> None:
        for raw in EXAMPLES:
            assert_splits_anywhere(self, decoder, raw, [self.expected(raw)])

    def test_back_to_back(self) -> None:
        frames = decode(decoder(), [b"".join(EXAMPLES)])
        self.assertEqual(as_tuples(frames), [self.expected(raw) for raw in EXAMPLES])

    def test_errors_are_final_4xx_and_5xx(self) -> None:
        frames = decode(decoder(),
                        [b"250 ok\r\n354 go\r\n421 bye\r\n550 no\r\n150 x\r\n550 no\r\n"])
        self.assertEqual([frame.error for frame in frames], [False, False, True, True, True])

    def test_multi_line_value_and_text(self) -> None:
        (frame,) = decode(decoder(), [b"250-a\r\n250 b\r\n"])
        self.assertEqual((frame.value, frame.text), (["250-a", "250 b"], b"250-a\n250 b"))
        self.assertEqual(frame.event_lines(), ["250-a", "250 b"])

    def test_a_different_code_does_not_end_a_multi_line_reply(self) -> None:
        (frame,) = decode(decoder(), [b"250-a\r\n251 not the end\r\n250-still\r\n250 end\r\n"])
        self.assertEqual(len(frame.value), 4)

    def test_reply_code_and_data_acceptance(self) -> None:
        frames = decode(decoder(), [b"354 go ahead\r\n250-x\r\n250 y\r\n150 a\r\n354 b\r\n"])
        self.assertEqual([reply_code(frame) for frame in frames], ["354", "250", "354"])
        self.assertEqual([accepts_data(frame) for frame in frames], [True, False, True])

    def test_buffered(self) -> None:
        made = decoder()
        made.feed(b"220 hi\r\n250-a\r\n250 b")
        self.assertEqual(len(drain(made)), 1)
        self.assertEqual(made.buffered(), len(b"250-a\r\n250 b"))
        made.feed(b"\r\n")
        self.assertEqual(len(drain(made)), 1)
        self.assertEqual(made.buffered(), 0)

    def assertFramingError(self, stream: bytes, message: str, **limits: int) -> None:
        with self.assertRaises(FramingError) as caught:
            decode(decoder(**limits), [stream])
        self.assertIn(message, str(caught.exception))

    def test_not_a_status_line(self) -> None:
        for bad in (b"hello\r\n", b"25 ok\r\n", b"2500 ok\r\n", b"250_ok\r\n", b"\r\n",
                    b"abc def\r\n"):
            self.assertFramingError(bad, "where a status reply was due")
        self.assertFramingError(b"hello\r\n", "received 'hello' where a status reply was due")

    def test_not_a_status_line_after_a_preliminary_reply(self) -> None:
        self.assertFramingError(b"150 ok\r\ngarbage\r\n", "received 'garbage'")

    def test_limits(self) -> None:
        self.assertFramingError(b"250 " + b"x" * 20 + b"\r\n",
                                "received a line of at least 24 bytes; max_line_bytes is 20",
                                max_line_bytes=20)
        self.assertFramingError(b"250-a\r\n250-b\r\n",
                                "received a reply of at least 14 bytes; max_reply_bytes is 10",
                                max_reply_bytes=10)


def reference(stream: bytes) -> list[tuple[Any, ...]]:
    """Frames of a complete stream, by the rules read straight off RFC 959."""
    lines = stream.split(b"\n")[:-1]
    frames = []
    index = 0
    while index < len(lines):
        first = index
        while True:
            code = lines[index][:3]
            if lines[index][3:4] == b"-":
                index += 1
                while not (lines[index].startswith(code + b" ") or
                           lines[index].rstrip(b"\r") == code):
                    index += 1
            index += 1
            if not code.startswith(b"1"):
                break
        raw = b"".join(line + b"\n" for line in lines[first:index])
        frames.append(reply(raw, code[:1] in (b"4", b"5")))
    return frames


_final_code = st.sampled_from([b"200", b"211", b"220", b"250", b"331", b"354", b"421", b"550"])
_preliminary_code = st.sampled_from([b"110", b"125", b"150"])
_text = st.sampled_from([b"", b"ok", b"2.1.0 Ok", b"250 not the end", b"-", b"x y"])
_end = st.sampled_from([b"\r\n", b"\n"])


@st.composite
def _reply(draw: Any) -> bytes:
    """One final reply, single- or multi-line (free-form lines start with a space)."""
    code = draw(_final_code)
    lines = []
    if draw(st.booleans()):
        lines.append(code + b"-" + draw(_text))
        for _ in range(draw(st.integers(0, 3))):
            lines.append(b" " + draw(_text) if draw(st.booleans()) else code + b"-" + draw(_text))
    lines.append(code if draw(st.booleans()) else code + b" " + draw(_text))
    return b"".join(line + draw(_end) for line in lines)


@st.composite
def _frame(draw: Any) -> bytes:
    preliminary = draw(st.lists(_preliminary_code, max_size=2))
    return b"".join(p + b" wait" + draw(_end) for p in preliminary) + draw(_reply())


class StatusPropertyTests(SynchronousTestCase):
    @settings(database=None, max_examples=300, deadline=None)
    @given(st.lists(_frame(), min_size=1, max_size=8), cuts)
    def test_any_split_gives_the_frames_of_the_whole(
        self, replies: list[bytes], offsets: list[int],
    ) -> None:
        stream = b"".join(replies)
        expected = reference(stream)
        self.assertEqual([frame[0] for frame in expected], replies)
        made = decoder()
        self.assertEqual(as_tuples(decode(made, pieces(stream, offsets))), expected)
        self.assertEqual(made.buffered(), 0)


def status_frame(code: bytes) -> Frame:
    (frame,) = decode(decoder(), [code + b" text\r\n"])
    return frame


class StatusPlanTests(SynchronousTestCase):
    def plan(self, *lines: bytes) -> Plan:
        return framing("status").plan(list(lines))

    def test_one_reply_per_line(self) -> None:
        plan = self.plan(b"EHLO me", b"NOOP", b"QUIT")
        self.assertEqual((plan.replies, plan.lines, dict(plan.accept)), (3, None, {}))

    def test_data_section(self) -> None:
        plan = self.plan(b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>", b" data ", b"Subject: hi", b"",
                         b"..dot-stuffed", b".", b"QUIT")
        self.assertEqual((plan.replies, list(plan.lines or [])), (5, [1, 2, 3, 7, 8]))
        self.assertEqual(list(plan.accept), [2])
        check = plan.accept[2]
        self.assertTrue(check(status_frame(b"354")))
        self.assertFalse(check(status_frame(b"503")))
        self.assertFalse(check(status_frame(b"250")))

    def test_two_messages(self) -> None:
        plan = self.plan(b"DATA", b"a", b".", b"DATA", b".")
        self.assertEqual((plan.replies, list(plan.lines or [])), (4, [1, 3, 4, 5]))
        self.assertEqual(sorted(plan.accept), [0, 2])

    def test_data_without_end(self) -> None:
        with self.assertRaises(BodyError) as caught:
            self.plan(b"MAIL FROM:<a@b>", b"DATA", b"text", b". ")
        self.assertEqual((caught.exception.status, caught.exception.code),
                         (400, "invalid_command"))
        self.assertIn("line 2 is DATA but no later line is exactly '.'", caught.exception.message)

    def test_data_like_lines(self) -> None:
        self.assertEqual(self.plan(b"DATAX", b"XDATA", b"data x").replies, 3)

    def test_framing_settings(self) -> None:
        status = framing("status")
        self.assertEqual((status.name, status.counts_known, status.default_send_replies),
                         ("status", True, "check"))

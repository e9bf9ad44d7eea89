"""The ``line`` framing: one frame per line (bridge.upstream.replies.line)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from bridge.upstream.replies.frames import FramingError
from tests.replies_support import (
    as_tuples,
    assert_splits_anywhere,
    cuts,
    decode,
    drain,
    framing,
    pieces,
)


def frame(raw: bytes, line: bytes) -> tuple[object, ...]:
    return (raw, line.decode("utf-8", "replace"), line, False, False, False)


class LineDecoderTests(SynchronousTestCase):
    def decoder(self, **limits: int):  # type: ignore[no-untyped-def]
        return framing("line", **limits).decoder()

    def test_lf_and_crlf_lines(self) -> None:
        frames = decode(self.decoder(), [b"a\nb\r\n\n\r\nc"])
        self.assertEqual(as_tuples(frames), [
            frame(b"a\n", b"a"), frame(b"b\r\n", b"b"), frame(b"\n", b""), frame(b"\r\n", b""),
        ])

    def test_partial_line_waits_and_is_counted(self) -> None:
        decoder = self.decoder()
        decoder.feed(b"OK\r\npart")
        self.assertEqual(as_tuples(drain(decoder)), [frame(b"OK\r\n", b"OK")])
        self.assertEqual(decoder.buffered(), 4)
        decoder.feed(b"ial\r")
        self.assertIsNone(decoder.gets())
        decoder.feed(b"\n")
        self.assertEqual(as_tuples(drain(decoder)), [frame(b"partial\r\n", b"partial")])
        self.assertEqual(decoder.buffered(), 0)

    def test_only_the_cr_before_lf_is_dropped(self) -> None:
        frames = decode(self.decoder(), [b"a\rb\r\r\n"])
        self.assertEqual(as_tuples(frames), [frame(b"a\rb\r\r\n", b"a\rb\r")])

    def test_invalid_utf8_is_replaced_in_value_kept_in_text(self) -> None:
        (only,) = decode(self.decoder(), [b"caf\xe9\n"])
        self.assertEqual((only.value, only.text, only.raw), ("caf\ufffd", b"caf\xe9", b"caf\xe9\n"))
        self.assertEqual(only.event_lines(), ["caf\ufffd"])

    def test_awaited_makes_no_difference(self) -> None:
        decoder = self.decoder()
        decoder.feed(b"x\ny\n")
        self.assertEqual([f.value for f in drain(decoder, awaited=False)], ["x", "y"])

    def test_every_split(self) -> None:
        stream = b"+OK\r\n\nlast line\nwith cr\r\n"
        expected = [frame(b"+OK\r\n", b"+OK"), frame(b"\n", b""),
                    frame(b"last line\n", b"last line"), frame(b"with cr\r\n", b"with cr")]
        assert_splits_anywhere(self, self.decoder, stream, expected)

    def test_line_too_long_when_complete(self) -> None:
        decoder = self.decoder(max_line_bytes=5)
        decoder.feed(b"12345\r\n123456\n")
        self.assertEqual(decoder.gets().value, "12345")  # type: ignore[union-attr]
        with self.assertRaises(FramingError) as caught:
            decoder.gets()
        self.assertEqual(str(caught.exception),
                         "received a line of at least 6 bytes; max_line_bytes is 5")

    def test_line_too_long_while_partial(self) -> None:
        decoder = self.decoder(max_line_bytes=5)
        decoder.feed(b"123456")  # may still be 12345 + CR
        self.assertIsNone(decoder.gets())
        decoder.feed(b"7")
        with self.assertRaises(FramingError) as caught:
            decoder.gets()
        self.assertEqual(str(caught.exception),
                         "received a line of at least 7 bytes; max_line_bytes is 5")

    def test_70000_bytes_against_the_default_limit(self) -> None:
        decoder = self.decoder(max_line_bytes=65536)
        decoder.feed(b"x" * 70000)
        with self.assertRaises(FramingError) as caught:
            decoder.gets()
        self.assertEqual(str(caught.exception),
                         "received a line of at least 70000 bytes; max_line_bytes is 65536")

    def test_reply_too_long(self) -> None:
        decoder = self.decoder(max_line_bytes=100, max_reply_bytes=6)
        decoder.feed(b"1234\r\n12345\r\n")
        self.assertEqual(decoder.gets().raw, b"1234\r\n")  # type: ignore[union-attr]
        with self.assertRaises(FramingError) as caught:
            decoder.gets()
        self.assertEqual(str(caught.exception),
                         "received a reply of at least 7 bytes; max_reply_bytes is 6")

    @settings(database=None, max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.binary(max_size=20).filter(lambda b: b"\n" not in b),
                              st.sampled_from([b"\n", b"\r\n"])), max_size=20), cuts)
    def test_any_split_gives_the_frames_of_the_whole(
        self, lines: list[tuple[bytes, bytes]], offsets: list[int],
    ) -> None:
        stream = b"".join(line + end for line, end in lines)
        # The obvious reference: split the whole stream on LF.
        expected = []
        for piece in stream.split(b"\n")[:-1]:
            content = piece[:-1] if piece.endswith(b"\r") else piece
            expected.append(frame(piece + b"\n", content))
        decoder = self.decoder()
        self.assertEqual(as_tuples(decode(decoder, pieces(stream, offsets))), expected)
        self.assertEqual(decoder.buffered(), 0)


class LinePlanTests(SynchronousTestCase):
    def test_one_reply_per_line(self) -> None:
        line = framing("line")
        self.assertEqual(line.plan([b"a", b"", b"c"]).replies, 3)
        self.assertIsNone(line.plan([b"a"]).lines)
        self.assertEqual(line.plan([b"a", b"b"]).line_of(1), 2)

    def test_settings(self) -> None:
        line = framing("line")
        self.assertEqual((line.name, line.counts_known, line.default_send_replies),
                         ("line", False, "none"))

"""make_framing: the reply_framing setting to a framing (bridge.upstream.replies)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from bridge.upstream.replies import FRAMING_NAMES, make_framing
from bridge.upstream.replies.frames import FramingError


class MakeFramingTests(SynchronousTestCase):
    def test_every_name(self) -> None:
        for name in FRAMING_NAMES:
            terminator = "^OK" if name == "terminator" else None
            framing = make_framing(name, max_line_bytes=10, max_reply_bytes=20,
                                   terminator=terminator)
            self.assertEqual(framing.name, name)
            decoder = framing.decoder()
            self.assertEqual(decoder.buffered(), 0)
            self.assertIsNone(decoder.gets())
            self.assertIsNot(framing.decoder(), decoder)  # one per connection

    def test_limits_reach_the_decoders(self) -> None:
        for name in FRAMING_NAMES:
            terminator = "^OK" if name == "terminator" else None
            decoder = make_framing(name, max_line_bytes=10, max_reply_bytes=20,
                                   terminator=terminator).decoder()
            decoder.feed(b"+" + b"1" * 11 + b"\r\n")
            with self.assertRaises(FramingError, msg=name) as caught:
                decoder.gets()
            self.assertIn("max_line_bytes is 10", str(caught.exception))

    def test_unknown_name(self) -> None:
        with self.assertRaises(ValueError) as caught:
            make_framing("http", max_line_bytes=10, max_reply_bytes=20)
        self.assertEqual(
            str(caught.exception),
            "unknown reply framing 'http'; known: line, resp, memcached, status, terminator",
        )

    def test_terminator_required_and_checked(self) -> None:
        with self.assertRaises(ValueError) as caught:
            make_framing("terminator", max_line_bytes=10, max_reply_bytes=20)
        self.assertIn("needs a terminator regex", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            make_framing("terminator", max_line_bytes=10, max_reply_bytes=20, terminator="(")
        self.assertIn("not a valid regex", str(caught.exception))

    def test_terminator_only_for_its_framing(self) -> None:
        with self.assertRaises(ValueError) as caught:
            make_framing("line", max_line_bytes=10, max_reply_bytes=20, terminator="x")
        self.assertIn("only used by the terminator framing", str(caught.exception))

    def test_limits_must_be_positive(self) -> None:
        with self.assertRaises(ValueError):
            make_framing("line", max_line_bytes=0, max_reply_bytes=20)

"""The ``resp`` framing's decoder (bridge.upstream.replies.resp), checked
case by case and against hiredis as an independent reference."""

from __future__ import annotations

import json
import math
from typing import Any

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from bridge.upstream.replies.frames import FramingError
from bridge.upstream.replies.resp import MAX_DEPTH, RespDecoder
from tests.replies_support import (
    as_tuples,
    assert_splits_anywhere,
    cuts,
    decode,
    drain,
    framing,
    pieces,
)


def decoder(max_line_bytes: int = 1 << 20, max_reply_bytes: int = 1 << 20) -> RespDecoder:
    made = framing("resp", max_line_bytes=max_line_bytes,
                   max_reply_bytes=max_reply_bytes).decoder()
    assert isinstance(made, RespDecoder)
    return made


def reply(raw: bytes, value: Any, text: bytes | None = None, *, error: bool = False,
          push: bool = False) -> tuple[Any, ...]:
    """The expected frame tuple; ``text`` defaults to ``raw`` (aggregates)."""
    return (raw, value, raw if text is None else text, error, push, True)


#: One example of every type: (stream, expected frame), each split at every byte.
EXAMPLES: list[tuple[bytes, tuple[Any, ...]]] = [
    (b"+OK\r\n", reply(b"+OK\r\n", "OK", b"OK")),
    (b"-ERR unknown command\r\n",
     reply(b"-ERR unknown command\r\n", {"error": "ERR unknown command"},
           b"ERR unknown command", error=True)),
    (b":-42\r\n", reply(b":-42\r\n", -42, b"-42")),
    (b"$5\r\nhello\r\n", reply(b"$5\r\nhello\r\n", "hello", b"hello")),
    (b"$6\r\na\r\nb\x00\xff\r\n", reply(b"$6\r\na\r\nb\x00\xff\r\n", "a\r\nb\x00\ufffd",
                                        b"a\r\nb\x00\xff")),
    (b"$0\r\n\r\n", reply(b"$0\r\n\r\n", "", b"")),
    (b"$-1\r\n", reply(b"$-1\r\n", None, b"")),
    (b"*-1\r\n", reply(b"*-1\r\n", None, b"")),
    (b"*0\r\n", reply(b"*0\r\n", [])),
    (b"*3\r\n:1\r\n*2\r\n+a\r\n$-1\r\n-ERR inner\r\n",
     reply(b"*3\r\n:1\r\n*2\r\n+a\r\n$-1\r\n-ERR inner\r\n",
           [1, ["a", None], {"error": "ERR inner"}])),
    (b"_\r\n", reply(b"_\r\n", None, b"")),
    (b"#t\r\n", reply(b"#t\r\n", True, b"t")),
    (b"#f\r\n", reply(b"#f\r\n", False, b"f")),
    (b",3.25\r\n", reply(b",3.25\r\n", 3.25, b"3.25")),
    (b",inf\r\n", reply(b",inf\r\n", "inf", b"inf")),
    (b",-inf\r\n", reply(b",-inf\r\n", "-inf", b"-inf")),
    (b",nan\r\n", reply(b",nan\r\n", "nan", b"nan")),
    (b",1e+300\r\n", reply(b",1e+300\r\n", 1e300, b"1e+300")),
    (b"(3492890328409238509324850943850943825024385\r\n",
     reply(b"(3492890328409238509324850943850943825024385\r\n",
           3492890328409238509324850943850943825024385,
           b"3492890328409238509324850943850943825024385")),
    (b"!21\r\nSYNTAX invalid syntax\r\n",
     reply(b"!21\r\nSYNTAX invalid syntax\r\n", {"error": "SYNTAX invalid syntax"},
           b"SYNTAX invalid syntax", error=True)),
    (b"=15\r\ntxt:Some string\r\n",
     reply(b"=15\r\ntxt:Some string\r\n", "Some string", b"Some string")),
    (b"%2\r\n+first\r\n:1\r\n:2\r\n*1\r\n#t\r\n",
     reply(b"%2\r\n+first\r\n:1\r\n:2\r\n*1\r\n#t\r\n", {"first": 1, "2": [True]})),
    (b"~2\r\n+a\r\n:1\r\n", reply(b"~2\r\n+a\r\n:1\r\n", ["a", 1])),
    (b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.1923\r\n*1\r\n:2039123\r\n",
     reply(b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.1923\r\n*1\r\n:2039123\r\n",
           [2039123])),
    (b"|1\r\n+ttl\r\n:3\r\n+OK\r\n", reply(b"|1\r\n+ttl\r\n:3\r\n+OK\r\n", "OK", b"OK")),
    (b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
     reply(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n", ["message", "ch", "hi"],
           push=True)),
]


class RespTypeTests(SynchronousTestCase):
    def test_each_type_split_at_every_byte(self) -> None:
        for stream, expected in EXAMPLES:
            assert_splits_anywhere(self, decoder, stream, [expected])

    def test_all_examples_back_to_back(self) -> None:
        stream = b"".join(stream for stream, _ in EXAMPLES)
        frames = decode(decoder(), [stream])
        self.assertEqual(as_tuples(frames), [expected for _, expected in EXAMPLES])

    def test_lf_only_lines_are_accepted(self) -> None:
        frames = decode(decoder(), [b"+OK\n*2\n:1\n$1\nx\r\n"])
        self.assertEqual([frame.value for frame in frames], ["OK", [1, "x"]])
        self.assertEqual(frames[1].raw, b"*2\n:1\n$1\nx\r\n")

    def test_map_keys_that_are_not_strings(self) -> None:
        stream = b"%4\r\n:1\r\n+int\r\n_\r\n+null\r\n*2\r\n:1\r\n+x\r\n+list\r\n#t\r\n+bool\r\n"
        (frame,) = decode(decoder(), [stream])
        self.assertEqual(frame.value,
                         {"1": "int", "null": "null", json.dumps([1, "x"]): "list", "true": "bool"})

    def test_nested_attribute_is_dropped_from_its_parent(self) -> None:
        stream = b"*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n|0\r\n:2\r\n"
        (frame,) = decode(decoder(), [stream])
        self.assertEqual((frame.value, frame.raw), ([1, 2], stream))

    def test_nested_errors_do_not_mark_the_frame(self) -> None:
        (frame,) = decode(decoder(), [b"*1\r\n!3\r\nERR\r\n"])
        self.assertEqual((frame.value, frame.error), ([{"error": "ERR"}], False))

    def test_null_variants(self) -> None:
        frames = decode(decoder(), [b"%-1\r\n~-1\r\n!-1\r\n=-1\r\n"])
        self.assertEqual([(f.value, f.error, f.text) for f in frames], [(None, False, b"")] * 4)

    def test_empty_aggregates(self) -> None:
        frames = decode(decoder(), [b"%0\r\n~0\r\n>0\r\n"])
        self.assertEqual([(f.value, f.push) for f in frames],
                         [({}, False), ([], False), ([], True)])

    def test_json_events(self) -> None:
        (frame,) = decode(decoder(), [b"*2\r\n+a\r\n:1\r\n"])
        self.assertEqual(frame.event_lines(), ['["a", 1]'])
        (frame,) = decode(decoder(), [b"+OK\r\n"])
        self.assertEqual(frame.event_lines(), ['"OK"'])

    def test_depth_64_is_allowed(self) -> None:
        stream = b"*1\r\n" * MAX_DEPTH + b":1\r\n"
        (frame,) = decode(decoder(), [stream])
        value = frame.value
        for _ in range(MAX_DEPTH):
            value = value[0]
        self.assertEqual(value, 1)

    def test_buffered_counts_the_partial_frame(self) -> None:
        made = decoder()
        made.feed(b"+OK\r\n*2\r\n:1\r\n$3\r\nab")
        self.assertEqual(drain(made)[0].value, "OK")
        self.assertEqual(made.buffered(), len(b"*2\r\n:1\r\n$3\r\nab"))
        made.feed(b"c\r\n")
        self.assertEqual(drain(made)[0].value, [1, "abc"])
        self.assertEqual(made.buffered(), 0)

    def test_large_bulk_in_many_pieces(self) -> None:
        data = bytes(range(256)) * 400
        stream = b"$%d\r\n" % len(data) + data + b"\r\n"
        made = decoder()
        frames = decode(made, [stream[i : i + 1000] for i in range(0, len(stream), 1000)])
        self.assertEqual(len(frames), 1)
        self.assertEqual(frames[0].text, data)


class RespErrorTests(SynchronousTestCase):
    def assertFramingError(self, stream: bytes, message: str, **limits: int) -> None:
        made = decoder(**limits)
        with self.assertRaises(FramingError) as caught:
            decode(made, [stream])
        self.assertIn(message, str(caught.exception))

    def test_unknown_type(self) -> None:
        self.assertFramingError(b"?what\r\n", "'?' is not a RESP type")
        self.assertFramingError(b"hello\r\n", "'h' is not a RESP type")

    def test_unknown_type_nested(self) -> None:
        self.assertFramingError(b"*1\r\n@x\r\n", "'@' is not a RESP type")

    def test_malformed_lengths(self) -> None:
        self.assertFramingError(b"$abc\r\n", "malformed RESP length of '$'")
        self.assertFramingError(b"*\r\n", "malformed RESP length of '*'")
        self.assertFramingError(b"$ 5\r\n", "malformed RESP length of '$'")
        self.assertFramingError(b"$+5\r\n", "malformed RESP length of '$'")

    def test_negative_lengths_other_than_minus_one(self) -> None:
        self.assertFramingError(b"$-2\r\n", "malformed RESP length")
        self.assertFramingError(b"*-5\r\n", "malformed RESP length")
        self.assertFramingError(b">-1\r\n", "malformed RESP length")
        self.assertFramingError(b"|-1\r\n", "malformed RESP length")

    def test_malformed_scalars(self) -> None:
        self.assertFramingError(b":1.5\r\n", "malformed RESP integer")
        self.assertFramingError(b": 1\r\n", "malformed RESP integer")
        self.assertFramingError(b":\r\n", "malformed RESP integer")
        self.assertFramingError(b"(12a\r\n", "malformed RESP big number")
        self.assertFramingError(b",abc\r\n", "malformed RESP double")
        self.assertFramingError(b",1e999\r\n", "malformed RESP double")
        self.assertFramingError(b"#x\r\n", "malformed RESP boolean")
        self.assertFramingError(b"_x\r\n", "malformed RESP null")
        self.assertFramingError(b"=3\r\nabc\r\n", "verbatim string does not start with its format")

    def test_nesting_deeper_than_64(self) -> None:
        self.assertFramingError(b"*1\r\n" * (MAX_DEPTH + 1) + b":1\r\n",
                                "nests aggregates deeper than 64")

    def test_bulk_longer_than_max_line_bytes(self) -> None:
        self.assertFramingError(
            b"$11\r\n", "received a bulk string of 11 bytes; max_line_bytes is 10",
            max_line_bytes=10,
        )

    def test_missing_crlf_after_bulk(self) -> None:
        self.assertFramingError(b"$3\r\nabcd\r\n",
                                "a bulk string of 3 bytes is not followed by CRLF")
        self.assertFramingError(b"$3\r\nabc\n:1\r\n", "not followed by CRLF")

    def test_streamed_types(self) -> None:
        self.assertFramingError(b"$?\r\n;4\r\nHell\r\n;0\r\n", "streamed RESP3")
        self.assertFramingError(b"*?\r\n:1\r\n.\r\n", "streamed RESP3")

    def test_header_line_too_long(self) -> None:
        self.assertFramingError(b"+" + b"x" * 20 + b"\r\n",
                                "received a line of at least 21 bytes; max_line_bytes is 20",
                                max_line_bytes=20)
        self.assertFramingError(b"+" + b"x" * 30,
                                "received a line of at least 31 bytes; max_line_bytes is 20",
                                max_line_bytes=20)

    def test_reply_too_long_complete(self) -> None:
        self.assertFramingError(b"*3\r\n:1\r\n:2\r\n:3\r\n",
                                "received a reply of at least 12 bytes; max_reply_bytes is 10",
                                max_reply_bytes=10)

    def test_reply_too_long_while_partial(self) -> None:
        made = decoder(max_reply_bytes=10)
        made.feed(b"*9\r\n:1\r\n:")
        self.assertIsNone(made.gets())
        made.feed(b"23")
        with self.assertRaises(FramingError) as caught:
            made.gets()
        self.assertEqual(str(caught.exception),
                         "received a reply of at least 11 bytes; max_reply_bytes is 10")

    def test_reply_too_long_announced_by_a_bulk(self) -> None:
        self.assertFramingError(b"$100\r\nabc", "received a reply of at least 108 bytes",
                                max_reply_bytes=50)

    def test_earlier_frames_come_out_before_the_error(self) -> None:
        made = decoder()
        made.feed(b"+OK\r\n!bad\r\n")
        self.assertEqual(made.gets().value, "OK")  # type: ignore[union-attr]
        with self.assertRaises(FramingError):
            made.gets()


# -- hiredis as the reference -------------------------------------------------

def _line_safe(data: bytes) -> bool:
    return b"\r" not in data and b"\n" not in data


def _double_text(number: float) -> bytes:
    if math.isnan(number):
        return b"nan"
    if math.isinf(number):
        return b"inf" if number > 0 else b"-inf"
    return repr(number).encode()


def encode(tree: tuple[Any, ...]) -> bytes:
    """RESP bytes of a generated value tree."""
    kind = tree[0]
    if kind == "simple":
        return b"+" + tree[1] + b"\r\n"
    if kind == "error":
        return b"-" + tree[1] + b"\r\n"
    if kind == "int":
        return b":%d\r\n" % tree[1]
    if kind == "bulk":
        return b"$%d\r\n" % len(tree[1]) + tree[1] + b"\r\n"
    if kind == "verbatim":
        return b"=%d\r\ntxt:" % (len(tree[1]) + 4) + tree[1] + b"\r\n"
    if kind == "nullbulk":
        return b"$-1\r\n"
    if kind == "nullarray":
        return b"*-1\r\n"
    if kind == "null":
        return b"_\r\n"
    if kind == "bool":
        return b"#t\r\n" if tree[1] else b"#f\r\n"
    if kind == "double":
        return b"," + _double_text(tree[1]) + b"\r\n"
    if kind == "big":
        return b"(%d\r\n" % tree[1]
    if kind == "map":
        return b"%%%d\r\n" % len(tree[1]) + b"".join(
            encode(key) + encode(value) for key, value in tree[1]
        )
    marker = {"array": b"*", "set": b"~", "push": b">"}[kind]
    return marker + b"%d\r\n" % len(tree[1]) + b"".join(encode(item) for item in tree[1])


def from_hiredis(value: Any, tree: tuple[Any, ...]) -> Any:
    """hiredis' reading of a value, in our JSON rules.  The tree is only used
    where hiredis' types are ambiguous (a big number comes back as bytes)."""
    kind = tree[0]
    if isinstance(value, hiredis.ReplyError):
        return {"error": str(value)}
    if kind == "big":
        return int(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        result = {}
        for (key, item), (key_tree, item_tree) in zip(value.items(), tree[1], strict=True):
            mapped = from_hiredis(key, key_tree)
            result[mapped if isinstance(mapped, str) else json.dumps(mapped)] = from_hiredis(
                item, item_tree
            )
        return result
    if isinstance(value, list):
        return [from_hiredis(item, item_tree)
                for item, item_tree in zip(value, tree[1], strict=True)]
    return value  # int, bool, None


def _json_key(tree: tuple[Any, ...]) -> str:
    if tree[0] == "int":
        return json.dumps(tree[1])
    return str(tree[1].decode("utf-8", "replace"))


_line_bytes = st.binary(max_size=12).filter(_line_safe)
_keys = st.one_of(
    _line_bytes.map(lambda b: ("simple", b)),
    st.binary(max_size=12).map(lambda b: ("bulk", b)),
    st.integers(-1000, 1000).map(lambda i: ("int", i)),
)
_scalars = st.one_of(
    _line_bytes.map(lambda b: ("simple", b)),
    _line_bytes.map(lambda b: ("error", b)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: ("int", i)),
    st.binary(max_size=40).map(lambda b: ("bulk", b)),
    st.binary(max_size=20).map(lambda b: ("verbatim", b)),
    st.sampled_from([("nullbulk",), ("nullarray",), ("null",)]),
    st.booleans().map(lambda b: ("bool", b)),
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([math.inf, -math.inf, math.nan]),
    ).map(lambda f: ("double", f)),
    st.integers(-(10**40), 10**40).map(lambda i: ("big", i)),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: ("array", items)),
        st.lists(children, max_size=4).map(lambda items: ("set", items)),
        st.lists(st.tuples(_keys, children), max_size=3,
                 unique_by=lambda pair: _json_key(pair[0])).map(lambda pairs: ("map", pairs)),
    ),
    max_leaves=25,
)
_replies = st.one_of(_values, st.lists(_values, max_size=3).map(lambda items: ("push", items)))


class RespAgainstHiredisTests(SynchronousTestCase):
    # The strategy's repr is long (it is built from many small ones): harmless.
    @pytest.mark.filterwarnings("ignore:Generating overly large repr")
    @settings(database=None, max_examples=200, deadline=None)
    @given(st.lists(_replies, min_size=1, max_size=8), cuts)
    def test_values_match_hiredis_at_any_split(
        self, trees: list[tuple[Any, ...]], offsets: list[int],
    ) -> None:
        encoded = [encode(tree) for tree in trees]
        stream = b"".join(encoded)
        missing = object()  # hiredis' default, False, is also a RESP3 boolean
        reader = hiredis.Reader(notEnoughData=missing)
        reader.feed(stream)
        expected = []
        for tree in trees:
            value = reader.gets()
            self.assertIsNot(value, missing)
            expected.append(from_hiredis(value, tree))
        self.assertIs(reader.gets(), missing)

        made = decoder()
        frames = decode(made, pieces(stream, offsets))
        self.assertEqual([frame.value for frame in frames], expected)
        self.assertEqual([frame.raw for frame in frames], encoded)
        self.assertEqual([frame.push for frame in frames], [t[0] == "push" for t in trees])
        self.assertEqual([frame.error for frame in frames], [t[0] == "error" for t in trees])
        self.assertEqual(made.buffered(), 0)

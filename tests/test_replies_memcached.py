"""The ``memcached`` framing (bridge.upstream.replies.memcached and
memcached_plan): frames of the text protocol, and the replies commands expect."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from bridge.errors import BodyError
from bridge.upstream.replies.frames import FramingError, Plan
from bridge.upstream.replies.memcached import MemcachedDecoder
from tests.replies_support import (
    as_tuples,
    assert_splits_anywhere,
    cuts,
    decode,
    drain,
    framing,
    pieces,
)


def decoder(max_line_bytes: int = 1 << 20, max_reply_bytes: int = 1 << 20) -> MemcachedDecoder:
    made = framing("memcached", max_line_bytes=max_line_bytes,
                   max_reply_bytes=max_reply_bytes).decoder()
    assert isinstance(made, MemcachedDecoder)
    return made


def reply(raw: bytes, lines: list[bytes], error: bool = False) -> tuple[Any, ...]:
    return (raw, [line.decode("utf-8", "replace") for line in lines], b"\n".join(lines),
            error, False, False)


EXAMPLES: list[tuple[bytes, tuple[Any, ...]]] = [
    (b"STORED\r\n", reply(b"STORED\r\n", [b"STORED"])),
    (b"END\r\n", reply(b"END\r\n", [b"END"])),
    (b"VALUE k 0 5\r\nhello\r\nEND\r\n",
     reply(b"VALUE k 0 5\r\nhello\r\nEND\r\n", [b"VALUE k 0 5", b"hello", b"END"])),
    (b"VALUE a 1 8 42\r\nx\r\nEND\r\n\r\nVALUE b 2 0 43\r\n\r\nEND\r\n",
     reply(b"VALUE a 1 8 42\r\nx\r\nEND\r\n\r\nVALUE b 2 0 43\r\n\r\nEND\r\n",
           [b"VALUE a 1 8 42", b"x\r\nEND\r\n", b"VALUE b 2 0 43", b"", b"END"])),
    (b"STAT pid 1\r\nSTAT uptime 2\r\nEND\r\n",
     reply(b"STAT pid 1\r\nSTAT uptime 2\r\nEND\r\n", [b"STAT pid 1", b"STAT uptime 2", b"END"])),
    (b"ITEM k [2 b; 0 s]\r\nEND\r\n", reply(b"ITEM k [2 b; 0 s]\r\nEND\r\n",
                                          [b"ITEM k [2 b; 0 s]", b"END"])),
    (b"key=k exp=-1 la=1\nEND\r\n", reply(b"key=k exp=-1 la=1\nEND\r\n",
                                         [b"key=k exp=-1 la=1", b"END"])),
    (b"PREFIX a get 1 hit 1 set 0 del 0\r\nEND\r\n",
     reply(b"PREFIX a get 1 hit 1 set 0 del 0\r\nEND\r\n",
           [b"PREFIX a get 1 hit 1 set 0 del 0", b"END"])),
    (b"VA 2 c3 t-1\r\nhi\r\n", reply(b"VA 2 c3 t-1\r\nhi\r\n", [b"VA 2 c3 t-1", b"hi"])),
    (b"VA 0\r\n\r\n", reply(b"VA 0\r\n\r\n", [b"VA 0", b""])),
    (b"HD c3\r\n", reply(b"HD c3\r\n", [b"HD c3"])),
    (b"ERROR\r\n", reply(b"ERROR\r\n", [b"ERROR"], error=True)),
    (b"CLIENT_ERROR bad data chunk\r\n",
     reply(b"CLIENT_ERROR bad data chunk\r\n", [b"CLIENT_ERROR bad data chunk"], error=True)),
    (b"SERVER_ERROR out of memory\r\n",
     reply(b"SERVER_ERROR out of memory\r\n", [b"SERVER_ERROR out of memory"], error=True)),
    (b"VALUE k 0 1\r\nx\r\nSERVER_ERROR out of memory writing get response\r\n",
     reply(b"VALUE k 0 1\r\nx\r\nSERVER_ERROR out of memory writing get response\r\n",
           [b"VALUE k 0 1", b"x", b"SERVER_ERROR out of memory writing get response"],
           error=True)),
    (b"STAT a 1\r\nSERVER_ERROR busy\r\n",
     reply(b"STAT a 1\r\nSERVER_ERROR busy\r\n", [b"STAT a 1", b"SERVER_ERROR busy"], True)),
    (b"12\r\n", reply(b"12\r\n", [b"12"])),
    (b"VERSION 1.6.18\n", reply(b"VERSION 1.6.18\n", [b"VERSION 1.6.18"])),
]


class MemcachedDecoderTests(SynchronousTestCase):
    def test_each_reply_split_at_every_byte(self) -> None:
        for stream, expected in EXAMPLES:
            assert_splits_anywhere(self, decoder, stream, [expected])

    def test_all_back_to_back(self) -> None:
        stream = b"".join(stream for stream, _ in EXAMPLES)
        self.assertEqual(as_tuples(decode(decoder(), [stream])),
                         [expected for _, expected in EXAMPLES])

    def test_binary_data_block(self) -> None:
        data = bytes(range(256))
        stream = b"VALUE bin 0 256\r\n" + data + b"\r\nEND\r\n"
        (frame,) = decode(decoder(), [stream])
        self.assertEqual(frame.raw, stream)
        self.assertEqual(frame.value[1], data.decode("utf-8", "replace"))
        self.assertEqual(frame.event_lines()[0], "VALUE bin 0 256")

    def test_buffered(self) -> None:
        made = decoder()
        made.feed(b"STORED\r\nVALUE k 0 5\r\nhel")
        self.assertEqual(len(drain(made)), 1)
        self.assertEqual(made.buffered(), len(b"VALUE k 0 5\r\nhel"))
        made.feed(b"lo\r\nEND\r\n")
        self.assertEqual(len(drain(made)), 1)
        self.assertEqual(made.buffered(), 0)

    def assertFramingError(self, stream: bytes, message: str, **limits: int) -> None:
        with self.assertRaises(FramingError) as caught:
            decode(decoder(**limits), [stream])
        self.assertIn(message, str(caught.exception))

    def test_data_block_not_followed_by_crlf(self) -> None:
        self.assertFramingError(b"VALUE k 0 1\r\nxy\r\nEND\r\n",
                                "the data block of 'VALUE k 0 1' is not followed by CRLF")
        self.assertFramingError(b"VA 1\r\nx\nEND\r\n", "not followed by CRLF")

    def test_malformed_item_headers(self) -> None:
        self.assertFramingError(b"VALUE k 0 x\r\n", "malformed item header")
        self.assertFramingError(b"VALUE k 0\r\n", "malformed item header")
        self.assertFramingError(b"VALUE k 0 1 2 3\r\n", "malformed item header")
        self.assertFramingError(b"VA -1\r\n", "malformed item header")

    def test_stray_line_among_items(self) -> None:
        self.assertFramingError(b"VALUE k 0 1\r\nx\r\nSTORED\r\n",
                                "received 'STORED' among VALUE items")

    def test_limits(self) -> None:
        self.assertFramingError(b"VALUE k 0 13\r\n",
                                "received a data block of 13 bytes; max_line_bytes is 12",
                                max_line_bytes=12)
        self.assertFramingError(b"STORED_AND_MORE\r\n",
                                "received a line of at least 15 bytes; max_line_bytes is 10",
                                max_line_bytes=10)
        self.assertFramingError(b"STAT a 1\r\nSTAT b 2\r\nEND\r\n",
                                "received a reply of at least 20 bytes; max_reply_bytes is 15",
                                max_reply_bytes=15)
        self.assertFramingError(b"VALUE k 0 100\r\nabc",
                                "received a reply of at least 117 bytes; max_reply_bytes is 50",
                                max_reply_bytes=50)


# -- property: any split gives the frames of an obvious whole-stream parser ---

_ERRORS = (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")


def reference(stream: bytes) -> list[tuple[Any, ...]]:
    """Frames of a complete stream, parsed in one go with no state kept."""

    def line_at(pos: int) -> tuple[bytes, int]:
        end = stream.index(b"\n", pos)
        line = stream[pos:end]
        return (line[:-1] if line.endswith(b"\r") else line), end + 1

    frames = []
    pos = 0
    while pos < len(stream):
        start = pos
        line, pos = line_at(pos)
        lines: list[bytes] = []
        multi = line.startswith((b"VALUE ", b"STAT ", b"ITEM ", b"PREFIX ", b"key="))
        while True:
            lines.append(line)
            if line.startswith(b"VALUE ") or line.startswith(b"VA "):
                size = int(line.split(b" ")[3 if line.startswith(b"VALUE ") else 1])
                lines.append(stream[pos : pos + size])
                pos += size + 2
            if not multi or line == b"END" or line.startswith(_ERRORS):
                break
            line, pos = line_at(pos)
        frames.append(reply(stream[start:pos], lines,
                            line.startswith(_ERRORS)))
    return frames


_key = st.text(alphabet="abcxyz:_", min_size=1, max_size=8).map(str.encode)
_data = st.one_of(st.binary(max_size=30), st.sampled_from([b"END", b"\r\nEND\r\n", b"STAT x"]))
_item = st.builds(
    lambda key, flags, data, cas: b"VALUE %s %d %d%s\r\n%s\r\n" % (
        key, flags, len(data), b"" if cas is None else b" %d" % cas, data),
    _key, st.integers(0, 2**32 - 1), _data, st.none() | st.integers(0, 2**64 - 1),
)
_ending = st.sampled_from([b"END\r\n", b"SERVER_ERROR out of memory writing get response\r\n"])
_one_line = st.sampled_from([
    b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND", b"DELETED", b"TOUCHED", b"OK", b"RESET",
    b"12345", b"VERSION 1.6.18", b"HD", b"HD c3 t-1", b"EN", b"NF", b"NS", b"EX", b"MN",
    b"ME k exp=-1 la=3 cas=2 fetch=no cls=1 size=63", b"ERROR", b"CLIENT_ERROR bad format",
    b"SERVER_ERROR out of memory", b"END", b"BUSY currently processing", b"ERROR: shutdown",
]).map(lambda line: line + b"\r\n")
_listing = st.builds(
    lambda kind, lines, end: b"".join(b"%s %s\r\n" % (kind, line) for line in lines) + end,
    st.sampled_from([b"STAT", b"ITEM", b"PREFIX"]),
    st.lists(st.sampled_from([b"pid 1", b"items:1:number 5", b"k [2 b; 0 s]", b"a get 1"]),
             min_size=1, max_size=4),
    _ending,
)
_metadump = st.lists(st.just(b"key=k exp=-1 la=1 cas=3 fetch=yes cls=1 size=62\n"),
                     min_size=1, max_size=3).map(lambda lines: b"".join(lines) + b"END\r\n")
_va = _data.map(lambda data: b"VA %d c3\r\n%s\r\n" % (len(data), data))
_replies = st.one_of(
    _one_line,
    st.builds(lambda items, end: b"".join(items) + end,
              st.lists(_item, min_size=1, max_size=3), _ending),
    _listing, _metadump, _va,
)


class MemcachedPropertyTests(SynchronousTestCase):
    @settings(database=None, max_examples=300, deadline=None)
    @given(st.lists(_replies, min_size=1, max_size=8), cuts)
    def test_any_split_gives_the_frames_of_the_whole(
        self, replies: list[bytes], offsets: list[int],
    ) -> None:
        stream = b"".join(replies)
        expected = reference(stream)
        self.assertEqual([frame[0] for frame in expected], replies)
        made = decoder()
        self.assertEqual(as_tuples(decode(made, pieces(stream, offsets))), expected)
        self.assertEqual(made.buffered(), 0)


# -- planning -------------------------------------------------------------------

def plan(*lines: bytes) -> Plan:
    return framing("memcached").plan(list(lines))


def refused(*lines: bytes) -> str:
    try:
        plan(*lines)
    except BodyError as error:
        assert (error.status, error.code) == (400, "invalid_command")
        return error.message
    raise AssertionError(f"{lines!r} was not refused")


class MemcachedPlanTests(SynchronousTestCase):
    def test_storage_takes_the_next_line(self) -> None:
        self.assertEqual(plan(b"set k 0 0 5", b"hello", b"get k"), Plan(2, [1, 3]))
        self.assertEqual(plan(b"add k 1 60 0", b"", b"replace k 0 -1 3 junk", b"abc"),
                         Plan(2, [1, 3]))
        self.assertEqual(plan(b"append k 0 0 1", b"x", b"prepend k 0 0 1", b"y"), Plan(2, [1, 3]))
        self.assertEqual(plan(b"cas k 0 0 2 99", b"hi"), Plan(1, [1]))

    def test_data_may_look_like_a_command(self) -> None:
        self.assertEqual(plan(b"set k 0 0 12 noreply", b"delete k 0 x", b"quit"), Plan(0, []))

    def test_storage_noreply(self) -> None:
        self.assertEqual(plan(b"set k 0 0 1 noreply", b"x", b"get k"), Plan(1, [3]))
        self.assertEqual(plan(b"cas k 0 0 1 5 noreply", b"x"), Plan(0, []))

    def test_storage_data_line_must_match(self) -> None:
        self.assertIn("line 1 announces 5 bytes of data but line 2 is 4 bytes",
                      refused(b"set k 0 0 5", b"hell"))
        self.assertIn("line 3 is set but no data line follows",
                      refused(b"get a", b"get b", b"set k 0 0 5"))

    def test_malformed_storage_commands(self) -> None:
        for line in (b"set k 0 0", b"set k 0 0 x", b"set k x 0 1", b"set k 0 y 1",
                     b"set k 0 0 1 noreply extra", b"cas k 0 0 1", b"cas k 0 0 1 x",
                     b"set k 0 0 -1", b"set k\t0 0 1"):
            self.assertIn("line 1 is not a well-formed storage command",
                          refused(line, b"x"), line)

    def test_key_too_long(self) -> None:
        self.assertIn("has a key of 251 bytes", refused(b"set " + b"k" * 251 + b" 0 0 1", b"x"))
        self.assertEqual(plan(b"set " + b"k" * 250 + b" 0 0 1", b"x"), Plan(1, [1]))

    def test_meta_set(self) -> None:
        self.assertEqual(plan(b"ms k 2 T0 F5", b"hi", b"mn"), Plan(2, [1, 3]))
        self.assertIn("not a well-formed meta set", refused(b"ms k", b"x"))
        self.assertIn("not a well-formed meta set", refused(b"ms k x", b"x"))
        self.assertIn("q (quiet) flag", refused(b"ms k 1 q", b"x"))

    def test_quiet_meta_commands(self) -> None:
        for line in (b"mg k v q", b"md k q", b"ma k q N0", b"mg k qk"):
            self.assertIn("line 2 has the q (quiet) flag", refused(b"mn", line))
        self.assertEqual(plan(b"mg k v Oq1", b"md k", b"ma k", b"mn", b"me k"), Plan(5))

    def test_noreply_commands(self) -> None:
        self.assertEqual(plan(b"delete k noreply", b"delete k 0 noreply", b"incr n 1 noreply",
                              b"decr n 1 noreply", b"touch k 10 noreply", b"flush_all noreply",
                              b"flush_all 0 noreply", b"verbosity 1 noreply",
                              b"cache_memlimit 100 noreply", b"incr k noreply"),
                         Plan(0, []))

    def test_noreply_that_memcached_does_not_honour(self) -> None:
        # Checked against memcached 1.6.18: these are answered.
        self.assertEqual(plan(b"delete noreply", b"delete a b c noreply",
                              b"flush_all 1 2 noreply", b"verbosity 1 2 noreply",
                              b"get noreply"), Plan(5))

    def test_quit_gets_no_reply(self) -> None:
        self.assertEqual(plan(b"get k", b"quit"), Plan(1, [1]))

    def test_everything_else_one_reply(self) -> None:
        self.assertEqual(plan(b"get a b c", b"gets a", b"gat 10 a", b"gats 10 a", b"stats",
                              b"stats items", b"version", b"", b"   ", b"GET a", b"bogus",
                              b"verbosity 1", b"lru_crawler crawl all"), Plan(13))

    def test_streams_are_refused(self) -> None:
        self.assertIn("line 1 is watch", refused(b"watch fetchers"))
        self.assertIn("lru_crawler metadump", refused(b"lru_crawler metadump all"))
        self.assertIn("lru_crawler mgdump", refused(b"lru_crawler mgdump 1"))

    def test_long_command_lines(self) -> None:
        keys = b" ".join(b"key%d" % i for i in range(1000))
        self.assertEqual(plan(b"get " + keys, b"gets " + keys), Plan(2))
        self.assertIn("line 1 is 2049 bytes", refused(b"version " + b"x" * 2041))
        self.assertIn("unless it is a get", refused(b"gat 0 " + keys))

    def test_framing_settings(self) -> None:
        memcached = framing("memcached")
        self.assertEqual(
            (memcached.name, memcached.counts_known, memcached.default_send_replies),
            ("memcached", True, "check"),
        )

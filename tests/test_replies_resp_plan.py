"""Planning Redis inline commands (bridge.upstream.replies.inline): how many
replies Redis sends, and which lines it would misread."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from bridge.errors import BodyError
from bridge.upstream.replies.frames import Plan
from bridge.upstream.replies.inline import _replies, _split_exactly, plan_inline, split_args
from tests.replies_support import framing


class SplitArgsTests(SynchronousTestCase):
    """sdssplitargs, case by case (the examples of src/sds.c and more)."""

    def test_plain(self) -> None:
        self.assertEqual(split_args(b"SET  key\tvalue "), [b"SET", b"key", b"value"])
        self.assertEqual(split_args(b""), [])
        self.assertEqual(split_args(b" \t \x0b\x0c "), [])

    def test_double_quotes_and_escapes(self) -> None:
        self.assertEqual(split_args(b'SET k "a b\\n\\x41\\x4\\"c"'),
                         [b"SET", b"k", b"a b\nAx4\"c"])
        self.assertEqual(split_args(b'"\\t\\r\\b\\a\\q"'), [b"\t\r\b\aq"])
        self.assertEqual(split_args(b'""'), [b""])
        self.assertEqual(split_args(b'"" ""'), [b"", b""])

    def test_single_quotes(self) -> None:
        self.assertEqual(split_args(b"SET k 'it\\'s \\n'"), [b"SET", b"k", b"it's \\n"])

    def test_quotes_inside_a_token(self) -> None:
        self.assertEqual(split_args(b'a"b c"'), [b"ab c"])

    def test_unbalanced(self) -> None:
        self.assertIsNone(split_args(b'GET "a'))
        self.assertIsNone(split_args(b"GET 'a"))
        self.assertIsNone(split_args(b'GET "a"b'))  # closing quote must end the token
        self.assertIsNone(split_args(b'GET "a\\"'))

    def test_vertical_tab_ends_no_token(self) -> None:
        # isspace() skips VT and FF between tokens, but only space, tab, CR
        # and LF end one.
        self.assertEqual(split_args(b"a\x0bb \x0bc"), [b"a\x0bb", b"c"])

    @settings(database=None, max_examples=300)
    @given(st.lists(st.sampled_from([b"a", b"B", b" ", b"\t", b"\r", b"\xff", b"*"]),
                    max_size=20).map(b"".join))
    def test_the_fast_path_splits_like_sdssplitargs(self, line: bytes) -> None:
        self.assertEqual(split_args(line), _split_exactly(line))


def refused(lines: list[bytes]) -> BodyError:
    try:
        plan_inline(lines)
    except BodyError as error:
        return error
    raise AssertionError(f"{lines!r} was not refused")


class InlinePlanTests(SynchronousTestCase):
    def test_one_reply_per_command(self) -> None:
        self.assertEqual(plan_inline([b"SET k v", b"GET k", b"MULTI", b"INCR n", b"EXEC"]),
                         Plan(5))

    def test_blank_lines_get_no_reply(self) -> None:
        plan = plan_inline([b"", b"PING", b"  \t", b"GET k", b"\x0b"])
        self.assertEqual(plan, Plan(2, [2, 4]))
        self.assertEqual([plan.line_of(0), plan.line_of(1)], [2, 4])

    def test_only_blank_lines(self) -> None:
        self.assertEqual(plan_inline([b"", b" "]), Plan(0, []))

    def test_empty_quoted_argument_is_a_command(self) -> None:
        # Redis 7 answers -ERR unknown command '' (checked in the real-server test).
        self.assertEqual(plan_inline([b'""', b"PING"]), Plan(2))

    def test_unbalanced_quotes(self) -> None:
        error = refused([b"PING", b'SET k "v'])
        self.assertEqual((error.status, error.code), (400, "invalid_command"))
        self.assertIn("line 2 has unbalanced quotes", error.message)
        self.assertIn("closes the connection", error.message)
        self.assertIn("line 1 has unbalanced quotes", refused([b"GET 'a'b"]).message)

    def test_multibulk_first_byte(self) -> None:
        self.assertIn("line 3 starts with '*'", refused([b"a", b"b", b"*1"]).message)
        self.assertEqual(plan_inline([b" *1"]), Plan(1))  # only the first byte counts

    def test_nul_byte(self) -> None:
        self.assertIn("line 1 holds a NUL byte", refused([b"ECHO a\x00b"]).message)

    def test_inline_size_limit(self) -> None:
        self.assertEqual(plan_inline([b"x" * 65535]), Plan(1))
        self.assertIn("line 1 is 65536 bytes", refused([b"x" * 65536]).message)

    def test_subscriptions_point_to_events_subscribe(self) -> None:
        for command in (b"SUBSCRIBE ch", b"psubscribe ch*", b"SSubscribe ch", b"UNSUBSCRIBE",
                        b"punsubscribe", b"SUNSUBSCRIBE x", b'"subscribe" ch', b"\x0bSUBSCRIBE"):
            error = refused([b"PING", command])
            self.assertIn("line 2 is ", error.message)
            self.assertIn("events_subscribe", error.message)

    def test_streams_and_replication(self) -> None:
        self.assertIn("MONITOR", refused([b"monitor"]).message)
        self.assertIn("replication", refused([b"SYNC"]).message)
        self.assertIn("replication", refused([b"psync ? -1"]).message)

    def test_client_reply_off_and_skip(self) -> None:
        self.assertIn("CLIENT REPLY OFF", refused([b"client reply off"]).message)
        self.assertIn("CLIENT REPLY SKIP", refused([b"CLIENT REPLY Skip"]).message)
        self.assertIn("CLIENT REPLY OFF", refused([b'CLIENT "REPLY" \'off\'']).message)
        self.assertEqual(plan_inline([b"CLIENT REPLY ON", b"CLIENT REPLY OFF extra",
                                      b"CLIENT LIST"]), Plan(3))

    def test_http_guard(self) -> None:
        self.assertIn("HTTP request", refused([b"POST / HTTP/1.1"]).message)
        self.assertIn("HTTP request", refused([b"Host: example"]).message)
        self.assertEqual(plan_inline([b"Host:x", b"POSTS"]), Plan(2))

    def test_names_as_arguments_are_fine(self) -> None:
        self.assertEqual(plan_inline([b"SET subscribe monitor", b"GET client"]), Plan(2))

    def test_framing_settings(self) -> None:
        resp = framing("resp")
        self.assertEqual((resp.name, resp.counts_known, resp.default_send_replies),
                         ("resp", True, "check"))
        self.assertEqual(resp.plan([b"", b"PING"]), Plan(1, [2]))

    @settings(database=None, max_examples=300)
    @given(st.lists(
        st.lists(st.sampled_from([
            b"GET", b"k", b"subscribe", b"SUBSCRIBE", b"client", b"reply", b"off", b"skip",
            b"monitor", b"psync", b"post", b"Host:", b"*", b'"', b"'", b"\\", b" ", b"\t",
            b"\x0b", b"\x0c",
        ]), max_size=6).map(b"".join),
        min_size=1, max_size=6,
    ))
    def test_the_screen_never_changes_the_plan(self, lines: list[bytes]) -> None:
        # Reference: every line looked at, the slow way.
        try:
            answered = [number for number, line in enumerate(lines, 1) if _replies(number, line)]
        except BodyError as error:
            self.assertEqual(refused(lines).message, error.message)
            return
        plan = plan_inline(lines)
        self.assertEqual(plan.replies, len(answered))
        self.assertEqual([plan.line_of(i) for i in range(plan.replies)], answered)

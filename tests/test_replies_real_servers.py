"""The framings against the servers users run: redis-server, memcached,
aiosmtpd and pyftpdlib, started by the tests (tests/servers.py).

Each exchange writes a request's lines in ONE write over a raw socket, plus
a sentinel command whose reply is recognisable, and reads until the planned
number of replies and the sentinel's reply have been decoded (or a deadline
fails the test).  So a plan that counts too few replies is caught (the
sentinel's reply is not where it should be), and one that counts too many
too (the deadline passes).  Push messages are never replies: counted apart.
"""

from __future__ import annotations

import re
import socket
import time
from typing import Any, Sequence

from twisted.trial.unittest import TestCase

from bridge.upstream.replies import make_framing
from bridge.upstream.replies.frames import Frame, Framing, Plan
from tests.ports import LOOPBACK
from tests.servers import (
    FTP_PASSWORD,
    FTP_USER,
    start_ftp,
    start_memcached,
    start_redis,
    start_smtp,
)

DEADLINE = 10.0
CRLF = b"\r\n"


class Upstream:
    """A raw client connection decoded by one framing."""

    def __init__(self, case: TestCase, port: int, framing: Framing) -> None:
        self.case = case
        self.framing = framing
        self.decoder = framing.decoder()
        self.sock = socket.create_connection((LOOPBACK, port), timeout=DEADLINE)
        case.addCleanup(self.sock.close)
        self.pushes: list[Frame] = []
        self.last: Frame | None = None  # the sentinel's reply

    def read(self, count: int, until_closed: bool = False) -> list[Frame]:
        """The next ``count`` frames that are replies (pushes are set apart);
        with ``until_closed`` also read until the server closes, and check
        that nothing more came."""
        frames: list[Frame] = []
        deadline = time.monotonic() + DEADLINE
        while len(frames) < count or until_closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.case.fail(f"timed out with {len(frames)} of {count} replies: {frames!r}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue  # the deadline check above fails the test
            if not data:
                if len(frames) != count:
                    self.case.fail(f"closed after {len(frames)} of {count} replies: {frames!r}")
                break
            self.decoder.feed(data)
            while (frame := self.decoder.gets()) is not None:
                (self.pushes if frame.push else frames).append(frame)
        self.case.assertEqual(len(frames), count, frames)
        self.case.assertEqual(self.decoder.buffered(), 0)
        return frames

    def exchange(self, lines: Sequence[bytes], sentinel: bytes | None,
                 closes: bool = False) -> tuple[Plan, list[Frame]]:
        """Write ``lines`` (and ``sentinel``) in one write; the plan and the
        replies to ``lines``.  The sentinel's reply is checked by the caller
        through :meth:`sentinel_reply`."""
        plan = self.framing.plan(list(lines))
        extra = [sentinel] if sentinel is not None else []
        self.sock.sendall(b"".join(line + CRLF for line in [*lines, *extra]))
        frames = self.read(plan.replies + len(extra), until_closed=closes)
        if sentinel is not None:
            self.last = frames.pop()
        return plan, frames

    def sentinel_reply(self) -> Frame:
        assert self.last is not None
        return self.last


def values(frames: Sequence[Frame]) -> list[Any]:
    return [frame.value for frame in frames]


class RedisTests(TestCase):
    def setUp(self) -> None:
        self.port = start_redis(self)
        self.redis = Upstream(self, self.port, make_framing(
            "resp", max_line_bytes=65536, max_reply_bytes=1 << 20))

    def exchange(self, *lines: bytes) -> tuple[Plan, list[Frame]]:
        plan, frames = self.redis.exchange(lines, b"ECHO sentinel")
        self.assertEqual(self.redis.sentinel_reply().value, "sentinel")
        return plan, frames

    def test_resp2_commands(self) -> None:
        plan, frames = self.exchange(
            b"SET k v", b"GET k", b"INCR n", b"INCR n", b"GET missing",
            b"RPUSH l a b c", b"LRANGE l 0 -1", b"HSET h f1 v1 f2 v2", b"HGETALL h",
            b"SET bin \"a\\r\\nb\\x00\\xffc\"", b"GET bin", b"LRANGE nothing 0 -1",
            b"BOGUS command", b"GET", b"SET k",
        )
        self.assertEqual(plan.replies, 15)
        self.assertEqual(values(frames), [
            "OK", "v", 1, 2, None, 3, ["a", "b", "c"], 2, ["f1", "v1", "f2", "v2"], "OK",
            "a\r\nb\x00\ufffdc", [],
            {"error": "ERR unknown command 'BOGUS', with args beginning with: 'command' "},
            {"error": "ERR wrong number of arguments for 'get' command"},
            {"error": "ERR wrong number of arguments for 'set' command"},
        ])
        self.assertEqual(frames[10].text, b"a\r\nb\x00\xffc")
        self.assertEqual(frames[10].raw, b"$7\r\na\r\nb\x00\xffc\r\n")
        self.assertEqual([frame.error for frame in frames].count(True), 3)

    def test_blank_lines_get_no_reply(self) -> None:
        # Finding: Redis ignores empty and whitespace-only inline lines (also
        # VT and FF), but answers "" (one empty argument) with an error.
        plan, frames = self.exchange(b"", b"PING", b"   \t", b"\x0b\x0c", b"GET k", b"", b'""')
        self.assertEqual((plan.replies, plan.lines), (3, [2, 5, 7]))
        self.assertEqual(values(frames), [
            "PONG", None, {"error": "ERR unknown command '', with args beginning with: "},
        ])

    def test_quoting(self) -> None:
        _plan, frames = self.exchange(b"SET 'a b' \"c\\td\"", b"GET \"a b\"", b"ECHO ''")
        self.assertEqual(values(frames), ["OK", "c\td", ""])

    def test_transaction(self) -> None:
        _plan, frames = self.exchange(b"MULTI", b"INCR t", b"INCR t", b"GET t", b"EXEC",
                                     b"MULTI", b"SET x 1", b"DISCARD")
        self.assertEqual(values(frames), ["OK", "QUEUED", "QUEUED", "QUEUED", [1, 2, "2"],
                                          "OK", "QUEUED", "OK"])

    def test_errors_inside_exec(self) -> None:
        _plan, frames = self.exchange(b"SET s text", b"MULTI", b"INCR s", b"EXEC")
        self.assertEqual(frames[-1].value,
                         [{"error": "ERR value is not an integer or out of range"}])
        self.assertFalse(frames[-1].error)

    def test_resp3(self) -> None:
        _plan, frames = self.exchange(
            b"HELLO 3", b"HSET h f1 v1 f2 v2", b"HGETALL h", b"SADD s m", b"SMEMBERS s",
            b"ZADD z 1.5 a", b"ZSCORE z a", b"GET missing", b"EXISTS h", b"INFO server",
            b"CONFIG GET maxmemory", b"ZRANGE z 0 -1 WITHSCORES",
        )
        hello = frames[0].value
        self.assertEqual((hello["server"], hello["proto"]), ("redis", 3))
        self.assertEqual(values(frames[1:9]), [
            2, {"f1": "v1", "f2": "v2"}, 1, ["m"], 1, 1.5, None, 1,
        ])
        self.assertTrue(frames[9].value.startswith("# Server"))  # a verbatim string
        self.assertTrue(frames[9].raw.startswith(b"=") and b"txt:" in frames[9].raw)
        self.assertEqual(frames[10].value, {"maxmemory": "0"})
        self.assertEqual(frames[11].value, [["a", 1.5]])

    def test_push_messages_are_not_replies(self) -> None:
        plan, frames = self.exchange(b"HELLO 3", b"CLIENT TRACKING on", b"GET tracked",
                                     b"SET tracked 1")
        self.assertEqual(plan.replies, 4)
        self.assertEqual(values(frames[1:]), ["OK", None, "OK"])
        self.assertEqual([push.value for push in self.redis.pushes],
                         [["invalidate", ["tracked"]]])

    def test_quit_closes_after_its_reply(self) -> None:
        _plan, frames = self.redis.exchange([b"PING", b"QUIT"], None, closes=True)
        self.assertEqual(values(frames), ["PONG", "OK"])

    def test_unbalanced_quotes_really_close_the_connection(self) -> None:
        # What the planner refuses to send, checked on the server.
        self.redis.sock.sendall(b'GET "a\r\nPING\r\n')
        (frame,) = self.redis.read(1, until_closed=True)
        self.assertEqual(frame.value,
                         {"error": "ERR Protocol error: unbalanced quotes in request"})


class MemcachedTests(TestCase):
    def setUp(self) -> None:
        self.port = start_memcached(self)
        self.memcached = Upstream(self, self.port, make_framing(
            "memcached", max_line_bytes=65536, max_reply_bytes=1 << 20))

    def exchange(self, *lines: bytes) -> tuple[Plan, list[Frame]]:
        plan, frames = self.memcached.exchange(lines, b"version")
        self.assertRegex(self.memcached.sentinel_reply().value[0], r"^VERSION \d")
        return plan, frames

    def test_storage_and_retrieval(self) -> None:
        plan, frames = self.exchange(
            b"set k 0 0 5", b"hello", b"get k", b"get missing",
            b"set k2 42 0 11", b"END\xc3\xa9 VALUE", b"get k k2 missing",
            b"add k 0 0 1", b"x", b"replace nokey 0 0 1", b"x", b"append k 0 0 1", b"!",
            b"cas nokey 0 0 1 1", b"x", b"get k",
        )
        self.assertEqual((plan.replies, plan.lines), (10, [1, 3, 4, 5, 7, 8, 10, 12, 14, 16]))
        self.assertEqual(values(frames), [
            ["STORED"], ["VALUE k 0 5", "hello", "END"], ["END"], ["STORED"],
            ["VALUE k 0 5", "hello", "VALUE k2 42 11", "END\u00e9 VALUE", "END"],
            ["NOT_STORED"], ["NOT_STORED"], ["STORED"], ["NOT_FOUND"],
            ["VALUE k 0 6", "hello!", "END"],
        ])

    def test_gets_and_cas(self) -> None:
        _plan, frames = self.exchange(b"set c 0 0 1", b"a", b"gets c")
        cas = frames[1].value[0].split()[-1].encode()
        _plan, frames = self.exchange(b"cas c 0 0 1 " + cas, b"b", b"cas c 0 0 1 " + cas, b"c",
                                     b"get c")
        self.assertEqual(values(frames), [["STORED"], ["EXISTS"], ["VALUE c 0 1", "b", "END"]])

    def test_arithmetic_and_noreply(self) -> None:
        _plan, frames = self.exchange(
            b"incr n 1", b"set n 0 0 1", b"5", b"incr n 10", b"decr n 100",
            b"incr n 1 noreply", b"delete k noreply", b"touch n 10 noreply",
            b"set q 0 0 1 noreply", b"x", b"get q", b"delete noreply", b"incr q noreply",
            b"verbosity 1 noreply", b"cache_memlimit 100 noreply", b"touch n 10",
            b"delete a b c noreply", b"delete n", b"delete n",
        )
        self.assertEqual(values(frames), [
            ["NOT_FOUND"], ["STORED"], ["15"], ["0"], ["VALUE q 0 1", "x", "END"],
            ["NOT_FOUND"], ["TOUCHED"], ["ERROR"], ["DELETED"], ["NOT_FOUND"],
        ])

    def test_errors(self) -> None:
        # Finding: an empty or blank line is answered ERROR, like an unknown command.
        _plan, frames = self.exchange(b"bogus", b"", b"  ", b"GET k", b"get", b"incr",
                                     b"set " + b"k" * 250 + b" 0 0 1", b"x")
        self.assertEqual(values(frames)[:6], [["ERROR"]] * 6)
        self.assertEqual(frames[6].value, ["STORED"])
        self.assertEqual([frame.error for frame in frames], [True] * 6 + [False])

    def test_listings(self) -> None:
        plan, frames = self.exchange(b"set k 0 0 1", b"x", b"stats", b"stats items",
                                     b"stats slabs", b"stats settings", b"stats cachedump 1 10",
                                     b"stats detail dump", b"stats sizes")
        self.assertEqual(plan.replies, 8)
        for listing in frames[1:]:
            self.assertEqual(listing.value[-1], "END")
        self.assertIn("STAT pid", frames[1].value[0])
        self.assertTrue(all(line.startswith("STAT ") for line in frames[1].value[:-1]))
        # cachedump lists only items in some LRU segments: maybe none yet.
        self.assertTrue(all(line.startswith("ITEM ") for line in frames[5].value[:-1]))
        self.assertEqual(frames[6].value, ["END"])

    def test_meta_commands(self) -> None:
        _plan, frames = self.exchange(b"ms m 2 T0 F7", b"hi", b"mg m v f c", b"mg none v",
                                     b"md none", b"ma cnt", b"ma cnt N0 J5 v", b"mn", b"me m",
                                     b"md m", b"mg m v")
        self.assertEqual(frames[0].value, ["HD"])
        self.assertRegex(frames[1].value[0], r"^VA 2 f7 c\d+$")
        self.assertEqual(frames[1].value[1], "hi")
        self.assertEqual(values(frames[2:7]), [["EN"], ["NF"], ["NF"], ["VA 1", "5"], ["MN"]])
        self.assertTrue(frames[7].value[0].startswith("ME m "))
        self.assertEqual(values(frames[8:]), [["HD"], ["EN"]])

    def test_binary_values_survive(self) -> None:
        data = bytes(range(32, 256)).replace(b"\x7f", b"")  # no CR or LF in a line
        _plan, frames = self.exchange(b"set b 0 0 %d" % len(data), data, b"get b")
        self.assertEqual(frames[1].raw, b"VALUE b 0 %d\r\n%s\r\nEND\r\n" % (len(data), data))

    def test_quit(self) -> None:
        plan, _frames = self.memcached.exchange([b"version", b"quit"], None, closes=True)
        self.assertEqual(plan.replies, 1)


class SmtpTests(TestCase):
    def setUp(self) -> None:
        port = start_smtp(self)
        self.smtp = Upstream(self, port, make_framing(
            "status", max_line_bytes=4096, max_reply_bytes=65536))
        (greeting,) = self.smtp.read(1)
        self.assertTrue(greeting.value[0].startswith("220 "))

    def test_a_whole_session_in_one_write(self) -> None:
        lines = [b"EHLO client.example", b"MAIL FROM:<a@example.com>",
                 b"RCPT TO:<b@example.com>", b"DATA", b"Subject: hello", b"",
                 b"body line", b"..leading dot", b".", b"NOOP", b"BOGUS", b"QUIT"]
        plan, frames = self.smtp.exchange(lines, None, closes=True)
        self.assertEqual(plan.replies, 8)
        ehlo = frames[0]
        self.assertGreater(len(ehlo.value), 1)
        self.assertTrue(all(line.startswith("250-") for line in ehlo.value[:-1]))
        self.assertTrue(ehlo.value[-1].startswith("250 "))
        codes = [frame.value[-1][:3] for frame in frames]
        self.assertEqual(codes, ["250", "250", "250", "354", "250", "250", "500", "221"])
        self.assertEqual(list(plan.accept), [3])
        self.assertTrue(plan.accept[3](frames[3]))
        self.assertEqual([frame.error for frame in frames], [False] * 6 + [True, False])

    def test_data_refused_fails_the_acceptance_check(self) -> None:
        plan, frames = self.smtp.exchange([b"EHLO c", b"DATA", b"."], b"NOOP")
        self.assertEqual(frames[1].value[-1][:3], "503")
        self.assertFalse(plan.accept[1](frames[1]))
        # Out of step: the "." was read as a command (and answered as one).
        self.assertTrue(frames[2].error)


class FtpTests(TestCase):
    def setUp(self) -> None:
        port = start_ftp(self, {"readme.txt": b"hello\r\n"})
        self.ftp = Upstream(self, port, make_framing(
            "status", max_line_bytes=4096, max_reply_bytes=65536))
        (greeting,) = self.ftp.read(1)
        self.assertTrue(greeting.value[-1].startswith("220"))

    def login(self) -> None:
        _plan, frames = self.ftp.exchange(
            [b"USER " + FTP_USER.encode(), b"PASS " + FTP_PASSWORD.encode()], b"NOOP")
        self.assertEqual([frame.value[-1][:3] for frame in frames], ["331", "230"])

    def test_commands_in_one_write(self) -> None:
        self.login()
        _plan, frames = self.ftp.exchange(
            [b"PWD", b"SYST", b"FEAT", b"TYPE I", b"XYZ", b"HELP", b"SIZE readme.txt",
             b"RETR missing.txt"], b"NOOP")
        self.assertEqual(self.ftp.sentinel_reply().value[-1][:3], "200")
        codes = [frame.value[-1][:3] for frame in frames]
        self.assertEqual(codes, ["257", "215", "211", "200", "500", "214", "213", "550"])
        self.assertEqual(frames[0].value, ['257 "/" is the current directory.'])
        feat = frames[2].value
        self.assertTrue(feat[0].startswith("211-"))
        self.assertTrue(all(line.startswith(" ") for line in feat[1:-1]))  # free-form
        self.assertEqual(feat[-1][:4], "211 ")
        self.assertEqual(frames[6].value, ["213 7"])
        self.assertEqual([frame.error for frame in frames], [False] * 4 + [True, False, False,
                                                                            True])

    def test_preliminary_reply_and_final_reply_are_one_frame(self) -> None:
        self.login()
        _plan, (passive,) = self.ftp.exchange([b"PASV"], b"NOOP")
        numbers = re.search(r"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", passive.value[0])
        assert numbers is not None
        data_port = int(numbers.group(5)) * 256 + int(numbers.group(6))
        with socket.create_connection((LOOPBACK, data_port), timeout=DEADLINE) as data:
            _plan, (retrieved,) = self.ftp.exchange([b"RETR readme.txt"], None)
            received = b""
            while chunk := data.recv(65536):
                received += chunk
        self.assertEqual(received, b"hello\r\n")
        # 125 when the server saw the data connection open before RETR, else 150.
        self.assertIn(retrieved.value[0][:3], ("125", "150"))
        self.assertEqual(retrieved.value[-1][:3], "226")
        self.assertEqual(len(retrieved.value), 2)
        self.assertFalse(retrieved.error)

    def test_quit(self) -> None:
        _plan, frames = self.ftp.exchange([b"NOOP", b"QUIT"], None, closes=True)
        self.assertEqual([frame.value[-1][:3] for frame in frames], ["200", "221"])

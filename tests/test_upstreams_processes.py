"""Several upstreams behind one real bridge process (issue 11), with real servers.

One TOML file names three upstreams: ``redis``, a group of two redis-server
processes (failover, failback_after 2 s); ``cache``, memcached (reply_framing
memcached); ``sink``, a line server that only reads.  Requests to each name
must reach that server only; the redis group fails over and back under load
while the other upstreams go on undisturbed; SIGHUP applies a new file under
load (a changed, a removed, an added and an unchanged upstream); a bad file
at SIGHUP changes nothing and logs one line.

The redis counters start at 1,000,000 on the first server and 2,000,000 on
the second, and memcached's at 5,000,000, so every answer tells which server
gave it: a reply handed to the wrong caller, or a line written to the wrong
upstream, cannot pass unseen.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.servers import LOOPBACK, RedisServer, start_memcached
from tests.support import (
    BridgeClient,
    BridgeProcess,
    LineServer,
    Reply,
    concurrently,
    reactor,
    unused_port,
    wait_for,
)

FIRST_BASE = 1_000_000
SECOND_BASE = 2_000_000
CACHE_BASE = 5_000_000
SEND_CODES = (202, 429, 503)
REQUEST_CODES = (200, 429, 502, 503, 504)
ADMIN = "admin-secret"
CACHE_ONLY = "cache-secret"


def settings(first: int, second: int, cache: int | None, sink: int, *,
             strategy: str = "failover", extra: str = "") -> str:
    """The TOML file: redis (a group), cache (when ``cache``), sink; ``extra``
    appended (more tables)."""
    text = f"""
token = "{ADMIN}"
shutdown_grace = 2

[upstreams.redis]
addresses = ["{LOOPBACK}:{first}", "{LOOPBACK}:{second}"]
strategy = "{strategy}"
reply_framing = "resp"
pool_size = 2
failback_after = 2
backoff_initial = 0.2
backoff_max = 1
reply_timeout = 2

[upstreams.sink]
upstream = "{LOOPBACK}:{sink}"
backoff_initial = 0.2
backoff_max = 1
"""
    if cache is not None:
        text += f"""
[upstreams.cache]
upstream = "{LOOPBACK}:{cache}"
reply_framing = "memcached"

[tokens.cache-writer]
token = "{CACHE_ONLY}"
upstreams = ["cache"]
routes = ["send", "request"]
"""
    return text + extra


def auth(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def memcached_get(port: int, key: str) -> bytes:
    """``get KEY`` on a connection of its own: memcached's whole answer."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as connection:
        connection.sendall(b"get %s\r\n" % key.encode())
        answer = b""
        while not answer.endswith(b"END\r\n"):
            data = connection.recv(65536)
            if not data:
                raise AssertionError(f"memcached closed before answering: {answer!r}")
            answer += data
    return answer


def where(status: dict[str, Any]) -> list[str | None]:
    """The redis group's members' addresses while connected."""
    members = status["upstreams"]["redis"]["members"]
    return [m["address"] if m["state"] == "connected" else None for m in members]


class Load:
    """Clients that keep POSTing to every upstream until stopped, checking
    each answer as it comes."""

    def __init__(self, case: TestCase, http: BridgeClient) -> None:
        self.case = case
        self.http = http
        self.running = True
        self.phase = "before"
        self.redis_sent: list[tuple[str, str]] = []  # (value, phase when sent): 202s
        self.counts: list[int] = []  # INCR answers
        self.sink_sent: list[bytes] = []  # acknowledged, in order
        self.cache_counts: list[int] = []
        self.cache_gone = 0  # 404 unknown_upstream after cache was removed
        self.codes: Counter[tuple[str, int]] = Counter()
        #: What redis may answer (a server killed: 503 while no member is connected...).
        self.send_codes = SEND_CODES
        self.request_codes = REQUEST_CODES

    async def post(self, path: str, body: str) -> Reply:
        reply = await self.http.post(path, body, auth())
        self.codes[(path, reply.status)] += 1
        return reply

    async def redis_sender(self, worker: int) -> None:
        number = 0
        while self.running:
            value = f"w{worker}-{number}"
            number += 1
            phase = self.phase
            reply = await self.post("/u/redis/send", f"RPUSH sent {value}\n")
            self.case.assertIn(reply.status, self.send_codes, reply)
            if reply.status == 202:
                self.redis_sent.append((value, phase))

    async def redis_requester(self) -> None:
        while self.running:
            reply = await self.post("/u/redis/request", "INCR hits\n")
            self.case.assertIn(reply.status, self.request_codes, reply)
            if reply.status == 200:
                (count,) = reply.json()["replies"]
                self.case.assertIsInstance(count, int, reply)
                self.counts.append(count)

    async def sink_sender(self) -> None:
        """The sink is never down: every line is acknowledged."""
        number = 0
        while self.running:
            line = f"s{number}"
            number += 1
            reply = await self.post("/u/sink/send", line + "\n")
            self.case.assertEqual((reply.status, reply.json()), (202, {"sent": 1}))
            self.sink_sent.append(line.encode())

    async def cache_requester(self, removable: bool = False) -> None:
        """memcached's counter, one at a time: each answer one more than the
        last; once the upstream is removed (``removable``), 404 for good."""
        while self.running:
            reply = await self.post("/u/cache/request", "incr n 1\n")
            if removable and reply.status == 404:
                self.case.assertEqual(reply.json()["error"], "unknown_upstream")
                self.cache_gone += 1
                continue
            self.case.assertEqual(self.cache_gone, 0, "cache answered after it was removed")
            self.case.assertEqual(reply.status, 200, reply)
            ((count,),) = reply.json()["replies"]
            expected = self.cache_counts[-1] + 1 if self.cache_counts else None
            if expected is not None:
                self.case.assertEqual(int(count), expected)
            self.cache_counts.append(int(count))

    def accepted_in(self, *phases: str) -> list[str]:
        return [value for value, sent_in in self.redis_sent if sent_in in phases]


class SeveralUpstreamsTests(TestCase):
    timeout = 180

    async def start(self, strategy: str = "failover") -> None:
        self.first = RedisServer(self, unused_port())
        self.first.start()
        self.second = RedisServer(self, unused_port())  # free now that the first has its
        self.second.start()
        self.first.call("SET", "hits", str(FIRST_BASE))
        self.second.call("SET", "hits", str(SECOND_BASE))
        self.cache = start_memcached(self)
        self.sink = LineServer()
        self.sink.start(0)
        self.addCleanup(self.sink.stop)
        self.at_first = f"{LOOPBACK}:{self.first.port}"
        self.at_second = f"{LOOPBACK}:{self.second.port}"
        directory = tempfile.mkdtemp(prefix="bridge-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = os.path.join(directory, "bridge.toml")
        self.write(settings(self.first.port, self.second.port, self.cache, self.port(self.sink),
                            strategy=strategy))
        self.bridge = BridgeProcess.bridge("--listen", f"{LOOPBACK}:0", "--config", self.path)
        self.addCleanup(self.bridge.stop)
        await self.bridge.wait_listening()
        self.http = BridgeClient(self.bridge.url)
        self.addCleanup(self.http.close)
        placed = ([self.at_first, self.at_first] if strategy == "failover"
                  else [self.at_first, self.at_second])

        async def ready() -> bool:
            status = await self.status()
            return (all(u["ready"] for u in status["upstreams"].values())
                    and where(status) == placed)

        await wait_for(ready, timeout=20, what="every upstream ready",
                       context=self.bridge.describe)
        reply = await self.post("/u/cache/request", f"set n 0 0 7\n{CACHE_BASE}\n")
        self.assertEqual((reply.status, reply.json()), (200, {"replies": [["STORED"]]}))

    @staticmethod
    def port(server: LineServer) -> int:
        assert server.port is not None
        return server.port

    def write(self, text: str) -> None:
        # Replaced in one step: a SIGHUP never reads half a file.
        with open(self.path + ".new", "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(self.path + ".new", self.path)

    async def post(self, path: str, body: str, token: str | None = ADMIN) -> Reply:
        return await self.http.post(path, body, auth(token) if token else None)

    async def status(self) -> dict[str, Any]:
        reply = await self.http.get("/status", auth())
        self.assertEqual(reply.status, 200, reply)
        document: dict[str, Any] = reply.json()
        return document

    async def reload(self, text: str, generation: int) -> None:
        """Write ``text``, SIGHUP, and wait until ``generation`` runs."""
        self.write(text)
        self.bridge.signal(signal.SIGHUP)

        async def loaded() -> bool:
            return (await self.status())["configuration"]["generation"] == generation

        await wait_for(loaded, timeout=10, what=f"configuration generation {generation}",
                       context=self.bridge.describe)

    def in_redis(self) -> tuple[list[str], list[str]]:
        """The RPUSHed values in the first and in the second server."""
        first = self.first.call("LRANGE", "sent", "0", "-1")
        second = self.second.call("LRANGE", "sent", "0", "-1")
        assert isinstance(first, list) and isinstance(second, list)
        return first, second

    async def test_each_name_reaches_its_own_server(self) -> None:
        await self.start()
        self.assertEqual((await self.post("/u/redis/request", "INCR hits\n")).json(),
                         {"replies": [FIRST_BASE + 1]})
        reply = await self.post("/u/redis/send", "SET routed redis\n")
        self.assertEqual((reply.status, reply.json()), (202, {"sent": 1}))
        reply = await self.post("/u/cache/request",
                                "set routed 0 0 5\ncache\nget routed\n")
        self.assertEqual((reply.status, reply.json()), (200, {"replies": [
            ["STORED"], ["VALUE routed 0 5", "cache", "END"]]}))
        reply = await self.post("/u/sink/send", "one\ntwo\n")
        self.assertEqual((reply.status, reply.json()), (202, {"sent": 2}))
        self.assertEqual(await self.sink.wait_for_bytes(b"one\r\ntwo\r\n"), b"one\r\ntwo\r\n")
        await wait_for(lambda: self.first.call("GET", "routed") == "redis",
                       what="SET routed at the first redis-server")
        self.assertEqual(self.second.call("EXISTS", "routed"), 0)
        self.assertEqual(memcached_get(self.cache, "routed"),
                         b"VALUE routed 0 5\r\ncache\r\nEND\r\n")

        # Only configured names; /send is the upstream named default, not configured here.
        for path, message in [
            ("/u/nosuch/send", "no upstream named 'nosuch'; the configured ones are: redis, "
                               "sink, cache"),
            ("/send", "no upstream named 'default'; the configured ones are: redis, sink, "
                      "cache"),
        ]:
            reply = await self.post(path, "x\n")
            self.assertEqual((reply.status, reply.json()), (404, {
                "error": "unknown_upstream", "message": message}))
        self.assertEqual(self.sink.received, b"one\r\ntwo\r\n")

        status = await self.status()
        self.assertEqual(
            {name: (entry["upstream"], entry["state"], entry["reply_framing"],
                    entry["counters"]["lines_sent"])
             for name, entry in status["upstreams"].items()},
            {"redis": (f"group {self.at_first}, {self.at_second}", "connected", "resp", 2),
             "sink": (f"{LOOPBACK}:{self.port(self.sink)}", "connected", "line", 2),
             "cache": (f"{LOOPBACK}:{self.cache}", "connected", "memcached", 5)})
        self.assertEqual(
            [(row["address"], row["active"], row["connected_members"])
             for row in status["upstreams"]["redis"]["addresses"]],
            [(self.at_first, True, ["redis/0", "redis/1"]), (self.at_second, False, [])])
        self.assertEqual(status["configuration"]["file"], self.path)
        metrics = (await self.http.get("/metrics", auth())).body.decode()
        for sample in ('bridge_lines_sent_total{upstream="sink"} 2.0',
                       'bridge_lines_sent_total{upstream="redis"} 2.0',
                       'bridge_replies_total{outcome="ok",upstream="cache"} 2.0',
                       'bridge_upstream_address_connected_members{address="'
                       f'{self.at_second}",upstream="redis"}} 0.0'):
            self.assertIn(sample + "\n", metrics)

    async def test_scoped_tokens(self) -> None:
        await self.start()
        reply = await self.post("/u/cache/request", "incr n 1\n", CACHE_ONLY)
        self.assertEqual((reply.status, reply.json()), (200, {"replies": [[str(CACHE_BASE + 1)]]}))
        for path in ("/u/redis/request", "/u/sink/send"):
            reply = await self.post(path, "INCR hits\n", CACHE_ONLY)
            self.assertEqual((reply.status, reply.json()["error"]), (403, "forbidden"))
        reply = await self.http.get("/u/cache/events", auth(CACHE_ONLY))
        self.assertEqual(reply.json(), {
            "error": "forbidden",
            "message": "the token 'cache-writer' does not allow events on the upstream 'cache'"})
        self.assertEqual((await self.http.get("/status", auth(CACHE_ONLY))).status, 403)
        for token in (None, "wrong"):
            reply = await self.post("/u/cache/request", "incr n 1\n", token)
            self.assertEqual((reply.status, reply.json()["error"]), (401, "unauthorized"))
        self.assertEqual(self.sink.received, b"")
        self.assertEqual(self.first.call("GET", "hits"), str(FIRST_BASE))
        self.assertEqual(memcached_get(self.cache, "n"),
                         b"VALUE n 0 7\r\n%d\r\nEND\r\n" % (CACHE_BASE + 1))
        log = self.bridge.stdout() + self.bridge.stderr()
        for secret in (ADMIN, CACHE_ONLY):
            self.assertNotIn(secret, log)

    async def test_failover_and_failback_under_load(self) -> None:
        """The first redis-server is killed (SIGKILL, by its PID) under load and
        started again: the group moves to the second and back after
        failback_after, while memcached and the sink go on undisturbed."""
        await self.start()
        load = Load(self, self.http)
        load.phase = "first"
        workers = Deferred.fromCoroutine(concurrently(
            [load.redis_sender(worker) for worker in range(3)]
            + [load.redis_requester(), load.sink_sender(), load.cache_requester()]))
        try:
            await wait_for(lambda: len(load.redis_sent) >= 100, what="lines to the first",
                           timeout=30, context=self.bridge.describe)
            self.first.kill()
            load.phase = "failing over"

            async def on_second() -> bool:
                return where(await self.status()) == [self.at_second, self.at_second]

            await wait_for(on_second, what="the members on the second server", timeout=15,
                           context=self.bridge.describe)
            load.phase = "second"
            await wait_for(lambda: len(load.accepted_in("second")) >= 100,
                           what="lines to the second", timeout=30, context=self.bridge.describe)
            restarted = reactor.seconds()  # before: a probe may beat our own check
            load.phase = "failing back"
            self.first.start()

            async def back() -> bool:
                status = await self.status()
                rows = {row["address"]: row for row in status["upstreams"]["redis"]["addresses"]}
                return (where(status) == [self.at_first, self.at_first]
                        and rows[self.at_second]["connected_members"] == [])

            await wait_for(back, what="the members back on the first server", timeout=20,
                           context=self.bridge.describe)
            moved_after = reactor.seconds() - restarted
            load.phase = "back"
            await wait_for(lambda: len(load.accepted_in("back")) >= 100,
                           what="lines after the failback", timeout=30,
                           context=self.bridge.describe)
        finally:
            load.running = False
            await workers
        status = await self.status()

        # Not before the first server had been healthy for failback_after (2 s).
        self.assertGreaterEqual(moved_after, 2.0)
        in_first, in_second = self.in_redis()
        stored = in_first + in_second
        self.assertEqual(len(stored), len(set(stored)), "a line was written twice")
        # A 202 means "written to a live connection": lines written to the
        # first server just before it was killed can die with it, and the
        # bridge counts each whose reply never came (send_replies check).
        missing = [value for value, _ in load.redis_sent if value not in set(stored)]
        self.assertLessEqual(len(missing),
                             status["upstreams"]["redis"]["counters"]["send_unconfirmed"],
                             f"202 lines found in neither server: {missing}")
        self.assertEqual(set(missing) - set(load.accepted_in("first", "failing over")), set())
        self.assertTrue(set(load.accepted_in("second")) <= set(in_second))
        self.assertEqual(set(load.accepted_in("back")) - set(in_first), set())
        # Every INCR answer came from one of the redis servers, once.
        self.assertEqual(len(load.counts), len(set(load.counts)), "an INCR answer twice")
        self.assertEqual([c for c in load.counts
                          if not (FIRST_BASE < c < SECOND_BASE or SECOND_BASE < c)], [])
        self.assertTrue(any(count > SECOND_BASE for count in load.counts))
        # The other upstreams never noticed: every line, in order, once.
        self.assertGreater(len(load.sink_sent), 0)
        await self.sink.wait_for_lines(len(load.sink_sent))
        self.assertEqual(self.sink.lines, load.sink_sent)
        self.assertEqual(len(self.sink.connections), 1)
        self.assertEqual(load.cache_counts[0], CACHE_BASE + 1)
        self.assertEqual(load.cache_counts,
                         list(range(CACHE_BASE + 1, CACHE_BASE + 1 + len(load.cache_counts))))
        log = self.bridge.stdout()
        self.assertIn(f"upstream redis: failover from {self.at_first} to {self.at_second}",
                      log)
        self.assertIn(f"upstream redis: failing back from {self.at_second} to {self.at_first}",
                      log)

    async def test_sighup_under_load(self) -> None:
        """SIGHUP while clients send: sink unchanged (keeps its connection, not
        one request fails), redis changed (round robin over both servers; no
        503: the old pool works until the new one is connected), cache removed
        (404 from then on), extra added (routable at once)."""
        await self.start()
        extra = LineServer()
        extra.start(0)
        self.addCleanup(extra.stop)
        load = Load(self, self.http)
        # The changed upstream's old pool works until the new one is connected:
        # never a 503 (nor a 502: no connection is lost).  429 and 504 only
        # if the machine is slow.
        load.send_codes, load.request_codes = (202, 429), (200, 429, 504)
        workers = Deferred.fromCoroutine(concurrently(
            [load.redis_sender(worker) for worker in range(2)]
            + [load.redis_requester(), load.sink_sender(), load.cache_requester(removable=True)]))
        since = len(self.bridge.stdout())
        try:
            await wait_for(lambda: len(load.sink_sent) >= 50 and len(load.redis_sent) >= 50,
                           what="load before the reload", timeout=30,
                           context=self.bridge.describe)
            load.phase = "reloading"
            await self.reload(settings(
                self.first.port, self.second.port, None, self.port(self.sink),
                strategy="round_robin",
                extra=f'\n[upstreams.extra]\nupstream = "{LOOPBACK}:{self.port(extra)}"\n'),
                generation=2)
            load.phase = "after"
            reply = await self.post("/u/extra/send", "added\n")
            self.assertEqual((reply.status, reply.json()), (202, {"sent": 1}))
            self.assertEqual(await extra.wait_for_bytes(b"added\r\n"), b"added\r\n")

            async def spread() -> bool:
                return where(await self.status()) == [self.at_first, self.at_second]

            await wait_for(spread, what="redis members on both servers", timeout=15,
                           context=self.bridge.describe)
            count = len(load.sink_sent)
            await wait_for(lambda: len(load.sink_sent) >= count + 50 and load.cache_gone > 0
                           and len(load.accepted_in("after")) >= 50,
                           what="load after the reload", timeout=30,
                           context=self.bridge.describe)
        finally:
            load.running = False
            await workers

        status = await self.status()
        self.assertEqual(list(status["upstreams"]), ["redis", "sink", "extra"])
        self.assertEqual(status["upstreams"]["redis"]["strategy"], "round_robin")
        reply = await self.post("/u/cache/send", "x\n")
        self.assertEqual((reply.status, reply.json()), (404, {
            "error": "unknown_upstream",
            "message": "no upstream named 'cache'; the configured ones are: redis, sink, "
                       "extra"}))
        self.assertIn("configuration reloaded (generation 2): added extra; changed redis; "
                      "removed cache; unchanged sink", self.bridge.stdout()[since:])
        self.assertIn("upstream redis: the new settings take the work (connected); the old "
                      "connections drain", self.bridge.stdout()[since:])
        # The unchanged upstream: one connection throughout, every line once, in order.
        await self.sink.wait_for_lines(len(load.sink_sent))
        self.assertEqual(self.sink.lines, load.sink_sent)
        self.assertEqual(len(self.sink.connections), 1)
        self.assertEqual(extra.lines, [b"added"])
        # The changed one: nothing acknowledged lost (no server died), nothing twice.
        in_first, in_second = self.in_redis()
        await wait_for(lambda: sum(map(len, self.in_redis())) >= len(load.redis_sent),
                       what="every acknowledged RPUSH stored", timeout=10)
        in_first, in_second = self.in_redis()
        self.assertEqual(sorted(in_first + in_second),
                         sorted(value for value, _ in load.redis_sent))
        self.assertGreater(len(set(load.accepted_in("after")) & set(in_second)), 0)
        self.assertEqual(len(load.counts), len(set(load.counts)))
        self.assertEqual([c for c in load.counts
                          if not (FIRST_BASE < c < SECOND_BASE or SECOND_BASE < c)], [])
        # The removed one: its answers were right until it went, 404 after.
        self.assertEqual(load.cache_counts,
                         list(range(CACHE_BASE + 1, CACHE_BASE + 1 + len(load.cache_counts))))
        self.assertEqual(load.codes[("/u/sink/send", 202)], len(load.sink_sent))

    async def test_a_bad_file_at_sighup_changes_nothing(self) -> None:
        await self.start()
        good = settings(self.first.port, self.second.port, self.cache, self.port(self.sink))
        bad_files = [
            ("[upstreams.sink\n", "is not valid TOML"),
            (good.replace('reply_framing = "memcached"', 'reply_framing = "memcache"'),
             "setting 'reply_framing': must be one of line, resp, memcached, status, "
             "terminator; got 'memcache' (from "),
        ]
        for number, (text, reason) in enumerate(bad_files, 1):
            before = self.bridge.stdout()
            self.write(text)
            self.bridge.signal(signal.SIGHUP)
            await wait_for(lambda before=before: "configuration not reloaded" in  # type: ignore[misc]
                           self.bridge.stdout()[len(before):],
                           what="the refusal in the log", context=self.bridge.describe)
            logged = self.bridge.stdout()[len(before):].splitlines()
            self.assertEqual(len(logged), 1, logged)
            self.assertIn("[bridge.reload#error] configuration not reloaded, the running one "
                          "stays (generation 1): ", logged[0])
            self.assertIn(reason, logged[0])
            status = await self.status()
            self.assertEqual(status["configuration"]["generation"], 1)
            self.assertEqual(list(status["upstreams"]), ["redis", "sink", "cache"])
            self.assertEqual(status["upstreams"]["cache"]["reply_framing"], "memcached")
            reply = await self.post("/u/sink/send", f"still {number}\n")
            self.assertEqual(reply.status, 202)
            reply = await self.post("/u/cache/request", "incr n 1\n")
            self.assertEqual(reply.json(), {"replies": [[str(CACHE_BASE + number)]]})
        await self.sink.wait_for_lines(2)
        self.assertEqual(self.sink.lines, [b"still 1", b"still 2"])
        self.assertEqual(len(self.sink.connections), 1)
        self.assertEqual(self.bridge.process.poll(), None)

"""The spool with the real bridge process and a real redis-server (issue 12).

* kill -9 of the bridge at random moments under concurrent POST /send load,
  20 times in a row on one spool directory, restarted each time: every line
  that got a 202 is in Redis at the end, each request's lines together and in
  order; requests that arrived twice are no more than the records the
  bridges logged as handed out again;
* Redis down for the whole load, then started: everything arrives, in order;
* a second bridge on the same spool directory: exit status 2, one line, and
  it never listens (the directory is locked before the HTTP port is opened);
* a spool whose files the kernel refuses to let grow (RLIMIT_FSIZE in the
  bridge's process: write(2) fails with EFBIG, as it fails with ENOSPC on a
  full disk; no root needed): 503 spool_unavailable, nothing acknowledged
  lost, 202 again once delivery has emptied the spool.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import resource
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable, Sequence

from twisted.trial.unittest import SynchronousTestCase

from tests.polling import wait_for
from tests.servers import RedisServer, start_redis, unused_port
from tests.spool_support import scratch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "spooled"


class Bridge:
    """One run of ``python -m bridge`` with a spool; JSON logs in a file."""

    def __init__(self, case: SynchronousTestCase, redis_port: int, spool_dir: str,
                 *extra: str, preexec: Callable[[], None] | None = None,
                 prefix: Sequence[str] = ()) -> None:
        """``prefix`` goes before the command (a wrapper that execs it)."""
        self.log_path = f"{spool_dir}.{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*prefix, sys.executable, "-m", "bridge", "--listen", "127.0.0.1:0",
                 "--upstream", f"127.0.0.1:{redis_port}", "--reply-framing", "resp",
                 "--spool", "disk", "--spool-dir", spool_dir, "--no-access-log",
                 "--log-format", "json", "--backoff-initial", "0.1", "--backoff-max", "0.5",
                 *extra],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=preexec,
            )
        case.addCleanup(self.kill)
        self.port = 0

    def logs(self) -> list[dict[str, Any]]:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            lines = [line for line in handle if line.endswith("\n")]
        return [json.loads(line) for line in lines if line.startswith("{")]

    def wait_listening(self) -> Bridge:
        def listening() -> int | None:
            if self.process.poll() is not None:
                raise AssertionError(f"the bridge exited: {open(self.log_path).read()}")
            for event in self.logs():
                text = str(event.get("event", ""))
                if text.startswith("listening on http://"):
                    return int(text.rstrip("/").rsplit(":", 1)[1])
            return None

        self.port = wait_for(listening, "the bridge to listen")
        # Ready once the spool is open (until then /send answers 503).
        wait_for(lambda: self.call("GET", "/readyz")[0] == 200, "the spool to be open")
        return self

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()

    def spool(self) -> dict[str, Any]:
        spool: dict[str, Any] = self.call("GET", "/status")[1]["spool"]
        return spool

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # by PID
        self.process.wait(30)

    def redelivered_logged(self) -> int:
        """Records the run said it handed out again (its last such line)."""
        totals = [event.get("total", 0) for event in self.logs()
                  if "handed out again" in str(event.get("event", ""))]
        return int(totals[-1]) if totals else 0


class Load:
    """Clients sending POST /send at once, each request ``lines`` RPUSHes of
    ``CLIENT:SEQ:INDEX``; remembers which requests got a 202."""

    def __init__(self, port: int, clients: int, lines: int, prefix: str) -> None:
        self.port = port
        self.lines = lines
        self.prefix = prefix
        self.acked: list[str] = []  # request names
        self.refused: Counter[int] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(index,), daemon=True)
                         for index in range(clients)]

    @staticmethod
    def body(name: str, lines: int) -> bytes:
        return "".join(f"RPUSH {KEY} {name}:{index}\n" for index in range(lines)).encode()

    def _client(self, index: int) -> None:
        sequence = 0
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            name = f"{self.prefix}c{index}s{sequence}"
            sequence += 1
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                connection.request("POST", "/send", self.body(name, self.lines))
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                return  # the bridge was killed: whatever was in flight got no 202
            if response.status == 202:
                self.acked.append(name)
            else:
                self.refused[response.status] += 1

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def redis_list(redis: Any) -> list[str]:
    items: list[str] = redis.call("LRANGE", KEY, "0", "-1")  # type: ignore[assignment]
    return items


class CrashTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.redis_port = start_redis(self)
        self.redis = _Redis(self.redis_port)
        self.directory = scratch(self)

    def bridge(self, *extra: str, **options: Any) -> Bridge:
        return Bridge(self, self.redis_port, self.directory, *extra, **options).wait_listening()

    def check_delivered(self, acked: list[str], lines: int, redelivered: int) -> dict[str, int]:
        """Every acknowledged request in Redis, whole and in order; duplicates
        within what was counted."""
        items = redis_list(self.redis)
        positions: dict[str, list[int]] = {}
        for position, item in enumerate(items):
            name, _, index = item.rpartition(":")
            if index == "0":
                positions.setdefault(name, []).append(position)
        missing = [name for name in acked if name not in positions]
        self.assertEqual(missing, [], f"{len(missing)} acknowledged requests not in Redis")
        for name, starts in positions.items():
            for start in starts:
                self.assertEqual(items[start:start + lines],
                                 [f"{name}:{index}" for index in range(lines)], name)
        twice = sum(len(starts) - 1 for starts in positions.values())
        self.assertLessEqual(twice, redelivered)
        # Each client's requests arrive (first) in the order it sent them.
        for client in {name.rsplit("s", 1)[0] for name in positions}:
            firsts = sorted((starts[0], int(name.rsplit("s", 1)[1]))
                            for name, starts in positions.items()
                            if name.rsplit("s", 1)[0] == client)
            sequence = [number for _, number in firsts]
            self.assertEqual(sequence, sorted(sequence), client)
        return {"requests": len(positions), "twice": twice}

    def test_kill_nine_twenty_times_under_load_loses_no_acknowledged_line(self) -> None:
        rng = random.Random(12)
        lines = 5
        acked: list[str] = []
        redelivered = 0
        for round_ in range(20):
            bridge = self.bridge()
            load = Load(bridge.port, 4, lines, f"r{round_}").start()
            try:
                wait_for(lambda load=load: len(load.acked) >= 5,  # type: ignore[misc]
                         "some acknowledged requests")
                time.sleep(rng.uniform(0.0, 0.3))  # a random moment, not a synchronisation
            finally:
                bridge.kill()
                load.stop()
            acked.extend(load.acked)
            self.assertEqual(dict(load.refused), {})
            redelivered += bridge.redelivered_logged()
        final = self.bridge()
        wait_for(lambda: final.spool()["records"] == 0, "the spool to be delivered", 60)
        redelivered += final.spool()["redelivered"]
        result = self.check_delivered(acked, lines, redelivered)
        self.assertGreater(len(acked), 100)
        # What the run saw, for whoever reads the test output.
        print(f"\nkill -9 x20: {len(acked)} requests acknowledged, {result['requests']} in "
              f"Redis, {result['twice']} twice, {redelivered} records handed out again",
              file=sys.stderr)

    def test_redis_down_for_the_whole_load_then_everything_arrives_in_order(self) -> None:
        redis = RedisServer(self, unused_port())
        bridge = Bridge(self, redis.port, self.directory).wait_listening()
        load = Load(bridge.port, 4, 3, "down").start()
        wait_for(lambda: len(load.acked) >= 200, "200 acknowledged requests")
        load.stop()
        self.assertEqual(dict(load.refused), {})
        status, ready = bridge.call("GET", "/readyz")
        self.assertEqual((status, ready["ready"], ready["spool"]), (200, True, "accepting"))
        self.assertEqual(bridge.spool()["records"], len(load.acked))
        redis.start()
        wait_for(lambda: bridge.spool()["records"] == 0, "the spool to be delivered", 60)
        self.redis = _Redis(redis.port)
        result = self.check_delivered(load.acked, 3, 0)
        self.assertEqual(result, {"requests": len(load.acked), "twice": 0})
        self.assertEqual(bridge.spool()["retired"], len(load.acked))

    def test_a_second_bridge_on_the_same_directory_exits_2_with_one_line(self) -> None:
        first = self.bridge()
        # The second bridge's port is bound here (not listening): had it tried
        # to listen before checking the spool directory, it would have failed
        # with "cannot listen" instead.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            port = taken.getsockname()[1]
            second = subprocess.run(
                [sys.executable, "-m", "bridge", "--listen", f"127.0.0.1:{port}", "--upstream",
                 f"127.0.0.1:{self.redis_port}", "--spool", "disk", "--spool-dir",
                 self.directory, "--log-format", "json"],
                cwd=ROOT, capture_output=True, text=True, timeout=60)
        line = (f"the spool directory {self.directory} is in use by another process "
                f"(pid {first.process.pid}); each upstream needs its own spool_dir")
        self.assertEqual((second.returncode, second.stderr), (2, f"bridge: error: {line}\n"))
        logged = [json.loads(entry) for entry in second.stdout.splitlines()]
        self.assertEqual([entry["event"] for entry in logged if entry["level"] != "info"],
                         [line])
        self.assertEqual([entry["event"] for entry in logged
                          if "listening" in entry["event"] or "starting on" in entry["event"]],
                         [])
        self.assertEqual(first.call("POST", "/send", b"RPUSH spooled x\n")[0], 202)


class FileSizeLimitTests(SynchronousTestCase):
    """The kernel refuses to let the spool's files grow (EFBIG from write(2))."""

    LIMIT = 48 * 1024  # below the 64 KiB segments of a 1 MiB spool

    def test_refused_writes_are_503_and_the_spool_takes_lines_again_once_delivered(self) -> None:
        redis = RedisServer(self, unused_port())
        directory = scratch(self)

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.LIMIT, self.LIMIT))

        bridge = Bridge(self, redis.port, directory, "--spool-max-bytes", "1048576",
                        preexec=limit).wait_listening()
        acked: list[str] = []
        outcome: list[int] = []
        for sequence in range(200):
            name = f"f{sequence}"
            status, body = bridge.call("POST", "/send", Load.body(name, 10))
            outcome.append(status)
            if status == 202:
                acked.append(name)
            else:
                self.assertEqual((status, body["error"]), (503, "spool_unavailable"))
                self.assertIn("File too large", body["message"])
                break
        self.assertEqual(outcome[-1], 503)
        self.assertGreater(len(acked), 20)
        self.assertEqual(bridge.spool()["state"], "failing")
        self.assertEqual(bridge.call("GET", "/healthz")[0], 200)
        errors = [e for e in bridge.logs() if "cannot store lines" in str(e.get("event"))]
        self.assertEqual(len(errors), 1)
        redis.start()
        wait_for(lambda: bridge.spool()["records"] == 0, "the spool to be delivered", 60)
        status, _ = bridge.call("POST", "/send", Load.body("after", 10))
        self.assertEqual(status, 202)
        wait_for(lambda: bridge.spool()["records"] == 0, "the last request delivered", 60)
        names = [item.rpartition(":")[0] for item in redis_list(_Redis(redis.port))[::10]]
        self.assertEqual(names, [*acked, "after"])


class _Redis:
    """LRANGE through RedisServer's one-shot connection code."""

    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, *words: str) -> object:
        return RedisServer.call(self, *words)  # type: ignore[arg-type]

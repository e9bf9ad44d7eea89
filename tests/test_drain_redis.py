"""Graceful shutdown against a real redis-server: every line accepted with 202
before SIGTERM is in Redis afterwards.

Redis throws away commands it had received but not yet processed when the
client's socket is reset; the bridge half-closes its upstream connections on
shutdown and reads until Redis closes, so nothing accepted is lost.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import unittest
import urllib.request

from tests.polling import wait_for

REDIS = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")

REQUESTS = 40
LINES_PER_REQUEST = 2000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _redis(port: int, *command: str) -> str:
    assert REDIS_CLI is not None
    return subprocess.run(
        [REDIS_CLI, "-p", str(port), *command], capture_output=True, text=True, timeout=10,
        check=True,
    ).stdout.strip()


@unittest.skipIf(REDIS is None or REDIS_CLI is None,
                 "redis-server/redis-cli not installed (.ci/run installs Debian's redis-server)")
class DrainIntoRedisTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bridge-redis-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.redis_port = _free_port()
        assert REDIS is not None
        self.redis = subprocess.Popen(
            [REDIS, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.addCleanup(self._stop, self.redis)
        wait_for(lambda: self._redis_up(), "redis-server to answer PING")

    def _redis_up(self) -> bool:
        try:
            return _redis(self.redis_port, "PING") == "PONG"
        except subprocess.CalledProcessError:
            return False

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()
        process.wait(10)

    def test_every_accepted_line_reaches_redis_after_sigterm(self) -> None:
        log_path = os.path.join(self.dir, "bridge.log")
        with open(log_path, "wb") as log:
            bridge = subprocess.Popen(
                [sys.executable, "-m", "bridge", "--listen", "127.0.0.1:0",
                 "--upstream", f"127.0.0.1:{self.redis_port}", "--no-access-log",
                 "--shutdown-grace", "20"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        self.addCleanup(self._stop, bridge)

        def listening() -> str | None:
            with open(log_path, encoding="utf-8") as handle:
                for line in handle:
                    if "listening on http://" in line:
                        return line.split("listening on ", 1)[1].strip().rstrip("/")
            return None

        base = wait_for(listening, "the bridge to listen")
        wait_for(lambda: self._ready(base), "the bridge to connect to redis")

        accepted = 0
        for number in range(REQUESTS):
            body = "".join(
                f"RPUSH drained {number}:{index}\n" for index in range(LINES_PER_REQUEST)
            ).encode("ascii")
            request = urllib.request.Request(base + "/send", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                self.assertEqual(response.status, 202)
                accepted += LINES_PER_REQUEST
        bridge.send_signal(signal.SIGTERM)
        self.assertEqual(bridge.wait(30), 0)
        self.assertEqual(int(_redis(self.redis_port, "LLEN", "drained")), accepted)
        self.assertEqual(
            _redis(self.redis_port, "LINDEX", "drained", "-1"),
            f"{REQUESTS - 1}:{LINES_PER_REQUEST - 1}",
        )
        with open(log_path, encoding="utf-8") as handle:
            self.assertIn("drained and closed", handle.read())

    def _ready(self, base: str) -> bool:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

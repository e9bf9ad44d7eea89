"""Graceful shutdown against a real redis-server: every line accepted with 202
before SIGTERM is in Redis afterwards.

Redis throws away commands it had received but not yet processed when the
client's socket is reset; the bridge half-closes its upstream connections on
shutdown and reads until Redis closes, so nothing accepted is lost.
"""

from __future__ import annotations

import signal

from twisted.trial.unittest import TestCase

from tests.bridge_process import BridgeProcess
from tests.http_client import BridgeClient
from tests.ports import LOOPBACK
from tests.servers import redis_call, start_redis
from tests.waiting import wait_for

REQUESTS = 40
LINES_PER_REQUEST = 2000


class DrainIntoRedisTests(TestCase):
    timeout = 60

    async def test_every_accepted_line_reaches_redis_after_sigterm(self) -> None:
        port = start_redis(self)
        bridge = BridgeProcess.bridge(
            "--listen", f"{LOOPBACK}:0", "--upstream", f"{LOOPBACK}:{port}", "--no-access-log",
            "--shutdown-grace", "20",
        )
        self.addCleanup(bridge.stop)
        await bridge.wait_listening()
        http = BridgeClient(bridge.url)
        self.addCleanup(http.close)

        async def ready() -> bool:
            return (await http.get("/readyz")).status == 200

        await wait_for(ready, what="the bridge to connect to redis", timeout=15,
                       context=bridge.describe)

        accepted = 0
        for number in range(REQUESTS):
            body = "".join(
                f"RPUSH drained {number}:{index}\n" for index in range(LINES_PER_REQUEST)
            )
            reply = await http.post("/send", body)
            self.assertEqual(reply.status, 202, reply)
            accepted += LINES_PER_REQUEST
        await http.close()  # no idle keep-alive connection for the drain to wait for
        bridge.signal(signal.SIGTERM)
        self.assertEqual(await bridge.wait_exit(timeout=30), 0, bridge.describe())
        self.assertEqual(redis_call(port, "LLEN", "drained"), accepted)
        self.assertEqual(
            redis_call(port, "LINDEX", "drained", "-1"),
            f"{REQUESTS - 1}:{LINES_PER_REQUEST - 1}",
        )
        self.assertIn("drained and closed", bridge.stdout())

"""The real bridge with its spool on a small filesystem that fills up (issue 12).

The bridge runs in its own user and mount namespaces (``unshare -rm``, no
root needed where the kernel allows unprivileged user namespaces) with its
spool_dir on a 512 KiB tmpfs mounted there; its network namespace is the
test's, so it reaches a real redis-server on loopback.  Redis is down while
/send fills the filesystem: 202 until write(2) fails with ENOSPC, then 503
spool_unavailable (spool_max_bytes, 1 GiB by default, is far away: never a
429), one log line, no crash.  Then Redis starts: delivery empties the spool,
the segments it retires free the space, /send answers 202 again, and every
request that got a 202 is in Redis, whole and in order.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.polling import wait_for
from tests.servers import RedisServer, unused_port
from tests.spool_support import scratch
from tests.test_spool_redis import Bridge, Load, _Redis, redis_list

#: The filesystem under the spool.
SIZE = 512 * 1024
#: Lines per request: about 2.3 kB a request, so the filesystem takes ~200.
LINES = 100


@functools.cache
def tmpfs_refused() -> str | None:
    """Why a size-limited tmpfs cannot be mounted in a new user and mount
    namespace here, or None when it can (asked once per test run)."""
    if shutil.which("unshare") is None:
        return "no unshare command (util-linux) to mount a tmpfs without root"
    probe = tempfile.mkdtemp(prefix="bridge-tmpfs-probe-")
    try:
        result = subprocess.run(
            ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$0"', probe],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    finally:
        os.rmdir(probe)
    if result.returncode != 0:
        return ("`unshare -rm` cannot mount a tmpfs here (unprivileged user namespaces "
                f"off?): {result.stderr.strip() or result.returncode}")
    return None


def on_tmpfs(mount: str, size: int) -> list[str]:
    """A command prefix: mount a ``size``-byte tmpfs on ``mount`` in a new
    user and mount namespace, then exec the command (same PID)."""
    return ["unshare", "-rm", "sh", "-c",
            f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"', mount]


class FullFilesystemTests(SynchronousTestCase):
    def setUp(self) -> None:
        refused = tmpfs_refused()
        if refused is not None:
            raise SkipTest(refused)
        self.redis = RedisServer(self, unused_port())  # down until started
        self.mount = scratch(self)
        os.makedirs(self.mount)
        # The log goes next to the mount point, outside the tmpfs.
        self.bridge = Bridge(self, self.redis.port, os.path.join(self.mount, "spool"),
                             prefix=on_tmpfs(self.mount, SIZE)).wait_listening()

    def send(self, name: str) -> tuple[int, Any]:
        return self.bridge.call("POST", "/send", Load.body(name, LINES))

    def problems(self) -> list[str]:
        """What the bridge logged at warn level or above."""
        return [str(event.get("event")) for event in self.bridge.logs()
                if event.get("level") in ("warn", "error", "critical")]

    def test_a_full_filesystem_is_503_then_202_again_once_delivered_and_nothing_is_lost(
            self) -> None:
        bridge = self.bridge
        acked: list[str] = []
        status, body = 0, None
        for sequence in range(SIZE // 1000):
            name = f"t{sequence}"
            status, body = self.send(name)
            if status != 202:
                break
            self.assertEqual(body, {"sent": LINES, "spooled": True})
            acked.append(name)
        self.assertEqual((status, body["error"]), (503, "spool_unavailable"), body)
        self.assertIn("No space left on device", body["message"])
        self.assertGreater(len(acked), SIZE // 2 // len(Load.body("t0", LINES)))
        full = bridge.spool()
        self.assertEqual((full["state"], full["records"]), ("failing", len(acked)))
        # Still refusing, still serving, and one log line for all of it.
        for attempt in range(5):
            status, body = self.send(f"refused{attempt}")
            self.assertEqual((status, body["error"]), (503, "spool_unavailable"))
        self.assertEqual(bridge.call("GET", "/healthz")[0], 200)
        self.assertIsNone(bridge.process.poll())
        problems = self.problems()
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("cannot store lines", problems[0])

        self.redis.start()
        wait_for(lambda: bridge.spool()["records"] == 0, "the spool to be delivered", 60)
        emptied = bridge.spool()
        self.assertLess(emptied["bytes"], full["bytes"])
        filled = len(acked)
        # The space is back: as much again goes in, and on to Redis.
        for sequence in range(filled):
            name = f"after{sequence}"
            status, body = self.send(name)
            self.assertEqual((status, body), (202, {"sent": LINES, "spooled": True}), name)
            acked.append(name)
        wait_for(lambda: bridge.spool()["records"] == 0, "the rest to be delivered", 60)
        self.assertEqual(redis_list(_Redis(self.redis.port)),
                         [f"{name}:{index}" for name in acked for index in range(LINES)])
        self.assertEqual(bridge.spool()["redelivered"], 0)
        self.assertEqual(len(self.problems()), 1, self.problems())
        self.assertEqual(bridge.call("GET", "/readyz")[0], 200)
        # What the run saw, for whoever reads the test output.
        print(f"\nfull tmpfs: {filled} requests ({full['bytes']} bytes) acknowledged before "
              f"ENOSPC, {emptied['bytes']} bytes left once delivered, {len(acked)} requests "
              "in Redis in order", file=sys.stderr)

"""The real bridge process against real line servers, over real loopback sockets.

Core behaviour: lines in, exact bytes out; no interleaving; honest 503s while
the upstream is down and recovery when it is back; settings errors; signals;
``--demo``; the twistd ``.tac`` deployment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile

from tests.base import BridgeTestCase
from tests.bridge_process import REPO, BridgeProcess
from tests.line_server import LineServer
from tests.waiting import concurrently


class SendTests(BridgeTestCase):
    """POST /send through one bridge (default CRLF framing) shared by the class."""

    async def test_lines_reach_the_server_exactly_and_in_order(self) -> None:
        server = await self.start_upstream()
        assert self.http is not None

        reply = await self.http.post("/send", "alpha\nbeta\ngamma\n")
        self.assertEqual((reply.status, reply.json()), (202, {"sent": 3}))
        reply = await self.http.post(
            "/send", json.dumps({"lines": ["delta", "épsilon"]}),
            headers={"Content-Type": "application/json"},
        )
        self.assertEqual((reply.status, reply.json()), (202, {"sent": 2}))
        reply = await self.http.post("/send", b"zeta\r\neta")
        self.assertEqual((reply.status, reply.json()), (202, {"sent": 2}))

        expected = b"alpha\r\nbeta\r\ngamma\r\ndelta\r\n\xc3\xa9psilon\r\nzeta\r\neta\r\n"
        self.assertEqual(await server.wait_for_bytes(expected), expected)
        self.assertEqual(len(server.connections), 1)

    async def test_concurrent_sends_do_not_interleave(self) -> None:
        server = await self.start_upstream()
        http = self.http
        assert http is not None
        requests, per_request = 20, 5

        def lines_of(request: int) -> list[bytes]:
            return [f"req{request:02d}-line{line}".encode() for line in range(per_request)]

        replies = await concurrently(
            http.post("/send", b"".join(line + b"\n" for line in lines_of(i)))
            for i in range(requests)
        )
        self.assertEqual([(r.status, r.json()) for r in replies],
                         [(202, {"sent": per_request})] * requests)

        received = await server.wait_for_lines(requests * per_request)
        self.assertEqual(len(received), requests * per_request)
        # Each request's lines form one contiguous run, in the request's order.
        runs = [received[start:start + per_request]
                for start in range(0, len(received), per_request)]
        self.assertEqual(sorted(runs), [lines_of(i) for i in range(requests)])
        self.assertEqual(server.received, b"".join(line + b"\r\n" for line in received))

    async def test_upstream_down_gives_503_then_the_bridge_reconnects(self) -> None:
        server = await self.start_upstream()
        http = self.http
        assert http is not None
        reply = await http.post("/send", "before\n")
        self.assertEqual(reply.status, 202)
        self.assertEqual(await server.wait_for_bytes(b"before\r\n"), b"before\r\n")

        await server.stop()
        readyz = await self.wait_status(503, "/readyz", timeout=1.0)
        document = readyz.json()
        self.assertEqual(
            {key: document[key] for key in ("ready", "connected", "pool_size")},
            {"ready": False, "connected": 0, "pool_size": 1},
        )
        self.assertIn(document["state"], ("connecting", "waiting"))

        reply = await http.post("/send", "while down\n")
        self.assertEqual(reply.status, 503)
        self.assertEqual(reply.header("Retry-After"), "1")  # backoff max is 0.2 s
        address = f"127.0.0.1:{self.upstream_port}"
        self.assertEqual(reply.json()["error"], "upstream_unavailable")
        self.assertRegex(reply.json()["message"], (
            rf"^the upstream {address} is not connected \((connection refused by {address}|"
            rf"the connection to {address} was lost|{address} closed the connection); "
            r"next attempt in 0\.[0-9] s\); "
            "nothing was sent$"))

        first_new = len(server.connections)
        self.assertEqual(server.start(), self.upstream_port)  # the same port again
        await self.wait_connected(server, 1, timeout=5.0)
        reply = await http.post("/send", "after\n")
        self.assertEqual((reply.status, reply.json()), (202, {"sent": 1}))
        self.assertEqual(await server.wait_for_bytes(b"after\r\n", first=first_new),
                         b"after\r\n")
        self.assertEqual(server.received_since(0), b"before\r\nafter\r\n")


class LFDelimiterTests(BridgeTestCase):
    bridge_args = ("--delimiter", "lf")

    async def test_lines_are_written_with_lf(self) -> None:
        server = await self.start_upstream()
        assert self.http is not None
        reply = await self.http.post("/send", b"one\r\ntwo\nthree")
        self.assertEqual((reply.status, reply.json()), (202, {"sent": 3}))
        self.assertEqual(await server.wait_for_bytes(b"one\ntwo\nthree\n"), b"one\ntwo\nthree\n")


class SettingsErrorTests(BridgeTestCase):
    """A bad setting: exit status 2, one line on stderr naming it, no traceback."""

    shared_bridge = False

    async def assert_rejected(
        self, args: list[str], env: dict[str, str], setting: str, source: str
    ) -> None:
        bridge = BridgeProcess.bridge(*args, env=env)
        self.addCleanup(bridge.stop)
        status = await bridge.wait_exit(timeout=15.0)
        stderr = bridge.stderr()
        self.assertEqual(status, 2, bridge.describe())
        self.assertNotIn("Traceback", stderr)
        self.assertEqual(len(stderr.splitlines()), 1, stderr)
        self.assertTrue(stderr.endswith("\n"), stderr)
        self.assertTrue(stderr.startswith(f"bridge: error: setting '{setting}': "), stderr)
        self.assertIn(source, stderr)
        self.assertEqual(bridge.stdout(), "")

    async def test_negative_backoff_max(self) -> None:
        await self.assert_rejected(["--backoff-max", "-1"], {}, "backoff_max", "--backoff-max")

    async def test_listen_nonsense(self) -> None:
        await self.assert_rejected(["--listen", "nonsense"], {}, "listen", "'nonsense'")

    async def test_upstream_port_out_of_range_from_the_environment(self) -> None:
        await self.assert_rejected(
            [], {"BRIDGE_UPSTREAM": "127.0.0.1:99999"}, "upstream", "BRIDGE_UPSTREAM"
        )

    async def test_unknown_key_in_the_config_file(self) -> None:
        directory = tempfile.mkdtemp(prefix="bridge-config-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "bridge.toml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write('upstream = "127.0.0.1:7000"\nbogus_key = 1\n')
        await self.assert_rejected(["--config", path], {}, "bogus_key", path)


class ProcessTests(BridgeTestCase):
    """One bridge per test: signals, --demo, twistd."""

    shared_bridge = False

    async def connected_bridge(self) -> LineServer:
        server = LineServer()
        server.start()
        self.addCleanup(server.stop)
        await self.start_bridge("--listen", "127.0.0.1:0", "--upstream", server.address)
        await self.wait_connected(server, 1)
        return server

    async def test_sigterm_exits_0(self) -> None:
        await self.connected_bridge()
        bridge = self.bridge
        assert bridge is not None
        bridge.signal(signal.SIGTERM)
        self.assertEqual(await bridge.wait_exit(), 0, bridge.describe())
        self.assertIn("bridge stopped", bridge.stdout())
        self.assertEqual(bridge.stderr(), "")

    async def test_sigint_exits_0(self) -> None:
        await self.connected_bridge()
        bridge = self.bridge
        assert bridge is not None
        bridge.signal(signal.SIGINT)
        self.assertEqual(await bridge.wait_exit(), 0, bridge.describe())
        self.assertIn("bridge stopped", bridge.stdout())
        self.assertEqual(bridge.stderr(), "")

    async def test_demo_answers_requests(self) -> None:
        await self.start_bridge("--demo", "--listen", "127.0.0.1:0")
        assert self.http is not None
        await self.wait_status(200, "/readyz")
        reply = await self.http.post("/request", "hello\nworld\n")
        self.assertEqual(
            (reply.status, reply.json()), (200, {"replies": ["OK hello", "OK world"]})
        )

    async def test_twistd_runs_the_tac_file_configured_from_the_environment(self) -> None:
        server = LineServer()
        server.start()
        self.addCleanup(server.stop)
        twistd = BridgeProcess.twistd(
            REPO / "config" / "bridge.tac",
            {"BRIDGE_LISTEN": "127.0.0.1:0", "BRIDGE_UPSTREAM": server.address,
             "BRIDGE_BACKOFF_INITIAL": "0.05", "BRIDGE_BACKOFF_MAX": "0.2"},
        )
        await self.use(twistd)
        await self.wait_connected(server, 1)
        assert self.http is not None
        reply = await self.http.post("/send", "via twistd\n")
        self.assertEqual((reply.status, reply.json()), (202, {"sent": 1}))
        self.assertEqual(await server.wait_for_bytes(b"via twistd\r\n"), b"via twistd\r\n")

        twistd.signal(signal.SIGTERM)
        status = await twistd.wait_exit()
        # twistd re-raises the signal that stopped it (status 143 in a shell).
        self.assertIn(status, (0, -signal.SIGTERM), twistd.describe())
        self.assertIn("Server Shut Down.", twistd.stdout())

    async def test_twistd_stops_when_it_cannot_listen(self) -> None:
        taken = LineServer()  # holds the port the bridge is told to listen on
        taken.start()
        self.addCleanup(taken.stop)
        twistd = BridgeProcess.twistd(
            REPO / "config" / "bridge.tac",
            {"BRIDGE_LISTEN": taken.address, "BRIDGE_UPSTREAM": "127.0.0.1:1"},
        )
        self.addCleanup(twistd.stop)
        # twistd has no way to exit with another status than 0 (or a signal's).
        self.assertEqual(await twistd.wait_exit(timeout=15.0), 0, twistd.describe())
        self.assertIn(f"[bridge#error] cannot listen: Couldn't listen on {taken.address}",
                      twistd.stdout())

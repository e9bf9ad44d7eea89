"""``bridge healthcheck`` run as a real process, as a container HEALTHCHECK runs it.

Against real ``bridge`` processes on ephemeral loopback ports: one whose
upstream port is closed (alive, not ready) and one connected to a TCP server
of the test's own (alive and ready).  Also: nothing listening, a server that
never answers, and bad arguments.  Contract: exit 0 healthy, 1 not, 2 bad
arguments; one line saying why.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import unittest
from typing import ClassVar

# Probes start a Python process each (about a second); keep the deadlines generous
# for a loaded 2-core CI machine.
from tests.polling import DEADLINE, wait_for


def clean_environment() -> dict[str, str]:
    """This environment without BRIDGE_* (a developer's BRIDGE_TOKEN must not leak in)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("BRIDGE_")}


def closed_port() -> int:
    """A loopback port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class AcceptingServer:
    """A TCP server that accepts connections and holds them open, saying nothing."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:  # closed by close()
                return
            self.accepted.append(connection)

    def close(self) -> None:
        try:
            self.socket.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        self.socket.close()
        self._thread.join(5)
        for connection in self.accepted:
            connection.close()


class Bridge:
    """A real ``python -m bridge`` process; ``url`` once it listens."""

    def __init__(self, upstream_port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bridge", "--listen", "127.0.0.1:0",
             "--upstream", f"127.0.0.1:{upstream_port}", "--backoff-initial", "0.1",
             "--backoff-max", "0.5", "--shutdown-grace", "2", "--no-access-log"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=clean_environment(),
        )
        self.output: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = wait_for(self._listening, "the bridge to print 'listening on'")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self._lines.put(line)

    def _listening(self) -> str | None:
        try:
            line = self._lines.get(timeout=0.1)
        except queue.Empty:
            if self.process.poll() is not None:
                raise AssertionError("the bridge exited:\n" + "".join(self.output)) from None
            return None
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", line)
        return match.group(1) if match else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "healthcheck", *args],
        capture_output=True, text=True, timeout=DEADLINE,
        env=clean_environment() if env is None else env,
    )


def healthchecks(*argument_lists: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run several ``bridge healthcheck`` processes at once (start-up is most of their time)."""
    command = [sys.executable, "-m", "bridge", "healthcheck"]
    processes = [
        subprocess.Popen([*command, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=clean_environment())
        for arguments in argument_lists
    ]
    results = []
    for arguments, process in zip(argument_lists, processes, strict=True):
        stdout, stderr = process.communicate(timeout=DEADLINE)
        results.append(subprocess.CompletedProcess(arguments, process.returncode, stdout, stderr))
    return results


class HealthcheckAgainstRealBridgeTests(unittest.TestCase):
    """One bridge with its upstream down, one with it up, shared by the class."""

    upstream: ClassVar[AcceptingServer]
    down: ClassVar[Bridge]
    up: ClassVar[Bridge]

    @classmethod
    def setUpClass(cls) -> None:
        cls.upstream = AcceptingServer()
        cls.down = Bridge(closed_port())
        cls.up = Bridge(cls.upstream.port)

    @classmethod
    def tearDownClass(cls) -> None:
        # Upstream first: a bridge drains by half-closing and waiting for the
        # server to close its side, which this silent server would never do.
        cls.upstream.close()
        for bridge in (cls.down, cls.up):
            bridge.stop()

    def assertOneLine(self, result: subprocess.CompletedProcess[str], status: int,
                      pattern: str) -> None:
        self.assertEqual(result.returncode, status, result.stdout + result.stderr)
        output = result.stdout + result.stderr
        self.assertEqual(output.count("\n"), 1, output)
        self.assertRegex(output, pattern)

    def test_liveness_is_healthy_while_the_upstream_is_down(self) -> None:
        result = healthcheck("--url", self.down.url)
        self.assertOneLine(
            result, 0, rf"^healthy: {re.escape(self.down.url)}/healthz answered 200\n$"
        )
        self.assertEqual(result.stderr, "")

    def test_readiness_is_unhealthy_while_the_upstream_is_down(self) -> None:
        result = healthcheck("--ready", "--url", self.down.url)
        self.assertOneLine(
            result, 1,
            rf'^unhealthy: {re.escape(self.down.url)}/readyz answered 503 .*"ready": false',
        )

    def test_readiness_turns_healthy_once_the_upstream_is_connected(self) -> None:
        def ready() -> subprocess.CompletedProcess[str] | None:
            result = healthcheck("--ready", "--url", self.up.url + "/")  # a trailing / is fine
            return result if result.returncode == 0 else None

        result = wait_for(ready, "bridge healthcheck --ready to pass")
        self.assertOneLine(result, 0, rf"^healthy: {re.escape(self.up.url)}/readyz answered 200\n$")
        self.assertTrue(self.upstream.accepted, "the bridge never connected to the upstream")

    def test_url_from_the_environment(self) -> None:
        env = clean_environment()
        env["BRIDGE_HEALTHCHECK_URL"] = self.down.url
        self.assertOneLine(healthcheck(env=env), 0, rf"^healthy: {re.escape(self.down.url)}/")


class HealthcheckWithoutBridgeTests(unittest.TestCase):
    def test_nothing_listening_is_unhealthy(self) -> None:
        url = f"http://127.0.0.1:{closed_port()}"
        result = healthcheck("--url", url)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertRegex(result.stdout, rf"^unhealthy: {re.escape(url)}/healthz: .*refused.*\n$")
        self.assertEqual(result.stdout.count("\n"), 1)
        self.assertEqual(result.stderr, "")

    def test_a_server_that_never_answers_is_unhealthy_after_the_timeout(self) -> None:
        silent = AcceptingServer()  # accepts, reads nothing, answers nothing
        self.addCleanup(silent.close)
        started = time.monotonic()
        result = healthcheck("--url", f"http://127.0.0.1:{silent.port}", "--timeout", "0.5")
        elapsed = time.monotonic() - started
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertEqual(
            result.stdout, f"unhealthy: http://127.0.0.1:{silent.port}/healthz: "
            "no answer within 0.5 s\n",
        )
        self.assertEqual(result.stdout.count("\n"), 1)
        # Process start-up is most of it; a 30 s default timeout would show here.
        self.assertLess(elapsed, DEADLINE / 2)

    def test_bad_urls_exit_2_with_one_line(self) -> None:
        urls = ("ftp://127.0.0.1:8080", "127.0.0.1:8080", "http://[bad",
                "http://127.0.0.1:port", "http://:8080", "http://127.0.0.1:99999")
        for url, result in zip(urls, healthchecks(*(["--url", url] for url in urls)), strict=True):
            with self.subTest(url=url):
                self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
                self.assertEqual(result.stdout, "")
                self.assertRegex(result.stderr, r"^bridge healthcheck: --url .*\n$")
                self.assertNotIn("Traceback", result.stderr)

    def test_bad_timeout_exits_2(self) -> None:
        timeouts = ("0", "-1", "nan")
        results = healthchecks(*(["--timeout", timeout] for timeout in timeouts))
        for timeout, result in zip(timeouts, results, strict=True):
            with self.subTest(timeout=timeout):
                self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
                self.assertEqual(result.stderr, "bridge healthcheck: --timeout must be positive\n")


class DefaultURLTests(unittest.TestCase):
    """Without --url the probe finds the bridge the way the bridge was told to listen."""

    def test_explicit_variable_wins(self) -> None:
        from bridge.app.healthcheck import default_url

        self.assertEqual(
            default_url({"BRIDGE_HEALTHCHECK_URL": "http://h:1", "BRIDGE_LISTEN": "0.0.0.0:9"}),
            "http://h:1",
        )

    def test_listen_port_on_loopback(self) -> None:
        from bridge.app.healthcheck import default_url

        self.assertEqual(default_url({"BRIDGE_LISTEN": "0.0.0.0:9000"}), "http://127.0.0.1:9000")
        self.assertEqual(default_url({"BRIDGE_LISTEN": "[::1]:81"}), "http://[::1]:81")
        self.assertEqual(default_url({"BRIDGE_LISTEN": "unix:/run/b.sock"}),
                         "http://127.0.0.1:8080")
        self.assertEqual(default_url({}), "http://127.0.0.1:8080")

    def test_endpoint_string_listen(self) -> None:
        from bridge.app.healthcheck import default_url

        self.assertEqual(default_url({"BRIDGE_LISTEN": "tcp:18482"}), "http://127.0.0.1:18482")
        self.assertEqual(default_url({"BRIDGE_LISTEN": "tcp:9:interface=127.0.0.2"}),
                         "http://127.0.0.2:9")
        self.assertEqual(
            default_url({"BRIDGE_LISTEN": "ssl:8443:privateKey=k:certKey=c:interface=0.0.0.0"}),
            "https://127.0.0.1:8443",
        )

"""``bridge healthcheck`` run as a real process, as a container HEALTHCHECK runs it.

Against real ``bridge`` processes: on an ephemeral loopback port with its
upstream port closed (alive, not ready), on one connected to a TCP server of
the test's own (alive and ready), on a unix socket, and behind TLS.  Also:
nothing listening, a server that never answers, one that answers garbage, and
bad arguments.  Contract: exit 0 healthy, 1 not, 2 bad arguments; one line
saying why.  And the probe stays light: it never imports Twisted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from typing import ClassVar

from tests.bridge_process import BridgeProcess
from tests.ports import free_port as closed_port
from tests.waiting import DEADLINE, wait_until

#: Modules the probe must not need (each costs start-up CPU on every probe).
HEAVY = ("twisted", "treq", "klein", "zope", "hyperlink", "OpenSSL", "cryptography",
         "prometheus_client", "httptools", "bridge.config", "bridge.endpoints")


def clean_environment() -> dict[str, str]:
    """This environment without BRIDGE_* (a developer's BRIDGE_TOKEN must not leak in)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("BRIDGE_")}


class AcceptingServer:
    """A TCP server that accepts connections and holds them open, saying
    nothing, or writes ``answer`` to each and closes it."""

    def __init__(self, answer: bytes | None = None) -> None:
        self.answer = answer
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
            if self.answer is not None:
                # Read the request first: closing a socket with unread bytes
                # sends a reset, and the probe would see that instead.
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = connection.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                connection.sendall(self.answer)
                connection.close()
            else:
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


def start_bridge(*args: str) -> tuple[BridgeProcess, str]:
    """A real bridge process and what its ``listening on`` log line names
    (``http://127.0.0.1:PORT``, ``https://...`` or ``unix:PATH``)."""
    ((process, address),) = start_bridges(args)
    return process, address


def start_bridges(*arguments: tuple[str, ...]) -> list[tuple[BridgeProcess, str]]:
    """Several bridges (see :func:`start_bridge`), started at once and then
    waited for: their start-ups overlap."""
    processes: list[BridgeProcess] = []
    try:
        for args in arguments:
            processes.append(
                BridgeProcess.bridge("--shutdown-grace", "2", "--no-access-log", *args))
        return [(process, process.block_until_listening()) for process in processes]
    except BaseException:
        for process in processes:
            process.stop_now()
        raise


def healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "healthcheck", *args],
        capture_output=True, text=True, timeout=DEADLINE,
        env=clean_environment() if env is None else env,
    )


def healthchecks(*argument_lists: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run several ``bridge healthcheck`` processes at once."""
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


class ProbeAssertions(unittest.TestCase):
    def assertOneLine(self, result: subprocess.CompletedProcess[str], status: int,
                      pattern: str) -> None:
        self.assertEqual(result.returncode, status, result.stdout + result.stderr)
        output = result.stdout + result.stderr
        self.assertEqual(output.count("\n"), 1, output)
        self.assertRegex(output, pattern)

    def assertExactly(self, result: subprocess.CompletedProcess[str], status: int,
                      stdout: str) -> None:
        self.assertEqual((result.returncode, result.stdout, result.stderr), (status, stdout, ""))


class HealthcheckAgainstRealBridgeTests(ProbeAssertions):
    """One bridge with its upstream down, one with it up, shared by the class."""

    upstream: ClassVar[AcceptingServer]
    down: ClassVar[BridgeProcess]
    up: ClassVar[BridgeProcess]
    down_url: ClassVar[str]
    up_url: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        cls.upstream = AcceptingServer()
        fast = ("--listen", "127.0.0.1:0", "--backoff-initial", "0.1", "--backoff-max", "0.5")
        (cls.down, cls.down_url), (cls.up, cls.up_url) = start_bridges(
            (*fast, "--upstream", f"127.0.0.1:{closed_port()}"),
            (*fast, "--upstream", f"127.0.0.1:{cls.upstream.port}"),
        )

    @classmethod
    def tearDownClass(cls) -> None:
        # Upstream first: a bridge drains by half-closing and waiting for the
        # server to close its side, which this silent server would never do.
        cls.upstream.close()
        for bridge in (cls.down, cls.up):
            bridge.stop_now()

    def test_liveness_is_healthy_while_the_upstream_is_down(self) -> None:
        self.assertExactly(healthcheck("--url", self.down_url), 0,
                           f"healthy: {self.down_url}/healthz answered 200\n")

    def test_readiness_is_unhealthy_while_the_upstream_is_down(self) -> None:
        result = healthcheck("--ready", "--url", self.down_url)
        self.assertOneLine(
            result, 1,
            rf'^unhealthy: {re.escape(self.down_url)}/readyz answered 503 \{{"ready": false, ',
        )

    def test_readiness_turns_healthy_once_the_upstream_is_connected(self) -> None:
        def ready() -> subprocess.CompletedProcess[str] | None:
            result = healthcheck("--ready", "--url", self.up_url + "/")  # a trailing / is fine
            return result if result.returncode == 0 else None

        result = wait_until(ready, "bridge healthcheck --ready to pass")
        self.assertExactly(result, 0, f"healthy: {self.up_url}/readyz answered 200\n")
        self.assertTrue(self.upstream.accepted, "the bridge never connected to the upstream")

    def test_url_from_the_environment(self) -> None:
        env = clean_environment()
        env["BRIDGE_HEALTHCHECK_URL"] = self.down_url
        self.assertExactly(healthcheck(env=env), 0,
                           f"healthy: {self.down_url}/healthz answered 200\n")

    def test_url_from_the_bridges_own_listen_setting(self) -> None:
        env = clean_environment()
        env["BRIDGE_LISTEN"] = "tcp:" + self.down_url.rsplit(":", 1)[1]  # all interfaces
        self.assertExactly(healthcheck(env=env), 0,
                           f"healthy: {self.down_url}/healthz answered 200\n")

    def test_the_probe_imports_nothing_heavy(self) -> None:
        # Exactly what the console script does, then a look at sys.modules.
        program = (
            "import sys\n"
            "from bridge.app.cli import main\n"
            f"status = main(['healthcheck', '--url', {self.down_url!r}])\n"
            f"heavy = sorted(m for m in sys.modules if m.startswith({HEAVY!r}))\n"
            "print(status, heavy)\n"
        )
        result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                                timeout=DEADLINE, env=clean_environment())
        self.assertEqual(
            (result.stdout, result.stderr),
            (f"healthy: {self.down_url}/healthz answered 200\n0 []\n", ""),
        )


class HealthcheckOnUnixSocketTests(ProbeAssertions):
    """A bridge listening on a unix socket (its upstream down: alive, not ready)."""

    directory: ClassVar[str]
    path: ClassVar[str]
    bridge: ClassVar[BridgeProcess]

    @classmethod
    def setUpClass(cls) -> None:
        cls.directory = tempfile.mkdtemp(prefix="bridge-hc-")
        cls.path = os.path.join(cls.directory, "bridge.sock")
        cls.bridge, shown = start_bridge(
            "--listen", f"unix:{cls.path}", "--upstream", f"127.0.0.1:{closed_port()}",
        )
        assert shown == f"unix:{cls.path}", shown

    @classmethod
    def tearDownClass(cls) -> None:
        cls.bridge.stop_now()
        shutil.rmtree(cls.directory, ignore_errors=True)

    def test_liveness_over_the_socket(self) -> None:
        self.assertExactly(healthcheck("--url", f"unix:{self.path}"), 0,
                           f"healthy: unix:{self.path} /healthz answered 200\n")

    def test_readiness_over_the_socket(self) -> None:
        result = healthcheck("--ready", "--url", f"unix:{self.path}")
        self.assertOneLine(
            result, 1, rf'^unhealthy: unix:{re.escape(self.path)} /readyz answered 503 \{{"ready"'
        )

    def test_default_url_from_a_unix_listen_setting(self) -> None:
        for name, value in (("BRIDGE_LISTEN", f"unix:{self.path}:mode=660"),
                            ("BRIDGE_HEALTHCHECK_URL", f"unix:{self.path}")):
            with self.subTest(name=name):
                env = clean_environment()
                env[name] = value
                self.assertExactly(healthcheck(env=env), 0,
                                   f"healthy: unix:{self.path} /healthz answered 200\n")

    def test_no_socket_is_unhealthy(self) -> None:
        missing = os.path.join(self.directory, "missing.sock")
        self.assertExactly(healthcheck("--url", f"unix:{missing}"), 1,
                           f"unhealthy: unix:{missing} /healthz: No such file or directory\n")


class HealthcheckOverTLSTests(ProbeAssertions):
    """An ``ssl:`` bridge: the certificate is checked against the trust store."""

    directory: ClassVar[str]
    certificate: ClassVar[str]
    bridge: ClassVar[BridgeProcess]
    url: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        from tests.test_tls import write_certificate

        cls.directory = tempfile.mkdtemp(prefix="bridge-hc-tls-")
        cls.certificate, key = write_certificate(cls.directory)
        cls.bridge, cls.url = start_bridge(
            "--listen", f"ssl:0:privateKey={key}:certKey={cls.certificate}:interface=127.0.0.1",
            "--upstream", f"127.0.0.1:{closed_port()}",
        )
        assert cls.url.startswith("https://"), cls.url

    @classmethod
    def tearDownClass(cls) -> None:
        cls.bridge.stop_now()
        shutil.rmtree(cls.directory, ignore_errors=True)

    def test_trusted_certificate_is_healthy(self) -> None:
        env = clean_environment()
        env["SSL_CERT_FILE"] = self.certificate  # the trust store: this certificate only
        self.assertExactly(healthcheck("--url", self.url, env=env), 0,
                           f"healthy: {self.url}/healthz answered 200\n")

    def test_untrusted_certificate_is_unhealthy(self) -> None:
        env = clean_environment()
        env.pop("SSL_CERT_FILE", None)
        result = healthcheck("--url", self.url, env=env)
        self.assertOneLine(
            result, 1, rf"^unhealthy: {re.escape(self.url)}/healthz: certificate verify failed: "
            r"self[- ]signed certificate\n$",
        )


class HealthcheckWithoutBridgeTests(ProbeAssertions):
    def test_nothing_listening_is_unhealthy(self) -> None:
        url = f"http://127.0.0.1:{closed_port()}"
        self.assertExactly(healthcheck("--url", url), 1,
                           f"unhealthy: {url}/healthz: Connection refused\n")

    def test_a_server_that_never_answers_is_unhealthy_after_the_timeout(self) -> None:
        silent = AcceptingServer()  # accepts, reads nothing, answers nothing
        self.addCleanup(silent.close)
        started = time.monotonic()
        result = healthcheck("--url", f"http://127.0.0.1:{silent.port}", "--timeout", "0.5")
        elapsed = time.monotonic() - started
        self.assertExactly(result, 1, f"unhealthy: http://127.0.0.1:{silent.port}/healthz: "
                           "no answer within 0.5 s\n")
        # Process start-up is most of it; a 30 s default timeout would show here.
        self.assertLess(elapsed, DEADLINE / 2)

    def test_answers_that_are_not_http_are_unhealthy(self) -> None:
        cases = {
            b"": "the connection closed without an answer",
            b"HTTP/1.1 200 OK\r\nContent-": "the connection closed before a whole answer",
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n": "not an HTTP answer: b'SSH-2.0-OpenSSH_9.2'",
        }
        for answer, reason in cases.items():
            with self.subTest(answer=answer):
                server = AcceptingServer(answer)
                self.addCleanup(server.close)
                url = f"http://127.0.0.1:{server.port}"
                self.assertExactly(healthcheck("--url", url), 1,
                                   f"unhealthy: {url}/healthz: {reason}\n")

    def test_a_chunked_answer_is_reported_decoded(self) -> None:
        body = json.dumps({"ready": False}).encode()
        server = AcceptingServer(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
        )
        self.addCleanup(server.close)
        url = f"http://127.0.0.1:{server.port}"
        self.assertExactly(healthcheck("--ready", "--url", url), 1,
                           f'unhealthy: {url}/readyz answered 503 {{"ready": false}}\n')

    def test_bad_urls_exit_2_with_one_line(self) -> None:
        urls = ("ftp://127.0.0.1:8080", "127.0.0.1:8080", "http://[bad",
                "http://127.0.0.1:port", "http://:8080", "http://127.0.0.1:99999",
                "http://127.0.0.1:0", "unix:", "unix:/")
        for url, result in zip(urls, healthchecks(*(["--url", url] for url in urls)), strict=True):
            with self.subTest(url=url):
                self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
                self.assertEqual(result.stdout, "")
                self.assertRegex(result.stderr,
                                 rf"^bridge healthcheck: --url is not usable: {re.escape(url)}: "
                                 r"\S.*\n$")
                self.assertNotIn("Traceback", result.stderr)
        self.assertEqual(
            healthchecks(["--url", "ftp://h"])[0].stderr,
            "bridge healthcheck: --url is not usable: ftp://h: must start with http://, "
            "https:// or unix:\n",
        )

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
        self.assertEqual(default_url({"BRIDGE_LISTEN": "9001"}), "http://127.0.0.1:9001")
        self.assertEqual(default_url({}), "http://127.0.0.1:8080")
        self.assertEqual(default_url({"BRIDGE_LISTEN": "bogus"}), "http://127.0.0.1:8080")

    def test_unix_listen(self) -> None:
        from bridge.app.healthcheck import default_url

        self.assertEqual(default_url({"BRIDGE_LISTEN": "unix:/run/b.sock"}), "unix:/run/b.sock")
        self.assertEqual(default_url({"BRIDGE_LISTEN": "unix:/run/b.sock:mode=660:lockfile=0"}),
                         "unix:/run/b.sock")
        self.assertEqual(default_url({"BRIDGE_LISTEN": "unix:address=/run/b.sock:mode=660"}),
                         "unix:/run/b.sock")

    def test_endpoint_string_listen(self) -> None:
        from bridge.app.healthcheck import default_url

        self.assertEqual(default_url({"BRIDGE_LISTEN": "tcp:18482"}), "http://127.0.0.1:18482")
        self.assertEqual(default_url({"BRIDGE_LISTEN": "tcp:9:interface=127.0.0.2"}),
                         "http://127.0.0.2:9")
        self.assertEqual(default_url({"BRIDGE_LISTEN": "tcp:port=9:interface=127.0.0.2"}),
                         "http://127.0.0.2:9")
        self.assertEqual(default_url({"BRIDGE_LISTEN": "tcp6:9:interface=\\:\\:1"}),
                         "http://[::1]:9")
        self.assertEqual(
            default_url({"BRIDGE_LISTEN": "ssl:8443:privateKey=k:certKey=c:interface=0.0.0.0"}),
            "https://127.0.0.1:8443",
        )

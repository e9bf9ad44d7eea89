"""``make run`` and ``make test``: what they install and what they print.

``make -n`` (print the commands, run nothing) in an empty directory with a
copy of pyproject.toml shows what a fresh clone would get; the banner is
checked through the module ``make run`` calls.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import unittest

from bridge.app.banner import banner
from tests.bridge_process import REPO


class FreshCloneTests(unittest.TestCase):
    def setUp(self) -> None:
        if shutil.which("make") is None:
            self.skipTest("make is not installed")
        self.directory = tempfile.mkdtemp(prefix="bridge-make-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        shutil.copy(REPO / "pyproject.toml", self.directory)

    def dry_run(self, *targets: str) -> str:
        result = subprocess.run(
            ["make", "-n", "-f", os.fspath(REPO / "Makefile"), *targets],
            cwd=self.directory, capture_output=True, text=True, timeout=30, check=True,
        )
        return result.stdout

    def test_run_installs_only_the_runtime(self) -> None:
        commands = self.dry_run("run", "ARGS=--listen 127.0.0.1:9090")
        self.assertIn("pip install --quiet --no-compile -e .\n", commands)
        self.assertNotIn("test", commands.replace("pytest", ""))
        self.assertIn("python -m bridge.app.banner --listen 127.0.0.1:9090\n", commands)
        self.assertIn("bridge --demo --listen 127.0.0.1:9090\n", commands)

    def test_test_installs_the_test_extra_and_shows_skip_reasons(self) -> None:
        commands = self.dry_run("test")
        self.assertIn("pip install --quiet --no-compile -e .\n", commands)
        self.assertIn("pip install --quiet --no-compile -r .venv/test-requirements.txt\n", commands)
        self.assertIn("python -m pytest -q -rs -n auto", commands)


class BannerTests(unittest.TestCase):
    def curl_lines(self, *argv: str, environ: dict[str, str] | None = None) -> list[str]:
        text = banner(list(argv), environ or {})
        return [line.strip() for line in text.splitlines() if line.strip().startswith("curl")]

    def test_default_port(self) -> None:
        self.assertEqual(self.curl_lines(), [
            "curl -X POST --data-binary 'hello world' http://127.0.0.1:8080/send",
            "curl -X POST --data-binary PING http://127.0.0.1:8080/request",
        ])

    def test_the_port_args_chose(self) -> None:
        for argv in (["--listen", "127.0.0.1:9090"], ["--listen=127.0.0.1:9090"],
                     ["--log-level", "debug", "--listen", "9090"],
                     ["--listen", "0.0.0.0:1", "--listen", "tcp:9090"]):
            with self.subTest(argv=argv):
                self.assertEqual(self.curl_lines(*argv)[0],
                                 "curl -X POST --data-binary 'hello world' "
                                 "http://127.0.0.1:9090/send")

    def test_environment_and_unix_socket(self) -> None:
        self.assertEqual(
            self.curl_lines(environ={"BRIDGE_LISTEN": "unix:/tmp/b.sock"})[1],
            "curl -X POST --data-binary PING --unix-socket /tmp/b.sock http://localhost/request",
        )
        self.assertEqual(
            self.curl_lines("--listen", "[::1]:9091", environ={"BRIDGE_LISTEN": "9"})[0],
            "curl -X POST --data-binary 'hello world' http://[::1]:9091/send",
        )

    def test_the_banner_says_how_to_change_the_port(self) -> None:
        self.assertIn("make run ARGS='--listen 127.0.0.1:9090'", banner([], {}))

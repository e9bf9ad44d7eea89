"""Real upstream servers for tests: redis-server, memcached, SMTP, FTP.

Each ``start_*`` helper starts its own server process on a free loopback
port, waits until it accepts connections, registers its stop (by PID, never by
name) with the test case's cleanups, and returns the port.  When the server
cannot be had (binary or module missing) the test is skipped with the reason.
We never use a system-wide instance or a default port: Debian starts its own
services on install, and tests must not depend on them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest
from importlib.util import find_spec
from typing import Protocol

from tests.polling import wait_for

LOOPBACK = "127.0.0.1"
#: How .ci/run gets the Debian packages, for skip messages.
_CI_HINT = ".ci/run installs Debian's {package} when apt-get is available"


class Case(Protocol):
    """What the helpers need of a test case (trial's and unittest's have it)."""

    def addCleanup(self, function: object, *args: object) -> None: ...


def free_port() -> int:
    """A TCP port free on the loopback address right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def _start(case: Case, argv: list[str], port: int, what: str) -> int:
    """Run ``argv``; stop it at cleanup; wait until ``port`` accepts."""
    _launch(case, argv, port, what)
    return port


def _launch(case: Case, argv: list[str], port: int, what: str) -> subprocess.Popen[bytes]:
    """:func:`_start`, returning the process."""
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    case.addCleanup(_stop, process, log)

    def up() -> bool:
        if process.poll() is not None:
            log.seek(0)
            output = log.read().decode("utf-8", "replace")
            raise AssertionError(f"{what} exited with {process.returncode}: {output}")
        return _accepting(port)

    wait_for(up, f"{what} to accept connections on port {port}")
    return process


def _stop(process: subprocess.Popen[bytes], log: object) -> None:
    if process.poll() is None:
        process.terminate()  # this process, by its PID
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    close = getattr(log, "close", None)
    if close is not None:
        close()


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise unittest.SkipTest(f"{name} is not installed ({_CI_HINT.format(package=package)})")
    return path


def _module(name: str) -> None:
    if find_spec(name) is None:
        raise unittest.SkipTest(f"{name} is not installed (it is in the test extra)")


def _temporary_directory(case: Case) -> str:
    path = tempfile.mkdtemp(prefix="bridge-server-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


def start_redis(case: Case) -> int:
    """redis-server on loopback, no persistence; returns its port."""
    binary = _binary("redis-server", "redis-server")
    port = free_port()
    return _start(case, [
        binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
        "--dir", _temporary_directory(case),
    ], port, "redis-server")


class RedisServer:
    """A redis-server that a test kills (by its PID) and starts again on the
    same port.  Its data is kept in an append-only file fsynced before every
    reply, so that what it answered survives the restart.  Give it a port
    outside the ephemeral range (``tests.support.unused_port``): the bridge
    keeps connecting to it while it is down."""

    def __init__(self, case: Case, port: int) -> None:
        self._binary = _binary("redis-server", "redis-server")
        self._case = case
        self.port = port
        self._directory = _temporary_directory(case)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = _launch(self._case, [
            self._binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", self._directory,
        ], self.port, "redis-server")

    def kill(self) -> None:
        """SIGKILL, as a crash: by this process's PID, then reap it."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def call(self, *words: str) -> object:
        """One command on a connection of its own; its decoded reply."""
        import hiredis

        request = b"*%d\r\n" % len(words) + b"".join(
            b"$%d\r\n%s\r\n" % (len(word.encode()), word.encode()) for word in words)
        reader = hiredis.Reader(encoding="utf-8")
        with socket.create_connection((LOOPBACK, self.port), timeout=10) as connection:
            connection.sendall(request)
            while (reply := reader.gets()) is False:
                data = connection.recv(1 << 20)
                if not data:
                    raise AssertionError(f"redis-server closed before answering {words}")
                reader.feed(data)
        return reply


def start_memcached(case: Case) -> int:
    """memcached on loopback, TCP only; returns its port."""
    binary = _binary("memcached", "memcached")
    port = free_port()
    argv = [binary, "-l", LOOPBACK, "-p", str(port), "-U", "0"]
    if os.geteuid() == 0:  # memcached refuses to run as root unless told to
        argv += ["-u", "root"]
    return _start(case, argv, port, "memcached")


def start_smtp(case: Case) -> int:
    """aiosmtpd (its Debugging handler prints each message) on loopback."""
    _module("aiosmtpd")
    port = free_port()
    return _start(case, [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"{LOOPBACK}:{port}"],
                  port, "aiosmtpd")


FTP_USER = "bridge"
FTP_PASSWORD = "secret"


def start_ftp(case: Case, files: dict[str, bytes] | None = None) -> int:
    """pyftpdlib on loopback, read-only, one user (FTP_USER, FTP_PASSWORD),
    serving a fresh directory holding ``files``."""
    _module("pyftpdlib")
    directory = _temporary_directory(case)
    for name, content in (files or {}).items():
        with open(os.path.join(directory, name), "wb") as handle:
            handle.write(content)
    port = free_port()
    return _start(case, [
        sys.executable, "-m", "pyftpdlib", "-i", LOOPBACK, "-p", str(port), "-d", directory,
        "-u", FTP_USER, "-P", FTP_PASSWORD,
    ], port, "pyftpdlib")

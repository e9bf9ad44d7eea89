"""Real upstream servers for tests: redis-server, memcached, SMTP, FTP.

Each ``start_*`` helper starts its own server process on a free loopback
port, waits until it accepts connections, registers its stop (by PID, never by
name) with the test case's cleanups, and returns the port.  When the server
cannot be had (binary or module missing) the test is skipped with the reason.
We never use a system-wide instance or a default port: Debian starts its own
services on install, and tests must not depend on them.

:class:`ServerProcess` is the same server as an object that can be stopped
and started again on the same port (a restart a client must survive); the
``*_process`` functions build one without starting it.
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
from typing import IO, Protocol

from tests.ports import LOOPBACK, accepting, free_port, unused_port
from tests.waiting import wait_until

#: How .ci/run gets the Debian packages, for skip messages.
_CI_HINT = ".ci/run installs Debian's {package} when apt-get is available"


class Case(Protocol):
    """What the helpers need of a test case (trial's and unittest's have it)."""

    def addCleanup(self, function: object, *args: object) -> None: ...


class ServerProcess:
    """One server process on one loopback port: :meth:`start` it, :meth:`stop`
    it (by its PID) and :meth:`start` it again on the same port; :meth:`close`
    stops it for good and removes its temporary directories.

    ``start`` blocks until the port accepts connections (or fails with the
    server's output when it exits first); ``stop`` until the process is gone,
    so that every connection to it is closed when it returns.
    """

    def __init__(self, argv: list[str], port: int, what: str,
                 directories: tuple[str, ...] = ()) -> None:
        self.argv = argv
        self.port = port
        self.what = what
        self._directories = directories
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> int:
        """Start the process and wait until the port accepts; returns the port."""
        self.launch()
        return self.wait_accepting()

    def launch(self) -> None:
        """Start the process without waiting (see :meth:`wait_accepting`)."""
        assert not self.running, f"{self.what} is already running"
        self._close_log()
        log = self._log = tempfile.NamedTemporaryFile(prefix="bridge-server-log-")
        self._process = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.starts += 1

    def wait_accepting(self) -> int:
        """Wait until the launched process accepts connections (fail with its
        output if it exits first); returns the port."""
        process = self._process
        assert process is not None, f"{self.what} was not launched"

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    f"{self.what} exited with {process.returncode}: {self.output()}")
            return accepting(self.port)

        wait_until(up, f"{self.what} to accept connections on port {self.port}")
        return self.port

    def stop(self) -> None:
        """Terminate the process (SIGTERM, SIGKILL after 10 s) and wait for it.
        Idempotent."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()  # this process, by its PID
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def kill(self) -> None:
        """SIGKILL, as a crash (by this process's PID), and reap it."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def close(self) -> None:
        """Stop, and remove the log and the temporary directories."""
        self.stop()
        self._close_log()
        for directory in self._directories:
            shutil.rmtree(directory, ignore_errors=True)

    def output(self) -> str:
        """What the process wrote so far (this start only)."""
        if self._log is None:
            return ""
        with open(self._log.name, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _start(case: Case, server: ServerProcess) -> int:
    """Start ``server`` for one test: closed at the test's cleanup."""
    case.addCleanup(server.close)
    return server.start()


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise unittest.SkipTest(f"{name} is not installed ({_CI_HINT.format(package=package)})")
    return path


def _module(name: str) -> None:
    if find_spec(name) is None:
        raise unittest.SkipTest(f"{name} is not installed (it is in the test extra)")


def redis_process(port: int | None = None) -> ServerProcess:
    """redis-server on loopback, no persistence (not started yet)."""
    binary = _binary("redis-server", "redis-server")
    port = unused_port() if port is None else port
    directory = tempfile.mkdtemp(prefix="bridge-server-")
    return ServerProcess([
        binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
        "--dir", directory,
    ], port, "redis-server", (directory,))


class RedisServer:
    """A redis-server that a test kills (by its PID) and starts again on the
    same port.  Its data is kept in an append-only file fsynced before every
    reply, so that what it answered survives the restart.  Give it a port
    outside the ephemeral range (:func:`unused_port`): the bridge keeps
    connecting to it while it is down."""

    def __init__(self, case: Case, port: int) -> None:
        binary = _binary("redis-server", "redis-server")
        directory = tempfile.mkdtemp(prefix="bridge-server-")
        self.port = port
        self._server = ServerProcess([
            binary, "--port", str(port), "--bind", LOOPBACK, "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", directory,
        ], port, "redis-server", (directory,))
        case.addCleanup(self._server.close)

    def start(self) -> None:
        self._server.start()

    def kill(self) -> None:
        """SIGKILL, as a crash: by this process's PID, then reap it."""
        self._server.kill()

    def call(self, *words: str) -> object:
        """One command on a connection of its own; its decoded reply."""
        return redis_call(self.port, *words)


def redis_call(port: int, *words: str) -> object:
    """One command to the redis-server on ``port``, on a connection of its
    own; its reply as hiredis decodes it."""
    import hiredis

    request = b"*%d\r\n" % len(words) + b"".join(
        b"$%d\r\n%s\r\n" % (len(word.encode()), word.encode()) for word in words)
    reader = hiredis.Reader(encoding="utf-8")
    with socket.create_connection((LOOPBACK, port), timeout=10) as connection:
        connection.sendall(request)
        while (reply := reader.gets()) is False:
            data = connection.recv(1 << 20)
            if not data:
                raise AssertionError(f"redis-server closed before answering {words}")
            reader.feed(data)
    return reply


def memcached_process(port: int | None = None) -> ServerProcess:
    """memcached on loopback, TCP only (not started yet)."""
    binary = _binary("memcached", "memcached")
    port = unused_port() if port is None else port
    argv = [binary, "-l", LOOPBACK, "-p", str(port), "-U", "0"]
    if os.geteuid() == 0:  # memcached refuses to run as root unless told to
        argv += ["-u", "root"]
    return ServerProcess(argv, port, "memcached")


def smtp_process(port: int | None = None) -> ServerProcess:
    """aiosmtpd (its Debugging handler prints each message) on loopback
    (not started yet)."""
    _module("aiosmtpd")
    port = unused_port() if port is None else port
    return ServerProcess([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"{LOOPBACK}:{port}"],
                         port, "aiosmtpd")


FTP_USER = "bridge"
FTP_PASSWORD = "secret"


def ftp_process(port: int | None = None, files: dict[str, bytes] | None = None) -> ServerProcess:
    """pyftpdlib on loopback, read-only, one user (FTP_USER, FTP_PASSWORD),
    serving a fresh directory holding ``files`` (not started yet)."""
    _module("pyftpdlib")
    port = unused_port() if port is None else port
    directory = tempfile.mkdtemp(prefix="bridge-server-")
    for name, content in (files or {}).items():
        with open(os.path.join(directory, name), "wb") as handle:
            handle.write(content)
    return ServerProcess([
        sys.executable, "-m", "pyftpdlib", "-i", LOOPBACK, "-p", str(port), "-d", directory,
        "-u", FTP_USER, "-P", FTP_PASSWORD,
    ], port, "pyftpdlib", (directory,))


def start_redis(case: Case) -> int:
    """redis-server on loopback, no persistence; returns its port."""
    return _start(case, redis_process(free_port()))


def start_memcached(case: Case) -> int:
    """memcached on loopback, TCP only; returns its port."""
    return _start(case, memcached_process(free_port()))


def start_smtp(case: Case) -> int:
    """aiosmtpd (its Debugging handler prints each message) on loopback."""
    return _start(case, smtp_process(free_port()))


def start_ftp(case: Case, files: dict[str, bytes] | None = None) -> int:
    """pyftpdlib on loopback, read-only, one user (FTP_USER, FTP_PASSWORD),
    serving a fresh directory holding ``files``."""
    return _start(case, ftp_process(free_port(), files))

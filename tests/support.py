"""Helpers for integration tests: real processes, real sockets, real reactor.

Everything here is meant for ``twisted.trial.unittest.TestCase`` tests (the
real reactor runs while a test runs) and is reusable by any test that needs:

* :class:`LineServer`: a real TCP line server on 127.0.0.1 that records every
  byte it receives per connection, and can answer each line (``reply``),
  answer slowly (``delay``), never answer, drop the connection after N lines,
  push unsolicited lines, and be stopped and started again on the same port.
* :class:`BridgeProcess`: the real ``bridge`` (or ``twistd``) process started
  with :mod:`subprocess`, its stdout and stderr captured to files that tests
  can read and that are printed when it stops (pytest shows them on failure).
* :class:`BridgeClient`: HTTP with treq through its own connection pool
  (never treq's global one), closed by :meth:`BridgeClient.close`.
* :class:`EventStream`: an incremental reader of ``GET /events``.
* :func:`wait_for`: polls a condition every 20 ms until a deadline, then
  fails with a clear message.  Tests never sleep to wait for something.
* :class:`BridgeTestCase`: a base class that runs one bridge per test class
  (started by its first test, stopped in ``tearDownClass``) against a fresh
  :class:`LineServer` per test, always on the same port.  Each test gets its
  own server and HTTP pool, so trial's per-test reactor-cleanliness checks
  pass while the expensive process start is paid once per class.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from inspect import isawaitable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from treq.client import HTTPClient
from twisted.internet import reactor as _global_reactor
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from tests.servers import unused_port

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
POLL_INTERVAL = 0.02
CRLF = b"\r\n"

reactor: Any = _global_reactor
T = TypeVar("T")

__all__ = [
    "CRLF",
    "LOOPBACK",
    "REPO",
    "BridgeClient",
    "BridgeProcess",
    "BridgeTestCase",
    "EventStream",
    "LineServer",
    "RawEventClient",
    "Reply",
    "SSEEvent",
    "ServerConnection",
    "concurrently",
    "parse_sse_block",
    "reactor",
    "unused_port",
    "wait_for",
]


# -- waiting ------------------------------------------------------------------------


async def wait_for(
    condition: Callable[[], Any],
    *,
    timeout: float = 5.0,
    what: str = "the condition",
    context: Callable[[], str] | None = None,
    interval: float = POLL_INTERVAL,
) -> Any:
    """Call ``condition`` every ``interval`` seconds until it returns a true
    value (which is returned), or fail with AssertionError after ``timeout``.

    ``condition`` may return an awaitable (e.g. an HTTP call); it may also
    raise AssertionError to give up early (e.g. "the process died").
    ``context`` adds diagnostics (a log, the bytes seen) to the failure.
    """
    deadline = reactor.seconds() + timeout
    while True:
        value = condition()
        if isawaitable(value):
            value = await value
        if value:
            return value
        if reactor.seconds() >= deadline:
            message = f"timed out after {timeout:g} s waiting for {what}"
            if context is not None:
                message += "\n" + context()
            raise AssertionError(message)
        await deferLater(reactor, interval, lambda: None)


async def concurrently(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run coroutines (or Deferreds) at the same time; their results in order.
    The first failure fails the whole (the others still run to the end)."""
    deferreds = [
        item if isinstance(item, Deferred) else Deferred.fromCoroutine(item)  # type: ignore[arg-type]
        for item in awaitables
    ]
    results: list[T] = await gatherResults(deferreds, consumeErrors=True)
    return results


# -- the upstream: a real line server -------------------------------------------------

ReplyValue = bytes | str | Sequence[bytes | str] | None
Replier = Callable[[bytes], ReplyValue | Awaitable[ReplyValue]]


def _as_lines(value: ReplyValue) -> list[bytes]:
    if value is None:
        return []
    if isinstance(value, (bytes, str)):
        value = [value]
    return [item.encode("utf-8") if isinstance(item, str) else item for item in value]


def _ignore_cancelled(failure: Failure) -> None:
    failure.trap(CancelledError)


class ServerConnection(Protocol):
    """One accepted connection.  Records everything; answers lines in order.

    ``received`` holds every byte received, ``lines`` the lines split from them
    (LF-terminated, a trailing CR dropped).  Replies are produced one line at a
    time in arrival order, even when slow, as a real sequential server would.
    """

    def __init__(self, server: LineServer) -> None:
        self.server = server
        self.received = bytearray()
        self.lines: list[bytes] = []
        self.replies_sent: list[bytes] = []
        self.open = False
        self.lost: Deferred[None] = Deferred()
        self._buffer = b""
        self._chain: Deferred[Any] = succeed(None)
        self._waiting: Deferred[Any] | None = None  # the reply or delay awaited now
        self._dropping = False

    def connectionMade(self) -> None:
        self.open = True
        self.server.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        pieces = (self._buffer + data).split(b"\n")
        self._buffer = pieces.pop()
        for line in pieces:
            if line.endswith(b"\r"):
                line = line[:-1]
            self.lines.append(line)
            if self._dropping:
                continue
            drop_after = self.server.drop_after
            if drop_after is not None and len(self.lines) >= drop_after:
                self._dropping = True
                self._chain.addCallback(lambda _: self._drop())
            else:
                self._chain.addCallback(self._answer, line)

    def _answer(self, _: object, line: bytes) -> Deferred[None] | None:
        if self.server.reply is None or not self.open:
            return None
        answer: Deferred[Any] = maybeDeferred(self.server.reply, line)
        self._waiting = answer
        answer.addCallback(self._pause)
        answer.addCallback(self._write_reply)
        answer.addErrback(_ignore_cancelled)
        return answer

    def _pause(self, value: ReplyValue) -> ReplyValue | Deferred[ReplyValue]:
        delay = self.server.delay
        if delay <= 0 or not self.open:
            return value
        self._waiting = deferLater(reactor, delay, lambda: value)
        return self._waiting

    def _write_reply(self, value: ReplyValue) -> None:
        lines = _as_lines(value)
        if lines and self.open:
            self.replies_sent.extend(lines)
            self.write_lines(lines)

    def _drop(self) -> None:
        if self.open and self.transport is not None:
            self.transport.loseConnection()

    def write_lines(self, lines: Iterable[bytes]) -> None:
        """Write lines (each followed by the server's delimiter) in one write."""
        delimiter = self.server.delimiter
        assert self.transport is not None
        self.transport.write(b"".join(line + delimiter for line in lines))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.open = False
        # A reply still being prepared (slow, held) is abandoned: no timer of
        # ours outlives the connection.
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()
        self.lost.callback(None)


class _ServerFactory(Factory):
    noisy = False

    def __init__(self, server: LineServer) -> None:
        self.server = server

    def buildProtocol(self, addr: Any) -> ServerConnection:
        return ServerConnection(self.server)


class LineServer:
    """A real TCP line server on 127.0.0.1 for the bridge to connect to.

    :param reply: ``line -> reply`` called for each received line, or None for
        a server that never answers.  The reply may be bytes/str (one line), a
        sequence of them (several lines), None (no answer) or an awaitable of
        those (answer when it fires; later lines wait their turn; it is
        cancelled if the connection closes first).  If it raises, that
        connection answers nothing more and trial reports the unhandled error.
    :param delay: seconds to wait before writing each reply (on the real
        reactor; it is the server's own pace, never something a test asserts).
    :param drop_after: close a connection when its Nth line arrives, without
        answering that line (the lines before it are answered first).
    :param delimiter: what ends each line the server writes.

    Behaviour attributes may be changed while the server runs.  ``start``,
    ``stop`` and ``start`` again reuse the same port (SO_REUSEADDR).
    """

    def __init__(
        self,
        reply: Replier | None = None,
        *,
        delay: float = 0.0,
        drop_after: int | None = None,
        delimiter: bytes = CRLF,
    ) -> None:
        self.reply = reply
        self.delay = delay
        self.drop_after = drop_after
        self.delimiter = delimiter
        self.port: int | None = None
        self.connections: list[ServerConnection] = []
        self._listening: IListeningPort | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` (for ``--upstream``)."""
        assert self.port is not None, "start the server first"
        return f"{LOOPBACK}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._listening is not None

    def start(self, port: int | None = None) -> int:
        """Listen on ``port`` (default: the previous port, else an ephemeral one)."""
        assert self._listening is None, "already listening"
        if port is None:
            port = self.port or 0
        self._listening = reactor.listenTCP(port, _ServerFactory(self), interface=LOOPBACK)
        address: Any = self._listening.getHost()
        self.port = int(address.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening and close every open connection (like a crash: at
        once, without flushing).  Returns once all of it is closed.  Idempotent."""
        waits: list[Deferred[Any]] = []
        if self._listening is not None:
            listening, self._listening = self._listening, None
            stopped = listening.stopListening()
            if stopped is not None:
                waits.append(stopped)
        for connection in self.connections:
            if connection.open and connection.transport is not None:
                connection.transport.abortConnection()  # type: ignore[attr-defined]
            waits.append(connection.lost)
        await DeferredList(waits)

    async def restart(self) -> None:
        """Stop, then listen again on the same port."""
        await self.stop()
        self.start(self.port)

    # -- what the test looks at / does ---------------------------------------------

    @property
    def open_connections(self) -> list[ServerConnection]:
        return [c for c in self.connections if c.open]

    @property
    def received(self) -> bytes:
        """Every byte received, on every connection, in connection order."""
        return b"".join(bytes(c.received) for c in self.connections)

    @property
    def lines(self) -> list[bytes]:
        """Every line received, on every connection, in connection order."""
        return [line for c in self.connections for line in c.lines]

    def push(self, *lines: bytes | str) -> int:
        """Write unsolicited lines to every open connection; returns how many
        connections got them."""
        encoded = _as_lines(list(lines))
        targets = self.open_connections
        for connection in targets:
            connection.write_lines(encoded)
        return len(targets)

    def describe(self) -> str:
        """What every connection received (for failure messages)."""
        rows = [
            f"  connection {i} ({'open' if c.open else 'closed'}): {bytes(c.received)[:2000]!r}"
            for i, c in enumerate(self.connections)
        ]
        return "line server received:\n" + ("\n".join(rows) if rows else "  (no connection)")

    async def wait_for_lines(self, count: int, timeout: float = 5.0) -> list[bytes]:
        """Wait until ``count`` lines arrived in total; returns all lines."""
        await wait_for(
            lambda: len(self.lines) >= count,
            timeout=timeout,
            what=f"{count} lines at the line server (has {len(self.lines)})",
            context=self.describe,
        )
        return self.lines

    def received_since(self, first: int) -> bytes:
        """The bytes received on connections ``first`` and later."""
        return b"".join(bytes(c.received) for c in self.connections[first:])

    async def wait_for_bytes(
        self, expected: bytes, *, first: int = 0, timeout: float = 5.0
    ) -> bytes:
        """Wait until at least ``len(expected)`` bytes arrived on connections
        ``first`` and later; returns those bytes (the caller asserts equality,
        so that a mismatch shows both sides)."""
        await wait_for(
            lambda: len(self.received_since(first)) >= len(expected),
            timeout=timeout,
            what=f"{len(expected)} bytes at the line server",
            context=self.describe,
        )
        return self.received_since(first)


# -- the system under test: a real process --------------------------------------------


_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/")


class BridgeProcess:
    """A real bridge process; stdout and stderr go to files in a temp dir.

    Its environment is the test's, without any ``BRIDGE_*`` variable, plus
    ``env``.  Use :meth:`bridge` or :meth:`twistd` to build one.
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self._dir = tempfile.mkdtemp(prefix="bridge-test-")
        self.stdout_path = os.path.join(self._dir, "stdout")
        self.stderr_path = os.path.join(self._dir, "stderr")
        environment = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        environment["PYTHONUNBUFFERED"] = "1"
        environment.update(env or {})
        self.port: int | None = None
        self._stopped = False
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=environment, cwd=REPO,
            )

    @classmethod
    def bridge(cls, *args: str, env: Mapping[str, str] | None = None) -> BridgeProcess:
        """``python -m bridge ARGS``."""
        return cls([sys.executable, "-m", "bridge", *args], env)

    @classmethod
    def twistd(cls, tac: str | os.PathLike[str], env: Mapping[str, str]) -> BridgeProcess:
        """``twistd -n --pidfile= -y TAC`` with this interpreter."""
        run = "from twisted.scripts.twistd import run; run()"
        return cls([sys.executable, "-c", run, "-n", "--pidfile=", "-y", os.fspath(tac)], env)

    # -- output -----------------------------------------------------------------

    def _read(self, path: str) -> str:
        try:
            with open(path, "rb") as handle:
                return handle.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stdout(self) -> str:
        return self._read(self.stdout_path)

    def stderr(self) -> str:
        return self._read(self.stderr_path)

    def describe(self, since: int = 0) -> str:
        """Exit status and output (stdout from offset ``since``), for failures."""
        status = self.process.poll()
        state = "running" if status is None else f"exited with status {status}"
        return (
            f"--- {' '.join(self.argv[1:])}: {state}\n"
            f"--- stdout:\n{self.stdout()[since:]}--- stderr:\n{self.stderr()}---"
        )

    # -- waiting ------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.port is not None, "wait_listening() first"
        return f"http://{LOOPBACK}:{self.port}"

    async def wait_listening(self, timeout: float = 15.0) -> int:
        """Wait for the ``listening on http://127.0.0.1:PORT/`` log line."""

        def listening() -> int | None:
            found = _LISTENING.search(self.stdout())
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                raise AssertionError("the process exited before listening\n" + self.describe())
            return None

        self.port = await wait_for(
            listening, timeout=timeout, what="the bridge to listen", context=self.describe
        )
        return self.port

    async def wait_exit(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit; returns its status."""
        await wait_for(
            lambda: self.process.poll() is not None,
            timeout=timeout, what="the process to exit", context=self.describe,
        )
        return self.process.returncode

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    # -- stopping -----------------------------------------------------------------

    async def stop(self, timeout: float = 5.0) -> int:
        """Terminate (SIGTERM), kill after ``timeout`` s, clean up.  Idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                await wait_for(lambda: self.process.poll() is not None, timeout=timeout,
                               what="the process to exit after SIGTERM")
            except AssertionError:
                self.process.kill()
                await wait_for(lambda: self.process.poll() is not None, timeout=timeout,
                               what="the process to exit after SIGKILL")
        self._finish()
        return self.process.returncode

    def stop_now(self, timeout: float = 5.0) -> int:
        """:meth:`stop` for code where no reactor runs (``tearDownClass``):
        blocks on the process's exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._finish()
        return self.process.returncode

    def _finish(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # Captured by pytest and shown only when a test failed.
        print(self.describe())
        shutil.rmtree(self._dir, ignore_errors=True)


# -- HTTP -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A complete HTTP response."""

    status: int
    headers: Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


@dataclass(frozen=True)
class SSEEvent:
    """One server-sent event (``event:``/``id:``/``data:`` fields)."""

    kind: str
    id: str | None
    data: str


def parse_sse_block(block: bytes) -> tuple[SSEEvent | None, list[str]]:
    """One ``\\n\\n``-terminated block of an event stream (without the
    terminator): its event, if it has fields, and its comments.  Several
    ``data:`` fields are joined with LF, as EventSource does."""
    fields: dict[str, str] = {}
    data: list[str] = []
    comments: list[str] = []
    for line in block.decode("utf-8").split("\n"):
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    if not fields and not data:
        return None, comments
    return SSEEvent(fields.get("event", "message"), fields.get("id"), "\n".join(data)), comments


class EventStream(Protocol):
    """Reads a ``text/event-stream`` body incrementally, as it arrives.

    ``events`` grows as events arrive; comments (``: ...``) go to ``comments``.
    ``done`` fires when the body ends or the connection closes (the reason is
    then in ``end_reason``).  :meth:`close` stops reading and closes the connection.
    """

    def __init__(self, status: int) -> None:
        self.status = status
        self.raw = bytearray()
        self.events: list[SSEEvent] = []
        self.comments: list[str] = []
        self.done: Deferred[None] = Deferred()
        self.end_reason: Failure | None = None
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        blocks = (self._buffer + data).split(b"\n\n")
        self._buffer = blocks.pop()
        for block in blocks:
            event, comments = parse_sse_block(block)
            self.comments.extend(comments)
            if event is not None:
                self.events.append(event)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.end_reason = reason
        if not self.done.called:
            self.done.callback(None)

    def data(self, kind: str = "unsolicited") -> list[str]:
        """The ``data`` of every event of ``kind`` so far."""
        return [event.data for event in self.events if event.kind == kind]

    @property
    def closed(self) -> bool:
        return self.done.called

    async def close(self) -> None:
        """Stop reading and close the connection; returns once it is closed."""
        if not self.done.called and self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]
        await self.done


class RawEventClient:
    """``GET /events`` over a plain socket, as bytes, with nothing in between.

    The socket is non-blocking: :meth:`poll` takes whatever has arrived,
    de-chunks it and parses the events, so a test polls it with
    :func:`wait_for` while the reactor (and the test's line server) runs.
    ``ended``: the chunked body ended properly; ``eof``: the bridge closed
    the connection (FIN); ``reset``: the connection was reset (RST).
    """

    def __init__(
        self, port: int, last_event_id: str | None = None, receive_buffer: int | None = None
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect((LOOPBACK, port))
        header = "" if last_event_id is None else f"Last-Event-ID: {last_event_id}\r\n"
        self.sock.sendall(
            f"GET /events HTTP/1.1\r\nHost: {LOOPBACK}\r\n{header}\r\n".encode())
        self.sock.setblocking(False)
        self.head: bytes | None = None
        self.events: list[SSEEvent] = []
        self.comments: list[str] = []
        self.received = 0
        self.ended = self.eof = self.reset = False
        self._wire = bytearray()  # received, not yet de-chunked
        self._body = bytearray()  # de-chunked, not yet parsed

    def poll(self) -> int:
        """Read what has arrived (never blocks); returns the events so far."""
        while not (self.eof or self.reset):
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            except ConnectionResetError:
                self.reset = True
                break
            if not data:
                self.eof = True
                break
            self.received += len(data)
            self._wire += data
        self._dechunk()
        self._parse()
        return len(self.events)

    def _dechunk(self) -> None:
        wire = self._wire
        position = 0
        if self.head is None:
            end = wire.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head, position = bytes(wire[:end]), end + 4
        while not self.ended:
            line_end = wire.find(b"\r\n", position)
            if line_end < 0:
                break
            size = int(wire[position:line_end], 16)
            start = line_end + 2
            if len(wire) < start + size + 2:
                break
            if size == 0:
                self.ended = True
            self._body += wire[start:start + size]
            position = start + size + 2
        del wire[:position]

    def _parse(self) -> None:
        body = self._body
        position = 0
        while (end := body.find(b"\n\n", position)) >= 0:
            event, comments = parse_sse_block(bytes(body[position:end]))
            self.comments.extend(comments)
            if event is not None:
                self.events.append(event)
            position = end + 2
        del body[:position]

    def data(self, kind: str = "unsolicited") -> list[str]:
        return [event.data for event in self.events if event.kind == kind]

    def describe(self) -> str:
        last = self.events[-1] if self.events else None
        return (f"raw /events client: {self.received} bytes, {len(self.events)} events "
                f"(last {last}), ended={self.ended} eof={self.eof} reset={self.reset}")

    def close(self) -> None:
        self.sock.close()


class BridgeClient:
    """treq through a private connection pool; :meth:`close` it in cleanup."""

    def __init__(self, base_url: str, *, persistent: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.pool = HTTPConnectionPool(reactor, persistent=persistent)
        # Keep every connection of a burst of concurrent requests in the pool,
        # so that close() waits until each one is closed (a connection the
        # pool closes itself would still be closing when trial checks).
        self.pool.maxPersistentPerHost = 128
        self.pool.retryAutomatically = False
        self.treq = HTTPClient(Agent(reactor, pool=self.pool))
        self._streams: list[EventStream] = []

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        data = body.encode("utf-8") if isinstance(body, str) else body
        response = await self.treq.request(
            method, self.base_url + path, data=data,
            headers=Headers({k: [v] for k, v in (headers or {}).items()}),
        )
        content = await response.content()
        return Reply(response.code, response.headers, content)

    async def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return await self.request("GET", path, headers=headers)

    async def post(
        self, path: str, body: bytes | str, headers: Mapping[str, str] | None = None
    ) -> Reply:
        return await self.request("POST", path, body, headers)

    async def events(
        self, path: str = "/events", headers: Mapping[str, str] | None = None
    ) -> EventStream:
        """Open a ``GET /events`` stream; it reads until closed."""
        response = await self.treq.get(
            self.base_url + path, unbuffered=True,
            headers=Headers({k: [v] for k, v in (headers or {}).items()}),
        )
        stream = EventStream(status=response.code)
        self._streams.append(stream)
        response.deliverBody(stream)
        return stream

    async def close(self) -> None:
        """Close open event streams, then every pooled connection."""
        for stream in self._streams:
            await stream.close()
        await self.pool.closeCachedConnections()


# -- the shared-bridge test case --------------------------------------------------------


class BridgeTestCase(TestCase):
    """One real bridge per test class, a fresh :class:`LineServer` per test.

    The bridge is started by the class's first test with ``bridge_args`` and
    ``--upstream 127.0.0.1:<upstream_port>`` and stopped in ``tearDownClass``
    (pytest calls it); every test that calls
    :meth:`start_upstream` gets a new line server on that same port, and the
    bridge, which reconnects quickly (``--backoff-initial 0.05
    --backoff-max 0.2``), connects to it.  The server is stopped after the
    test, which leaves the bridge reconnecting until the next test's server.

    Per-test bridges (different flags, signals, exit codes) are started with
    :meth:`start_bridge` and stopped in cleanup.
    """

    timeout = 30
    #: Flags for the class's bridge (the class attribute of subclasses).
    bridge_args: ClassVar[tuple[str, ...]] = ()
    #: Connections the class's bridge keeps (``--pool-size``).
    pool_size: ClassVar[int] = 1
    #: Whether this class has a shared bridge at all.
    shared_bridge: ClassVar[bool] = True

    FAST_RECONNECT: ClassVar[tuple[str, ...]] = (
        "--backoff-initial", "0.05", "--backoff-max", "0.2",
    )

    upstream_port: ClassVar[int]
    _shared: ClassVar[BridgeProcess | None] = None

    @classmethod
    def class_bridge(cls) -> BridgeProcess:
        """The class's bridge, started on first use."""
        if cls.__dict__.get("_shared") is None:
            cls.upstream_port = cls.prepare_upstream()
            bridge = BridgeProcess.bridge(
                "--listen", f"{LOOPBACK}:0",
                "--upstream", f"{LOOPBACK}:{cls.upstream_port}",
                "--pool-size", str(cls.pool_size),
                *cls.FAST_RECONNECT,
                *cls.bridge_args,
            )
            cls._shared = bridge
            # A safety net for runners that never call tearDownClass.
            atexit.register(bridge.stop_now)
        assert cls._shared is not None
        return cls._shared

    @classmethod
    def prepare_upstream(cls) -> int:
        """The class's upstream port, called once before its bridge starts.
        Here a free port for the per-test line servers; a subclass may start a
        real server there (and stop it in ``tearDownClass``)."""
        return unused_port()

    @classmethod
    def tearDownClass(cls) -> None:
        bridge = cls.__dict__.get("_shared")
        if bridge is not None:
            cls._shared = None
            bridge.stop_now()
            atexit.unregister(bridge.stop_now)
        super().tearDownClass()

    async def setUp(self) -> None:  # type: ignore[override]
        self.bridge: BridgeProcess | None = None
        self.http: BridgeClient | None = None
        if self.shared_bridge:
            shared = self.class_bridge()
            await shared.wait_listening()
            self.bridge = shared
            since = len(shared.stdout())
            # Shown by pytest if this test fails: the class bridge's log of this test.
            self.addCleanup(lambda: print(shared.describe(since)))
            self.http = self.client(shared)

    def client(self, bridge: BridgeProcess, *, persistent: bool = True) -> BridgeClient:
        """An HTTP client for ``bridge``, closed in cleanup."""
        client = BridgeClient(bridge.url, persistent=persistent)
        self.addCleanup(client.close)
        return client

    async def start_bridge(self, *args: str, env: Mapping[str, str] | None = None) -> BridgeProcess:
        """Start ``python -m bridge ARGS`` for this test only: see :meth:`use`."""
        return await self.use(BridgeProcess.bridge(*args, env=env))

    async def use(self, process: BridgeProcess) -> BridgeProcess:
        """Stop ``process`` in cleanup, wait until it listens, and make it the
        bridge that ``self.http`` and the wait helpers talk to."""
        self.addCleanup(process.stop)
        await process.wait_listening()
        self.bridge = process
        self.http = self.client(process)
        return process

    async def start_upstream(
        self,
        reply: Replier | None = None,
        *,
        connected: int | None = None,
        **behaviour: Any,
    ) -> LineServer:
        """Start this test's line server on the class's upstream port and wait
        until the shared bridge has ``connected`` (default: all) members
        connected to it and says it is ready."""
        server = LineServer(reply, **behaviour)
        server.start(self.upstream_port)
        self.addCleanup(server.stop)
        await self.wait_connected(server, self.pool_size if connected is None else connected)
        return server

    async def wait_connected(self, server: LineServer, count: int, timeout: float = 10.0) -> None:
        """Wait until ``server`` has ``count`` open connections and /readyz
        reports that many connected members."""
        assert self.http is not None and self.bridge is not None
        http, bridge = self.http, self.bridge

        async def connected() -> bool:
            if len(server.open_connections) < count:
                return False
            ready = await http.get("/readyz")
            return ready.status == 200 and ready.json()["connected"] == count

        await wait_for(
            connected, timeout=timeout, what=f"{count} bridge connection(s) to the line server",
            context=lambda: server.describe() + "\n" + bridge.describe(),
        )

    async def wait_status(self, code: int, path: str = "/readyz", timeout: float = 5.0) -> Reply:
        """Poll ``path`` until it answers ``code``; returns that answer."""
        assert self.http is not None and self.bridge is not None
        http, bridge = self.http, self.bridge
        seen: list[Reply] = []

        async def answered() -> Reply | None:
            reply = await http.get(path)
            seen[:] = [reply]
            return reply if reply.status == code else None

        reply: Reply = await wait_for(
            answered, timeout=timeout, what=f"GET {path} to answer {code}",
            context=lambda: f"last answer: {seen[-1] if seen else None}\n{bridge.describe()}",
        )
        return reply


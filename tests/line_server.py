"""A real TCP line server on 127.0.0.1 for the real bridge process to connect to.

:class:`LineServer` records every byte it receives per connection
(:class:`ServerConnection`), and can answer each line (``reply``), answer
slowly (``delay``), never answer, drop the connection after N lines, push
unsolicited lines, and be stopped and started again on the same port.  It
runs on the real reactor: for trial ``TestCase`` tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from tests.ports import LOOPBACK
from tests.waiting import wait_for

CRLF = b"\r\n"
reactor: Any = _reactor

__all__ = ["CRLF", "LineServer", "Replier", "ReplyValue", "ServerConnection"]



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

"""Helpers for the fault-injection suite (``tests/test_faults.py``).

They sit on top of the real-process helpers (``LineServer``, ``BridgeProcess``,
``BridgeClient``, ``wait_for``) and add what only the fault tests need:

* :func:`bounded`: an awaitable with a deadline, so that a hang becomes a
  recorded failure instead of a test timeout;
* :class:`RawConnection` and :func:`open_raw_connections`: plain TCP clients
  that send what the test says (nothing, half a request) and record what they
  receive and how the connection ended;
* :func:`proc_status_kb`: a process's memory figures from ``/proc``;
* :func:`set_reading`: make one connection of a ``LineServer`` stop reading
  (the socket stays open: the peer's writes pile up) and read again;
* :class:`Load`: concurrent HTTP clients that use ``/send`` and ``/request``
  with lines carrying unique ids, can be paused at a quiet point and tag every
  call with the phase of the test it was issued in.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from tests.http_client import BridgeClient, reactor
from tests.line_server import ServerConnection
from tests.ports import LOOPBACK
from tests.waiting import wait_for

T = TypeVar("T")

__all__ = [
    "Call",
    "Load",
    "RawConnection",
    "bounded",
    "open_raw_connections",
    "proc_status_kb",
    "set_reading",
]


async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
    """Await ``awaitable`` (a coroutine or Deferred) for at most ``seconds``;
    after that it is cancelled and :class:`twisted.internet.defer.TimeoutError`
    is raised."""
    if isinstance(awaitable, Deferred):
        deferred: Deferred[T] = awaitable
    else:
        deferred = Deferred.fromCoroutine(awaitable)  # type: ignore[arg-type]
    deferred.addTimeout(seconds, reactor)
    return await deferred


def proc_status_kb(pid: int, field_name: str) -> int:
    """A ``kB`` figure of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``...)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            name, _, value = line.partition(":")
            if name == field_name:
                number, unit = value.split()
                assert unit == "kB", line
                return int(number)
    raise AssertionError(f"no {field_name} in /proc/{pid}/status")


def set_reading(connection: ServerConnection, reading: bool) -> None:
    """Stop reading from ``connection`` (its socket stays open, so what the
    peer writes piles up in the kernel buffers), or read again."""
    transport: Any = connection.transport
    assert transport is not None
    if reading:
        transport.resumeProducing()
    else:
        transport.pauseProducing()


# -- raw TCP clients --------------------------------------------------------------------


class RawConnection(Protocol):
    """A TCP client that records every byte received and how it ended."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.closed_at: float | None = None  # reactor.seconds() when it closed

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.reason = reason
        self.closed_at = reactor.seconds()
        self.closed.callback(None)

    @property
    def is_closed(self) -> bool:
        return self.closed.called

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def close(self) -> None:
        """Close at once (if still open) and wait until it is closed."""
        if not self.closed.called and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        await self.closed


async def open_raw_connections(
    port: int, count: int, *, batch: int = 25, timeout: float = 10.0
) -> list[RawConnection]:
    """Open ``count`` connections to ``LOOPBACK:port``, ``batch`` at a time
    (each batch connected before the next starts, so a listen backlog of 50
    never overflows and no SYN has to be retransmitted)."""
    endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, port, timeout=timeout)
    connections: list[RawConnection] = []
    while len(connections) < count:
        size = min(batch, count - len(connections))
        attempts = [connectProtocol(endpoint, RawConnection()) for _ in range(size)]
        opened: list[RawConnection] = await bounded(
            gatherResults(attempts, consumeErrors=True), timeout
        )
        connections.extend(opened)
    return connections


# -- concurrent HTTP clients with unique ids ---------------------------------------------


@dataclass
class Call:
    """One HTTP call made by a :class:`Load` worker."""

    worker: int
    seq: int
    kind: str  # "send" or "request"
    lines: list[bytes]
    tag: tuple[str, int]
    status: int | None = None
    document: Any = None
    error: str | None = None

    @property
    def name(self) -> str:
        return f"{self.kind} w{self.worker}#{self.seq} {self.tag} -> {self.status}"


@dataclass
class Load:
    """``workers`` concurrent clients, each calling ``/send`` and ``/request``
    one after the other (so each worker's calls are ordered) until stopped.

    Every line is unique: ``s<worker>.<seq>.<n>`` for ``/send`` and
    ``q<worker>.<seq>.<n>`` for ``/request`` (a test server answers only the
    ``q`` lines).  Each call is recorded with the ``tag`` current when it was
    issued.  :meth:`pause` lets every worker finish its call and wait;
    a worker that got ``max_503`` answers 503 under one tag waits for the next
    tag, which keeps request counts modest while the upstream is down.
    """

    http: BridgeClient
    workers: int
    tag: tuple[str, int] = ("start", 0)
    call_timeout: float = 10.0
    max_calls_per_worker: int = 400
    max_503: int = 8
    calls: list[Call] = field(default_factory=list)
    idle: int = 0
    _paused: bool = False
    _stopped: bool = False
    _wakeups: list[Deferred[None]] = field(default_factory=list)
    _running: list[Deferred[None]] = field(default_factory=list)

    def start(self) -> None:
        self._running = [Deferred.fromCoroutine(self._work(n)) for n in range(self.workers)]

    def retag(self, tag: tuple[str, int]) -> None:
        """Tag the calls issued from now on; wakes the workers parked after 503s."""
        self.tag = tag
        self._wake()

    def resume(self) -> None:
        self._paused = False
        self._wake()

    async def pause(self, timeout: float = 15.0) -> None:
        """Return once every worker has finished its call and waits."""
        self._paused = True
        await wait_for(lambda: self.idle == self.workers, timeout=timeout,
                       what=f"{self.workers} workers to pause (idle: {self.idle})")

    async def stop(self) -> None:
        """Stop every worker and wait until all have ended.  Idempotent."""
        self._stopped = True
        self._wake()
        if self._running:
            await gatherResults(self._running, consumeErrors=True)

    def tagged(self, tag: tuple[str, int]) -> list[Call]:
        return [call for call in self.calls if call.tag == tag]

    def saw(self, tag: tuple[str, int], status: int) -> bool:
        """Whether a call tagged ``tag`` was answered ``status``."""
        return any(call.status == status for call in self.tagged(tag))

    def answered(self, tag: tuple[str, int]) -> int:
        return sum(1 for call in self.tagged(tag) if call.status is not None)

    async def wait_answered(self, tag: tuple[str, int], count: int, timeout: float = 15.0) -> None:
        await wait_for(lambda: self.answered(tag) >= count, timeout=timeout,
                       what=f"{count} answered calls tagged {tag}")

    def _wake(self) -> None:
        wakeups, self._wakeups = self._wakeups, []
        for wakeup in wakeups:
            wakeup.callback(None)

    async def _wait_for_wakeup(self) -> None:
        wakeup: Deferred[None] = Deferred()
        self._wakeups.append(wakeup)
        self.idle += 1
        try:
            await wakeup
        finally:
            self.idle -= 1

    async def _work(self, worker: int) -> None:
        unavailable: dict[tuple[str, int], int] = {}
        for seq in range(self.max_calls_per_worker):
            while not self._stopped and (
                self._paused or unavailable.get(self.tag, 0) >= self.max_503
            ):
                await self._wait_for_wakeup()
            if self._stopped:
                return
            kind = "request" if (worker + seq) % 2 else "send"
            prefix = "q" if kind == "request" else "s"
            lines = [f"{prefix}{worker}.{seq}.{n}".encode("ascii")
                     for n in range(1 + (worker + seq) % 3)]
            call = Call(worker, seq, kind, lines, self.tag)
            self.calls.append(call)
            body = b"".join(line + b"\n" for line in lines)
            try:
                reply = await bounded(self.http.post("/" + kind, body), self.call_timeout)
            except Exception as error:  # recorded; the test asserts there is none
                call.error = repr(error)
                continue
            call.status = reply.status
            try:
                call.document = json.loads(reply.body)
            except ValueError:
                call.document = reply.body
            if reply.status == 503:
                unavailable[call.tag] = unavailable.get(call.tag, 0) + 1


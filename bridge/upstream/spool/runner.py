"""Where the spool's blocking work runs: one writer thread, or inline in tests.

A runner takes a function and returns a Deferred of its result, fired on
the reactor thread.  The spool hands it one job at a time, so one thread is
all it needs; a test passes :func:`inline` and steps everything synchronously.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Generic, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

T = TypeVar("T")
Item = TypeVar("Item")
Runner = Callable[[Callable[[], Any]], "Deferred[Any]"]


def inline(work: Callable[[], T]) -> Deferred[T]:
    """Run ``work`` now, on the calling thread (tests)."""
    try:
        return succeed(work())
    except BaseException:
        return fail()


class _Worker(Generic[Item]):
    """One daemon thread handling queued items in order until stopped."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._items: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Handle what is queued, then end the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._items.put(None)
            thread.join()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def _put(self, item: Item) -> None:
        self._items.put(item)

    def _run(self) -> None:
        while (item := self._items.get()) is not None:
            self._handle(item)

    def _handle(self, item: Item) -> None:
        raise NotImplementedError


class WriterThread(_Worker[tuple[Callable[[], Any], "Deferred[Any]"]]):
    """One thread running work in order; each result fires its Deferred on
    the reactor thread.  Stop it once the spool's last job has finished.

    Deliberately lean (a SimpleQueue and one callFromThread per job, no
    thread pool): every time this thread takes the GIL back from a busy
    reactor can cost up to the interpreter's switch interval, so a job
    takes it as few times as it can."""

    def __init__(self, reactor: Any, name: str = "spool-writer") -> None:
        super().__init__(name)
        self._reactor = reactor

    def __call__(self, work: Callable[[], T]) -> Deferred[T]:
        done: Deferred[T] = Deferred()
        self._put((work, done))
        return done

    def _handle(self, item: tuple[Callable[[], Any], Deferred[Any]]) -> None:
        work, done = item
        try:
            result = work()
        except BaseException:
            self._reactor.callFromThread(done.errback, Failure())
        else:
            self._reactor.callFromThread(done.callback, result)


class Reclaimer(_Worker[str]):
    """A thread of its own that deletes spent segment files.

    Unlinking a segment of tens of megabytes takes ext4 tens of milliseconds
    (measured: 14 ms for 16 MiB on a quiet machine, 45-50 ms under load); on
    the writer thread every append queued behind it would wait that long.  A
    file left behind (a failed unlink, a crash) holds only retired records:
    the next open finds it spent and deletes it.
    """

    def __init__(self, name: str = "spool-reclaim") -> None:
        super().__init__(name)

    def remove(self, path: str) -> None:
        """Delete ``path`` soon; from any thread.  At once when not running."""
        if self.running:
            self._put(path)
        else:
            _unlink(path)

    def _handle(self, item: str) -> None:
        _unlink(item)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass  # left for the next open, which finds it spent

"""Where the spool's blocking work runs: one writer thread, or inline in tests.

A runner takes a function and returns a Deferred of its result, fired on
the reactor thread.  The spool hands it one job at a time, so one thread is
all it needs; a test passes :func:`inline` and steps everything synchronously.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")
Runner = Callable[[Callable[[], Any]], "Deferred[Any]"]


def inline(work: Callable[[], T]) -> Deferred[T]:
    """Run ``work`` now, on the calling thread (tests)."""
    try:
        return succeed(work())
    except BaseException:
        return fail()


class WriterThread:
    """A one-thread pool whose Deferreds fire on the reactor thread."""

    def __init__(self, reactor: Any, name: str = "spool-writer") -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        """Join the thread; call once the spool's last job has finished."""
        self._pool.stop()

    def __call__(self, work: Callable[[], T]) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, work)

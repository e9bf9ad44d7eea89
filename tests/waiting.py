"""Waiting for a condition: poll it with a deadline, never sleep on a guess.

Two worlds, one rule:

* :func:`wait_for` for tests on the real reactor (trial's ``TestCase``):
  ``await wait_for(...)`` lets the reactor run between polls, and the
  condition may return an awaitable (an HTTP call, say).
* :func:`wait_until` for plain blocking tests (``unittest.TestCase``,
  ``setUpClass``): it sleeps between polls, so nothing else of the test runs
  meanwhile.

Both poll every :data:`POLL_INTERVAL` seconds and fail alike, with an
AssertionError that says what was awaited and for how long, plus
``context()`` (a log, the bytes seen) when given.  A condition may raise
AssertionError itself to give up early ("the process died").

:func:`concurrently` awaits several things at once (reactor world).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from inspect import isawaitable
from typing import Any, TypeVar

T = TypeVar("T")

POLL_INTERVAL = 0.02
#: The default deadline of the blocking helper (processes starting up, servers
#: binding): generous, since a slow machine must not fail a correct test.
DEADLINE = 30.0

__all__ = ["DEADLINE", "POLL_INTERVAL", "concurrently", "wait_for", "wait_until"]


class _Deadline:
    """When to give up, and the message to give up with."""

    def __init__(self, now: Callable[[], float], timeout: float, what: str,
                 context: Callable[[], str] | None) -> None:
        self._now = now
        self._at = now() + timeout
        self._timeout = timeout
        self._what = what
        self._context = context

    def check(self) -> None:
        """Raise AssertionError once the deadline has passed."""
        if self._now() < self._at:
            return
        message = f"timed out after {self._timeout:g} s waiting for {self._what}"
        if self._context is not None:
            message += "\n" + self._context()
        raise AssertionError(message)


async def wait_for(
    condition: Callable[[], Any],
    what: str = "the condition",
    *,
    timeout: float = 5.0,
    context: Callable[[], str] | None = None,
    interval: float = POLL_INTERVAL,
) -> Any:
    """Call ``condition`` every ``interval`` seconds of the running reactor
    until it returns a true value (returned; an awaitable is awaited first),
    or fail with AssertionError after ``timeout`` seconds."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    clock: Any = reactor
    deadline = _Deadline(clock.seconds, timeout, what, context)
    while True:
        value = condition()
        if isawaitable(value):
            value = await value
        if value:
            return value
        deadline.check()
        await deferLater(clock, interval, lambda: None)


def wait_until(
    condition: Callable[[], T | None],
    what: str = "the condition",
    *,
    timeout: float = DEADLINE,
    context: Callable[[], str] | None = None,
    interval: float = POLL_INTERVAL,
) -> T:
    """Call ``condition`` every ``interval`` seconds, blocking, until it
    returns a true value (returned), or fail with AssertionError after
    ``timeout`` seconds.  For tests where no reactor runs."""
    deadline = _Deadline(time.monotonic, timeout, what, context)
    while True:
        value = condition()
        if value:
            return value
        deadline.check()
        time.sleep(interval)  # the polling interval, not a synchronisation


async def concurrently(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run coroutines (or Deferreds) at the same time; their results in order.
    The first failure fails the whole (the others still run to the end)."""
    from twisted.internet.defer import Deferred, gatherResults

    deferreds = [
        item if isinstance(item, Deferred) else Deferred.fromCoroutine(item)  # type: ignore[arg-type]
        for item in awaitables
    ]
    results: list[T] = await gatherResults(deferreds, consumeErrors=True)
    return results

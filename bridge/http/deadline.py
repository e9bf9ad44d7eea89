"""The request deadline (slowloris guard) and its 408.

A connection must deliver each whole request within ``request_timeout``
seconds of becoming idle (opened, or its previous answer written).  An idle
timeout reset by every byte would let a client trickling one byte at a time
hold a connection forever.  One timer per connection re-arms itself lazily,
rather than a new timer per request.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from bridge.http.limits import ClientError

ABORT_AFTER = 1.0  # seconds a closing client that does not read may keep its socket


def timed_out() -> ClientError:
    return ClientError(408, "request_timeout", "the request was not received in time")


class Deadline:
    """Calls ``expired`` once the connection has been idle for ``timeout`` s."""

    def __init__(self, clock: IReactorTime, timeout: float, expired: Callable[[], None]) -> None:
        self._clock = clock
        self._timeout = timeout
        self._expired = expired
        self._since: float | None = clock.seconds()
        self._call: IDelayedCall | None = clock.callLater(timeout, self._check)

    def idle(self) -> None:
        """Waiting for a request from now on."""
        self._since = self._clock.seconds()

    def busy(self) -> None:
        """A request is being answered: no deadline until :meth:`idle`."""
        self._since = None

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _check(self) -> None:
        self._call = None
        if self._since is None:
            self._call = self._clock.callLater(self._timeout, self._check)
            return
        left = self._since + self._timeout - self._clock.seconds()
        if left > 0:
            self._call = self._clock.callLater(left, self._check)
            return
        self._expired()

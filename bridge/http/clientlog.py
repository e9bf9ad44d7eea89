"""Refused requests in the log: one line each, a few per second at most.

Anyone can send malformed HTTP as fast as they like; the log must not grow
with it.  Lines past the budget are only counted (``suppressed``, exported
as ``bridge_http_client_errors_suppressed``).  Never a traceback: a client's
mistake is not the bridge's failure.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bridge.errors import BridgeError

LOG = Logger(namespace="bridge.http.clients")
PER_SECOND = 3


class ClientErrorLog:
    """Logs refusals within a budget of ``per_second`` lines a second."""

    def __init__(self, clock: IReactorTime, per_second: int = PER_SECOND) -> None:
        self._clock = clock
        self._per_second = per_second
        self._second = -1
        self._logged = 0
        self.suppressed = 0

    def refused(self, request: Any, error: BridgeError) -> None:
        second = int(self._clock.seconds())
        if second != self._second:
            self._second, self._logged = second, 0
        if self._logged >= self._per_second:
            self.suppressed += 1
            return
        self._logged += 1
        address = request.getClientAddress()
        LOG.info(
            '{client} "{method} {uri}" refused: {status} {code}: {why}',
            client=getattr(address, "host", "-"),
            method=request.method.decode("latin-1") or "-",
            uri=request.uri[:200].decode("latin-1") or "-",
            status=error.status, code=error.code, why=error.message,
        )

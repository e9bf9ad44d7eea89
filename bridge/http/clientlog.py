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
from bridge.logs import LogBudget

LOG = Logger(namespace="bridge.http.clients")
PER_SECOND = 3


class ClientErrorLog:
    """Logs refusals within a budget of ``per_second`` lines a second."""

    def __init__(self, clock: IReactorTime, per_second: int = PER_SECOND) -> None:
        self._budget = LogBudget(clock, per_second)

    @property
    def suppressed(self) -> int:
        """Refusals not logged (over the budget)."""
        return self._budget.suppressed

    def refused(self, request: Any, error: BridgeError) -> None:
        if not self._budget.allow():
            return
        address = request.getClientAddress()
        LOG.info(
            '{client} "{method} {uri}" refused: {status} {code}: {why}',
            client=getattr(address, "host", "-"),
            method=request.method.decode("latin-1") or "-",
            uri=request.uri[:200].decode("latin-1") or "-",
            status=error.status, code=error.code, why=error.message,
        )

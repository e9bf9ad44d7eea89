"""The HTTP server's factory: one :class:`~bridge.http.channel.Channel` per
connection, the settings they share, the access log and request counting."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.web.http import datetimeToString

from bridge.errors import BridgeError
from bridge.http.channel import Channel
from bridge.http.clientlog import ClientErrorLog
from bridge.http.routes import RouteTable

# Module level on purpose: a Logger reached through a class or an instance is
# rebound (Logger.__get__) to the namespace of that class.
ACCESS_LOG = Logger(namespace="bridge.access")

Counter = Callable[[str, int, "float | None"], None]


class BridgeSite(ServerFactory):
    """Builds the HTTP channels of one bridge.

    ``gate`` renders each request once its route is decided (see
    :class:`bridge.http.gate.Gate`); ``on_request(label, code, seconds)`` is
    told about every answer, refusals included.
    """

    noisy = False

    def __init__(
        self,
        gate: Any,
        max_body_bytes: int,
        reactor: IReactorTime,
        *,
        request_timeout: float = 30.0,
        access_log: bool = False,
        on_request: Counter | None = None,
        client_errors: ClientErrorLog | None = None,
        routes: RouteTable | None = None,
    ) -> None:
        self.gate = gate
        self.max_body_bytes = max_body_bytes
        self.reactor = reactor
        self.request_timeout = request_timeout
        self.access_log = access_log
        self.routes = routes or RouteTable()
        self.client_errors = client_errors or ClientErrorLog(reactor)
        self._on_request = on_request
        self._date_second = -1
        self._date = b""
        self._date_line = b""

    def configure(self, max_body_bytes: int, request_timeout: float, access_log: bool) -> None:
        """New limits from a reload: they apply to the requests that follow."""
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout
        self.access_log = access_log

    def buildProtocol(self, addr: IAddress | None) -> Channel:
        channel = Channel(self, addr)
        channel.factory = self
        return channel

    def http_date(self) -> bytes:
        """The Date header value, formatted once a second."""
        now = int(self.reactor.seconds())
        if now != self._date_second:
            self._date_second = now
            self._date = datetimeToString(now)
            self._date_line = b"Date: " + self._date + b"\r\n"
        return self._date

    def date_line(self) -> bytes:
        """``Date: <http_date()>\\r\\n``."""
        self.http_date()
        return self._date_line

    def log(self, request: Any) -> None:
        """One answer was written: count it, and log it when asked to."""
        if self._on_request is not None:
            received_at = request.received_at
            seconds = None if received_at is None else self.reactor.seconds() - received_at
            self._on_request(request.route_label, request.code, seconds)
        if self.access_log and not request.quiet:
            address = request.getClientAddress()
            ACCESS_LOG.info(
                '{client} "{method} {path}" {code} {length}',
                client=getattr(address, "host", "-"),
                method=request.method.decode("latin-1"),
                path=request.uri.decode("latin-1"),
                code=request.code,
                length=request.sentLength,
            )

    def refused(self, request: Any, error: BridgeError) -> None:
        """A request refused before any handler ran (logged within a budget)."""
        self.client_errors.refused(request, error)

"""The service tree: web server and upstream pool, started and stopped as one."""

from __future__ import annotations

import random
import secrets
from typing import Any, Callable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from bridge.app.lifecycle import Lifecycle
from bridge.config import Config
from bridge.endpoints import client_endpoint, server_description, server_endpoint
from bridge.http.api import BridgeAPI
from bridge.http.clientlog import ClientErrorLog
from bridge.http.events import EventHub
from bridge.http.gate import make_gate
from bridge.http.routes import RouteTable
from bridge.http.site import BridgeSite
from bridge.http.upstreams import Upstream, Upstreams
from bridge.metrics import Metrics
from bridge.upstream.pool import UpstreamPool


class ListenError(Exception):
    """The HTTP side could not listen (address in use, bad interface...)."""


class WebService(Service):
    """Listens with an endpoint; logs the address it actually got."""

    log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        site: BridgeSite,
        on_listen_failed: Callable[[str], None] | None = None,
        tls: bool = False,
    ) -> None:
        self._endpoint = endpoint
        self._tls = tls
        self.site = site
        self.port: IListeningPort | None = None
        self._on_listen_failed = on_listen_failed
        self.listening: Deferred[IListeningPort] = Deferred()
        self.setName("web")

    def startService(self) -> None:
        super().startService()
        attempt = self._endpoint.listen(self.site)
        attempt.addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        address: Any = port.getHost()
        host = getattr(address, "host", None)
        if host is not None:
            shown = f"[{host}]" if ":" in host else host
            scheme = "https" if self._tls else "http"
            self.log.info("listening on {scheme}://{host}:{port}/", scheme=scheme, host=shown,
                          port=address.port)
        elif isinstance(getattr(address, "name", None), (str, bytes)):
            # A unix socket: the form --listen and `bridge healthcheck --url` take.
            name = address.name
            path = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
            self.log.info("listening on unix:{path}", path=path)
        else:
            self.log.info("listening on {address}", address=address)
        self.listening.callback(port)

    def _failed(self, failure: Failure) -> None:
        message = f"cannot listen: {failure.getErrorMessage()}"
        self.listening.errback(ListenError(message))
        self.listening.addErrback(lambda _: None)
        if self._on_listen_failed is not None:
            self._on_listen_failed(message)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self.port is None:
            return succeed(None)
        port, self.port = self.port, None
        stopped: Deferred[None] = port.stopListening()  # type: ignore[assignment]
        return stopped


class BridgeService(MultiService):
    """The whole bridge; its children are the upstream pool and the web server."""

    def __init__(
        self,
        config: Config,
        reactor: Any,
        *,
        jitter: Callable[[], float] = random.random,
        on_fatal: Callable[[str, int], None] | None = None,
        boot: str | None = None,
        endpoint: IStreamClientEndpoint | None = None,
    ) -> None:
        """``endpoint`` replaces the one ``config.upstream`` names (in-memory
        bridges connect their pool to a fake upstream this way)."""
        super().__init__()
        self.config = config
        self._clock = reactor
        # A new token per process: event ids of an earlier run are never
        # taken for ids of this one (see bridge.http.replay).
        self.boot = boot if boot is not None else secrets.token_hex(4)

        def give_up(message: str) -> None:
            if on_fatal is not None:
                on_fatal(message, 1)

        def listen_failed(message: str) -> None:
            if on_fatal is not None:
                on_fatal(message, 2)

        upstreams = [
            self._upstream(upstream_config, reactor, jitter, give_up,
                           endpoint if name == "default" else None)
            for name, upstream_config in config.upstreams.items()
        ]
        self.upstreams = Upstreams(upstreams)
        self.lifecycle = Lifecycle(
            reactor, config.max_inflight, config.shutdown_delay, config.shutdown_grace
        )
        self.client_errors = ClientErrorLog(reactor)
        self.metrics = Metrics(self.upstreams, self.lifecycle, self.client_errors)
        self.http_counts = {"requests": 0}
        self.api = BridgeAPI(
            config, self.upstreams, reactor, self.http_counts, self.lifecycle, self.metrics,
            {"file": config.config_file},
        )
        self.site = BridgeSite(
            make_gate(self.api),
            config.max_body_bytes,
            reactor,
            access_log=config.access_log,
            on_request=self._count_request,
            request_timeout=config.request_timeout,
            client_errors=self.client_errors,
            routes=RouteTable(upstreams=tuple(self.upstreams)),
        )
        self.web = WebService(
            server_endpoint(reactor, config.listen), self.site, listen_failed,
            tls=server_description(config.listen).startswith("ssl:"),
        )
        for upstream in upstreams:
            upstream.pool.setServiceParent(self)
        self.web.setServiceParent(self)

    def _upstream(
        self, config: Config, reactor: Any, jitter: Callable[[], float],
        give_up: Callable[[str], None], endpoint: IStreamClientEndpoint | None,
    ) -> Upstream:
        """One upstream's pool and event hub."""
        events = EventHub(
            reactor,
            self.boot,
            max_backlog=config.max_event_backlog,
            stall_timeout=config.event_stall_timeout,
            heartbeat=config.event_heartbeat,
            replay=config.event_replay,
        )
        # A group's endpoints are made per address (and per resolved address).
        if endpoint is None and not config.addresses:
            endpoint = client_endpoint(reactor, config.upstream, config.connect_timeout)

        def endpoint_for(spec: str) -> Any:
            return client_endpoint(reactor, spec, config.connect_timeout)

        pool = UpstreamPool(
            config, reactor, endpoint, events.publish_frame, jitter, give_up,
            endpoint_for=endpoint_for, resolver=getattr(reactor, "nameResolver", None),
        )
        return Upstream(config.name, config, pool, events)

    @property
    def pool(self) -> UpstreamPool:
        """The pool of the upstream named default (or of the first one)."""
        return self._first().pool

    @property
    def events(self) -> EventHub:
        """The event hub of the upstream named default (or of the first one)."""
        return self._first().events

    def _first(self) -> Upstream:
        return self.upstreams.get("default") or next(iter(self.upstreams.values()))

    def _count_request(self, label: str, code: int, seconds: float | None) -> None:
        self.http_counts["requests"] += 1
        self.metrics.request_done(label, code, seconds)

    def stopService(self) -> Deferred[None]:
        """Drain (see bridge.app.lifecycle), then stop the children."""
        drained = self.lifecycle.shutdown()

        def drain_upstream(_: object) -> Deferred[None]:
            within = max(self.lifecycle.remaining(), 0.5)
            for upstream in self.upstreams.values():
                upstream.events.close_all()
            drained = DeferredList([upstream.pool.drain(self._clock, within)
                                    for upstream in self.upstreams.values()])
            return drained.addCallback(lambda _: None)

        def stop_children(_: object) -> Deferred[None]:
            stopped: Deferred[None] = super(BridgeService, self).stopService()
            return stopped

        drained.addCallback(drain_upstream)
        drained.addCallback(stop_children)
        return drained


def makeService(config: Config, reactor: Any) -> BridgeService:
    """The classic entry point: build the service tree for ``config``."""
    return BridgeService(config, reactor)

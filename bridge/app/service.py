"""The service tree: web server and upstream pool, started and stopped as one."""

from __future__ import annotations

import os
import random
import secrets
from dataclasses import replace
from functools import partial
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

from bridge.app.handover import Handover
from bridge.app.lifecycle import Lifecycle
from bridge.app.reload import describe_changes, needs_restart, same_upstream
from bridge.config import Config
from bridge.endpoints import client_endpoint, server_description, server_endpoint
from bridge.http.api import BridgeAPI
from bridge.http.clientlog import ClientErrorLog
from bridge.http.events import EventHub
from bridge.http.gate import make_gate
from bridge.http.routes import RouteTable
from bridge.http.site import BridgeSite
from bridge.http.status import iso
from bridge.http.upstreams import Upstream, Upstreams
from bridge.metrics import Metrics
from bridge.upstream.pool import UpstreamPool
from bridge.upstream.spool.runner import Runner
from bridge.upstream.spool.service import EXIT_SPOOL, SpooledSend
from bridge.upstream.spool.store import DiskCalls


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
    """The whole bridge; its children are the upstream pools and the web server."""

    log = Logger(namespace="bridge")

    def __init__(
        self,
        config: Config,
        reactor: Any,
        *,
        jitter: Callable[[], float] = random.random,
        on_fatal: Callable[[str, int], None] | None = None,
        boot: str | None = None,
        endpoint: IStreamClientEndpoint | None = None,
        spool_runner: Runner | None = None,
        spool_disk: DiskCalls | None = None,
    ) -> None:
        """``endpoint`` replaces the one ``config.upstream`` names (in-memory
        bridges connect their pool to a fake upstream this way);
        ``spool_runner`` runs the spools' disk work (default: a writer thread each)
        and ``spool_disk`` replaces their write and fsync calls (tests)."""
        super().__init__()
        self._spool_runner = spool_runner
        self._spool_disk = spool_disk
        self._on_fatal = on_fatal
        self.config = config
        self._clock = reactor
        # A new token per process: event ids of an earlier run are never
        # taken for ids of this one (see bridge.http.replay).
        self.boot = boot if boot is not None else secrets.token_hex(4)

        def give_up(message: str) -> None:
            if on_fatal is not None:
                on_fatal(message, 1)

        self._jitter = jitter
        self._give_up = give_up

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
        self.http_counts = {"requests": 0, "work_requests": 0, "work_errors": 0}
        self.generation = 1
        self._handovers: set[Handover] = set()
        self.api = BridgeAPI(
            config, self.upstreams, reactor, self.http_counts, self.lifecycle, self.metrics,
            self._configuration(),
        )
        self.gate = make_gate(self.api)
        self.site = BridgeSite(
            self.gate,
            config.max_body_bytes,
            reactor,
            access_log=config.access_log,
            on_request=self._count_request,
            request_timeout=config.request_timeout,
            client_errors=self.client_errors,
            routes=RouteTable(self.api.routes, upstreams=tuple(self.upstreams)),
        )
        self._work_labels = frozenset(route.label for route in self.api.routes if route.work)
        self.web = WebService(
            server_endpoint(reactor, config.listen), self.site, listen_failed,
            tls=server_description(config.listen).startswith("ssl:"),
        )
        for upstream in upstreams:
            self._adopt(upstream)
        self.web.setServiceParent(self)

    def _adopt(self, upstream: Upstream) -> None:
        """Start an upstream's services with the bridge (or now, on a reload)."""
        if upstream.spool is not None and upstream.spool.parent is None:
            upstream.spool.setServiceParent(self)
        upstream.pool.setServiceParent(self)

    def _upstream(
        self, config: Config, reactor: Any, jitter: Callable[[], float],
        give_up: Callable[[str], None], endpoint: IStreamClientEndpoint | None,
        events: EventHub | None = None,
        spool: SpooledSend | None = None,
    ) -> Upstream:
        """One upstream's pool, and its event hub and spool (both kept across
        a reload)."""
        if events is None:
            events = EventHub(
                reactor,
                self.boot,
                max_backlog=config.max_event_backlog,
                stall_timeout=config.event_stall_timeout,
                heartbeat=config.event_heartbeat,
                replay=config.event_replay,
                upstream=config.name,
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
        if spool is None and config.spool == "disk":
            # At start a spool that cannot open is fatal (exit 2); one a
            # reload adds only logs its error (its /send answers 503).
            spool = SpooledSend(config, pool, reactor, runner=self._spool_runner,
                                on_fatal=None if self.running else self._on_fatal,
                                disk=self._spool_disk)
        return Upstream(config.name, config, pool, events, spool)

    def _configuration(self) -> dict[str, Any]:
        """What /status says of the configuration."""
        path = self.config.config_file
        return {"file": os.path.abspath(path) if path else None, "generation": self.generation,
                "loaded_at": iso(self._clock.seconds())}

    def reconfigure(self, new: Config) -> Deferred[None]:
        """Apply a configuration read again (SIGHUP; see bridge.app.reload).

        Fires once every replaced or removed pool has drained.
        """
        old = self.config
        restart = needs_restart(old, new)
        for name in restart:
            self.log.warn("setting {name} changed; it takes effect only after a restart "
                          "(still {value!r})", name=name, value=getattr(old, name))
        new = replace(new, **{name: getattr(old, name) for name in restart})
        for handover in list(self._handovers):
            handover.abandon()  # this reload starts from the pools at work now
        current = dict(self.upstreams)
        kept: list[str] = []
        added: list[Upstream] = []
        changed: list[tuple[Upstream, Upstream]] = []
        upstreams: list[Upstream] = []
        for name, config in new.upstreams.items():
            previous = current.get(name)
            if previous is not None and same_upstream(previous.config, config):
                kept.append(name)
                upstreams.append(previous)
                continue
            spool = previous.spool if previous is not None else None
            if spool is not None:
                config = self._keep_spool(config, spool)
            upstream = self._upstream(config, self._clock, self._jitter, self._give_up, None,
                                      events=previous.events if previous else None,
                                      spool=spool)
            if previous is None:
                added.append(upstream)
                upstreams.append(upstream)
            else:
                # The old pool keeps the work until the new one is ready.
                changed.append((previous, upstream))
                upstreams.append(previous)
        removed = [name for name in current if name not in new.upstreams]
        self.config = new
        self.api.reconfigure(new)
        self.upstreams.replace(upstreams)
        self.metrics.upstreams_changed(list(self.upstreams))
        self.site.routes = RouteTable(self.api.routes, upstreams=tuple(self.upstreams))
        self.gate.set_tokens(new.token, new.scoped_tokens, new.metrics_auth)
        self.lifecycle.configure(new.max_inflight, new.shutdown_delay, new.shutdown_grace)
        self.site.configure(new.max_body_bytes, new.request_timeout, new.access_log)
        self.generation += 1
        self.api.configuration = self._configuration()
        for upstream in added:
            self._adopt(upstream)
        self.log.info(
            "configuration reloaded (generation {generation}): {changes}",
            generation=self.generation,
            changes=describe_changes({"added": [u.name for u in added],
                                      "changed": [u.name for u, _ in changed],
                                      "removed": removed, "unchanged": kept}),
        )
        drains = [self._retire(current[name], closing=True) for name in removed]
        for previous, successor in changed:
            self._adopt(successor)
            handover = Handover(
                self._clock, self.upstreams, previous, successor,
                within=successor.config.connect_timeout,
                retire=lambda upstream: self._retire(upstream, closing=False),
                discard=partial(self._discard, previous=previous))
            self._handovers.add(handover)
            handover.done.addBoth(self._handed_over, handover)
            drains.append(handover.done)
            handover.start()
        return DeferredList(drains).addCallback(lambda _: None)

    def _handed_over(self, result: object, handover: Handover) -> object:
        self._handovers.discard(handover)
        return result

    def _discard(self, upstream: Upstream, previous: Upstream) -> Deferred[None] | None:
        """Stop a pool that never took work (a later reload replaced it).  A
        spool kept from ``previous`` stays with it; a spool made for this
        upstream (the reload turned the spool on) is closed with the pool."""
        stopped: Deferred[None] | None = upstream.pool.disownServiceParent()
        spool = upstream.spool
        if spool is not None and spool is not previous.spool and spool.parent is not None:
            closed = spool.disownServiceParent()
            if closed is not None:
                return DeferredList([stopped or succeed(None), closed]).addCallback(
                    lambda _: None)
        return stopped

    def _keep_spool(self, config: Config, spool: SpooledSend) -> Config:
        """A changed upstream keeps its open spool (the directory is locked by
        it); changed spool settings wait for a restart."""
        names = ("spool", "spool_dir", "spool_max_bytes", "spool_fsync")
        for name in names:
            if getattr(config, name) != getattr(spool.config, name):
                self.log.warn("setting {name} of the upstream {upstream} changed; it takes "
                              "effect only after a restart (still {value!r})", name=name,
                              upstream=config.name, value=getattr(spool.config, name))
        return replace(config, **{name: getattr(spool.config, name) for name in names})

    def _retire(self, upstream: Upstream, closing: bool) -> Deferred[None]:
        """Drain a pool that takes no more work (as on shutdown), then stop it;
        with ``closing`` its event streams end too (the upstream is gone)."""
        if closing:
            upstream.events.close_all()
        within = max(upstream.config.stale_timeout, upstream.config.reply_timeout)
        drained = upstream.pool.drain(self._clock, within)

        def stop(_: object) -> Deferred[None] | None:
            if closing and upstream.spool is not None:
                upstream.spool.disownServiceParent()  # closes it; what is left stays
            stopped: Deferred[None] | None = upstream.pool.disownServiceParent()
            return stopped

        return drained.addCallback(stop)

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
        counts = self.http_counts
        counts["requests"] += 1
        if label in self._work_labels:
            counts["work_requests"] += 1
            if code >= 400:
                counts["work_errors"] += 1
        self.metrics.request_done(label, code, seconds)

    def startService(self) -> None:
        """Claim every spool directory, then start the children (the web
        server last).  A directory another process holds, or one that cannot
        be used, stops the bridge (status 2) before it ever listens."""
        claimed: list[SpooledSend] = []
        for upstream in self.upstreams.values():
            if upstream.spool is None:
                continue
            problem = upstream.spool.claim()
            if problem is not None:
                for spool in claimed:
                    spool.unclaim()
                if self._on_fatal is not None:
                    self._on_fatal(problem, EXIT_SPOOL)
                else:
                    self.log.error("{why}", why=problem)
                return
            claimed.append(upstream.spool)
        super().startService()

    def stopService(self) -> Deferred[None]:
        """Drain (see bridge.app.lifecycle), then stop the children."""
        if not self.running:
            return succeed(None)  # never started (a spool could not be claimed)
        drained = self.lifecycle.shutdown()
        for handover in list(self._handovers):
            handover.stop()

        def drain_upstream(_: object) -> Deferred[None]:
            within = max(self.lifecycle.remaining(), 0.5)
            for upstream in self.upstreams.values():
                upstream.events.close_all()
                if upstream.spool is not None:
                    # Not waiting for the upstream to catch up: what is not
                    # delivered stays in the spool for the next start.
                    upstream.spool.stop_delivery()
            drained = DeferredList([upstream.pool.drain(self._clock, within)
                                    for upstream in self.upstreams.values()])
            return drained.addCallback(close_spools)

        def close_spools(_: object) -> Deferred[None]:
            closed = DeferredList([upstream.spool.close() for upstream in self.upstreams.values()
                                   if upstream.spool is not None])
            return closed.addCallback(lambda _: None)

        def stop_children(_: object) -> Deferred[None]:
            stopped: Deferred[None] = super(BridgeService, self).stopService()
            return stopped

        drained.addCallback(drain_upstream)
        drained.addCallback(stop_children)
        return drained


def makeService(config: Config, reactor: Any) -> BridgeService:
    """The classic entry point: build the service tree for ``config``."""
    return BridgeService(config, reactor)

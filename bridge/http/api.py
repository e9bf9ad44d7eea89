"""The HTTP API: routes as methods of one object that holds its collaborators.

Every answer is JSON (``application/json``); errors are
``{"error": code, "message": text}``.  Klein's defaults (HTML error pages,
empty 200 for dicts) never reach a client.  The handlers of routes that
address an upstream take its name (``default`` for /send, /request and
/events; NAME for /u/NAME/...).
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from bridge import __version__
from bridge.app.lifecycle import Lifecycle
from bridge.config import Config
from bridge.errors import (
    BodyError,
    BridgeError,
    ReplyTimeoutError,
    UnknownUpstreamError,
    UpstreamLostError,
    UpstreamReplyError,
)
from bridge.http import openapi
from bridge.http.answers import JSON, accepted, respond, respond_error
from bridge.http.body import Lines, parse_body
from bridge.http.limits import ClientError
from bridge.http.page import SECURITY_HEADERS, StaticFile, StatusPage, wants_html
from bridge.http.routes import DEFAULT_UPSTREAM, served_routes
from bridge.http.sse import CONNECTED
from bridge.http.status import bridge_document, bridge_readiness, readiness, shutting_down
from bridge.http.upstreams import Upstream, Upstreams
from bridge.metrics import Metrics
from bridge.upstream.replies.frames import Frame, Plan

__all__ = ["BridgeAPI", "respond", "respond_error"]

MAX_REPLIES = 100_000  # ?replies=N


class BridgeAPI:
    """The routes' handlers.  Holds the upstreams, the config and the clock.

    Which handler serves which method and path is :data:`bridge.http.routes.ROUTES`;
    the hot routes' handlers are called by the gate, the others by Klein
    (:meth:`resource`).
    """

    log = Logger()

    def __init__(
        self,
        config: Config,
        upstreams: Upstreams,
        clock: IReactorTime,
        http_counts: dict[str, int] | None = None,
        lifecycle: Lifecycle | None = None,
        metrics: Metrics | None = None,
        configuration: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.upstreams = upstreams
        self.clock = clock
        #: What /status says of the configuration (file, generation, loaded at).
        self.configuration = configuration if configuration is not None else {}
        self.lifecycle = lifecycle or Lifecycle(
            clock, config.max_inflight, config.shutdown_delay, config.shutdown_grace
        )
        self.metrics = metrics
        self.started_at = clock.seconds()
        self.http_counts = http_counts if http_counts is not None else {"requests": 0}
        #: The routes this bridge serves (the route table less the page's
        #: files when the ui setting is off).
        self.routes = served_routes(config.ui)
        self.page = StatusPage() if config.ui else None
        self._describe()

    def reconfigure(self, config: Config) -> None:
        """The configuration from now on (a reload): upstream names and tokens
        change what /openapi.json says."""
        self.config = config
        self._describe()

    def _describe(self) -> None:
        self._openapi = json.dumps(openapi.document(self.config, self.routes)).encode("utf-8")
        self._index = openapi.route_index(self.config, self.routes)

    def resource(self) -> Any:
        """Klein, for the routes of the table that it renders, and nothing else."""
        app = Klein()
        for route in self.routes:
            if not route.hot:
                methods = [method.decode("ascii") for method in route.methods]
                app.route(route.klein_path, methods=methods,
                          endpoint=route.label)(getattr(self, route.handler))
        app.handle_errors(Exception)(self.internal_error)
        return app.resource()

    # -- helpers ------------------------------------------------------------

    def _lines(self, request: IRequest, config: Config) -> Lines:
        assert request.content is not None
        body = request.content.read()
        return parse_body(
            body,
            request.getHeader(b"Content-Type"),
            config.max_line_bytes,
            config.delimiter_bytes,
        )

    def _query(self, request: IRequest, name: bytes) -> str | None:
        args = request.args
        values = args.get(name) if args else None
        if not values:
            return None
        return values[0].decode("ascii", "replace")

    def _timeout(self, request: IRequest, config: Config) -> float:
        text = self._query(request, b"timeout")
        if text is None:
            return config.reply_timeout
        try:
            timeout = float(text)
        except ValueError:
            raise BodyError(400, "invalid_timeout", f"timeout {text!r} is not a number") from None
        if not timeout > 0:
            raise BodyError(400, "invalid_timeout", f"timeout must be positive, got {text!r}")
        if timeout > config.max_reply_timeout:
            raise BodyError(
                400,
                "invalid_timeout",
                f"timeout {text} is above max_reply_timeout ({config.max_reply_timeout:g})",
            )
        return timeout

    def _replies(self, request: IRequest) -> int | None:
        text = self._query(request, b"replies")
        if text is None:
            return None
        if not text.isdigit() or int(text) > MAX_REPLIES:
            raise BodyError(400, "invalid_replies",
                            f"replies must be a whole number from 0 to {MAX_REPLIES}, got {text!r}")
        return int(text)

    def _confirm(self, request: IRequest) -> bool:
        text = self._query(request, b"confirm")
        if text is None:
            return False
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise BodyError(400, "invalid_confirm", f"confirm must be true or false, got {text!r}")

    # -- lines out ------------------------------------------------------------

    def _target(self, name: str) -> Upstream:
        """The upstream named ``name``; it may have been removed by a reload
        since the request's route was decided."""
        target = self.upstreams.get(name)
        if target is None:
            known = ", ".join(self.upstreams) or "none"
            raise UnknownUpstreamError(
                f"no upstream named {name!r}; the configured ones are: {known}")
        return target

    def send(self, request: IRequest, upstream: str = DEFAULT_UPSTREAM) -> bytes | Deferred[bytes]:
        try:
            target = self._target(upstream)
            confirm = self._confirm(request)
            timeout = self._timeout(request, target.config) if confirm else 0.0
            lines = self._lines(request, target.config)
            if target.spool is not None:
                return self._spool(request, target, lines, confirm)
            if not confirm:
                target.pool.send(lines)
                return accepted(request, lines.count)
            plan, replies = target.pool.send_confirmed(lines, timeout)
        except BridgeError as error:
            return respond_error(request, error)
        started = self.clock.seconds()
        return replies.addCallbacks(
            self._confirmed, self._failed,
            callbackArgs=(request, target, started, lines.count, plan),
            errbackArgs=(request, target),
        )

    def _spool(self, request: IRequest, target: Upstream, lines: Lines,
               confirm: bool) -> Deferred[bytes]:
        """202 once the lines are stored (spool = "disk"), connected or not."""
        if confirm:
            raise BodyError(
                400, "confirm_unavailable",
                "?confirm=true waits for the upstream's replies; with spool = disk a /send "
                "is answered once its lines are stored, and delivered later",
            )
        assert target.spool is not None
        target.pool.plan(lines)  # refuse now what the upstream would misread later
        stored = target.spool.append(lines)
        return stored.addCallbacks(
            lambda _: accepted(request, lines.count, spooled=True),
            self._not_stored, errbackArgs=(request,),
        )

    def _not_stored(self, failure: Failure, request: IRequest) -> Any:
        """429 spool_full or 503 spool_unavailable; nothing for a client gone."""
        if failure.check(CancelledError):
            return None  # the record is stored all the same, and delivered
        if failure.check(BridgeError):
            error = failure.value
            assert isinstance(error, BridgeError)
            return respond_error(request, error)
        return failure

    def request(
        self, request: IRequest, upstream: str = DEFAULT_UPSTREAM
    ) -> bytes | Deferred[bytes]:
        try:
            target = self._target(upstream)
            timeout = self._timeout(request, target.config)
            count = self._replies(request)
            lines = self._lines(request, target.config)
            replies = target.pool.request(lines, timeout, count)
        except BridgeError as error:
            return respond_error(request, error)
        started = self.clock.seconds()
        return replies.addCallbacks(
            self._replied, self._failed, callbackArgs=(request, target, started),
            errbackArgs=(request, target),
        )

    def _outcome(self, target: Upstream, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.count_reply(target.name, outcome)

    def _observe(self, target: Upstream, started: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_reply(target.name, self.clock.seconds() - started)

    def _replied(
        self, replies: list[Frame], request: IRequest, target: Upstream, started: float
    ) -> bytes:
        self._observe(target, started)
        if any(target.pool.is_error(frame) for frame in replies):
            self._outcome(target, "upstream_error")
            why = ("the upstream answered with an error reply"
                   if any(frame.error for frame in replies)
                   else "a reply matched reply_error_pattern")
            return respond_error(request, UpstreamReplyError(why, replies))
        self._outcome(target, "ok")
        accept = request.getHeader(b"Accept") or b""
        if b"text/plain" in accept and b"application/json" not in accept:
            request.setResponseCode(200)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            body = b"".join(frame.raw for frame in replies)
            request.setHeader(b"Content-Length", b"%d" % len(body))
            return body
        return respond(request, 200, {"replies": [frame.value for frame in replies]})

    def _confirmed(
        self, replies: list[Frame], request: IRequest, target: Upstream, started: float,
        count: int, plan: Plan,
    ) -> bytes:
        self._observe(target, started)
        errors = [
            {"line": plan.line_of(index) if index < plan.replies else index + 1,
             "reply": frame.value}
            for index, frame in enumerate(replies) if target.pool.is_error(frame)
        ]
        self._outcome(target, "upstream_error" if errors else "ok")
        return respond(request, 200, {"sent": count, "errors": errors})

    def _failed(self, failure: Failure, request: IRequest, target: Upstream) -> Any:
        if failure.check(CancelledError):
            self._outcome(target, "cancelled")
            return None  # the client is gone; nobody to answer
        if failure.check(ReplyTimeoutError):
            self._outcome(target, "timeout")
        elif failure.check(UpstreamLostError):
            self._outcome(target, "lost")
        if failure.check(BridgeError):
            error = failure.value
            assert isinstance(error, BridgeError)
            return respond_error(request, error)
        return failure

    # -- probes and status ------------------------------------------------------

    def healthz(self, request: IRequest) -> bytes:
        return respond(request, 200, {"status": "ok"})

    def readyz(self, request: IRequest) -> bytes:
        document = bridge_readiness(self.upstreams, not self.lifecycle.ready)
        return respond(request, 200 if document["ready"] else 503, document)

    def upstream_readyz(self, request: IRequest, upstream: str) -> bytes:
        try:
            target = self._target(upstream)
        except BridgeError as error:
            return respond_error(request, error)
        if not self.lifecycle.ready:
            return respond(request, 503, shutting_down(target))
        document = readiness(target)
        return respond(request, 200 if document["ready"] else 503, document)

    def status(self, request: IRequest) -> bytes:
        return respond(request, 200, self.status_document())

    def status_document(self) -> dict[str, Any]:
        return bridge_document(
            self.upstreams, version=__version__,
            uptime=self.clock.seconds() - self.started_at, inflight=self.lifecycle.inflight,
            lifecycle=self.lifecycle.state, http_counts=self.http_counts,
            configuration=self.configuration,
        )

    def metrics_page(self, request: IRequest) -> bytes:
        if self.metrics is None:
            return respond(request, 404, {"error": "not_found", "message": "no metrics"})
        body = self.metrics.render()
        request.setHeader(b"Content-Type", self.metrics.content_type)
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return body

    # -- the page and the API's description ----------------------------------------

    def index(self, request: IRequest) -> bytes:
        """The status page for a browser, the route index for anyone else."""
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        request.setHeader(b"Vary", b"Accept")
        if self.page is not None and wants_html(request.getHeader(b"Accept")):
            return self._file(request, self.page.page)
        return respond(request, 200, self._index)

    def asset(self, request: IRequest) -> bytes:
        """A file of the page (its routes are served only with the page)."""
        file = self.page.assets.get(request.path) if self.page is not None else None
        if file is None:
            return respond_error(request, ClientError(
                404, "not_found", f"no route {request.path.decode('latin-1')}"))
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        return self._file(request, file)

    def _file(self, request: IRequest, file: StaticFile) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", file.content_type)
        request.setHeader(b"Content-Length", b"%d" % len(file.body))
        return file.body

    def openapi_json(self, request: IRequest) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", JSON)
        request.setHeader(b"Content-Length", b"%d" % len(self._openapi))
        return self._openapi

    # -- unsolicited lines --------------------------------------------------------

    def events_stream(self, request: IRequest, upstream: str = DEFAULT_UPSTREAM) -> Any:
        try:
            events = self._target(upstream).events
        except BridgeError as error:
            return respond_error(request, error)
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")
        request.write(CONNECTED)
        # EventSource sends Last-Event-ID by itself when it reconnects.
        subscriber = events.subscribe(request, request.getHeader(b"Last-Event-ID"))
        # Not NOT_DONE_YET: to Klein that is just a value, and it finishes the
        # request at once.  This Deferred fires only after the hub has finished
        # the response itself (a dropped subscriber, shutdown); Klein cancels it
        # when the client goes away, which removes the subscriber.
        return subscriber.stream

    # -- errors -------------------------------------------------------------------

    def internal_error(self, request: IRequest, failure: Failure) -> bytes | None:
        if failure.check(CancelledError):
            return None
        self.log.failure("unhandled error answering {path}", failure,
                         path=request.path)
        return respond(
            request, 500, {"error": "internal_error", "message": "internal error; see the log"}
        )

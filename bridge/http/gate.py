"""Who may come in, whether there is room, and who answers.

The channel decides each request's route once (:mod:`bridge.http.routes`)
and hands the request and that decision here:

* bearer token (when set) on every route but the open ones (probes, and
  /metrics when ``metrics_auth`` is off), compared in constant time; the
  token never appears in logs or answers.  The global token opens every
  route; a scoped token (``[tokens.NAME]``) only the send, request and events
  routes of its upstreams (403 ``forbidden`` otherwise);
* no route: the 404 or 405 of the decision;
* work routes (POST /send and /request): 503 ``shutting_down`` while
  draining and 429 ``overloaded`` beyond ``max_inflight``; the ones admitted
  are counted until their answer is finished, which is what the drain waits
  for (see :class:`bridge.app.lifecycle.Lifecycle`);
* hot routes are called directly (handler methods of the API, through the
  light request); the others are rendered by Klein on a twisted.web Request.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable, Mapping

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET

from bridge.app.lifecycle import Lifecycle
from bridge.config.model import ScopedToken
from bridge.errors import BridgeError, BusyError, ShuttingDownError
from bridge.http.answers import respond_error
from bridge.http.limits import ClientError
from bridge.http.routes import ROUTES, Decision, Route

Handler = Callable[..., Any]


def open_labels(metrics_auth: bool) -> frozenset[str]:
    """The routes that need no token."""
    return frozenset(
        route.label for route in ROUTES if route.open or (route.metrics and not metrics_auth)
    )


class Gate:
    """Authenticates, admits and dispatches requests whose route is decided."""

    log = Logger()

    def __init__(
        self,
        handlers: Mapping[bytes, Handler],
        web: IResource,
        lifecycle: Lifecycle,
        token: str | None,
        metrics_auth: bool = True,
        scoped_tokens: tuple[ScopedToken, ...] = (),
    ) -> None:
        self._handlers = handlers
        self._web = web
        self._lifecycle = lifecycle
        self.set_tokens(token, scoped_tokens, metrics_auth)

    def set_tokens(
        self, token: str | None, scoped_tokens: tuple[ScopedToken, ...], metrics_auth: bool
    ) -> None:
        """The tokens from now on (at start, and on a reload)."""
        self._token = token.encode("utf-8") if token else None
        self._scoped = [(scoped.token.encode("utf-8"), scoped) for scoped in scoped_tokens]
        self._auth = self._token is not None or bool(self._scoped)
        self._open = open_labels(metrics_auth)

    def render(self, request: Any, decision: Decision) -> Any:
        """The answer's body, or NOT_DONE_YET if it comes later."""
        if self._auth and decision.label not in self._open:
            refusal = self._check_token(request, decision)
            if refusal is not None:
                return refusal
        route = decision.route
        if route is None:
            assert decision.miss is not None
            return respond_error(request, decision.miss)
        if not route.work:
            return self._render(request, route, None, decision.upstream)
        lifecycle = self._lifecycle
        if lifecycle.refusing:
            request.setHeader(b"Connection", b"close")
            return respond_error(request, ShuttingDownError(
                "the bridge is shutting down and takes no new work"))
        if lifecycle.inflight >= lifecycle.max_inflight:
            return respond_error(request, BusyError(
                "overloaded",
                f"{lifecycle.inflight} requests are being handled (max_inflight); retry later"))
        lifecycle.started()
        handler = self._handlers.get(route.path)
        if handler is not None:
            # A hot route's handler mostly answers at once: counted out here,
            # without a watch (it is the same rule as below, without the closure).
            try:
                result = self._call(request, route, handler, decision.upstream)
            except BaseException:
                lifecycle.finished()
                raise
            if isinstance(result, bytes):
                lifecycle.finished()
                return result
            request.notifyFinish().addBoth(lambda _: lifecycle.finished())
            return self._later(request, result)
        settled = [False]

        def finished(_: object = None) -> None:
            if not settled[0]:
                settled[0] = True
                lifecycle.finished()

        try:
            result = self._render(request, route, finished, decision.upstream)
        except BaseException:
            finished()
            raise
        if result is not NOT_DONE_YET:
            finished()
        return result

    def _render(
        self, request: Any, route: Route, watch: Callable[[object], None] | None,
        upstream: str,
    ) -> Any:
        """Render; ``watch`` (if any) is called once the answer is finished.

        It is registered before anything can finish the request: twisted.web
        never fires a notifyFinish() asked for after the request finished.
        """
        handler = self._handlers.get(route.path)
        if handler is None:
            if watch is not None:
                request.notifyFinish().addBoth(watch)
            return self._web.render(request)
        result = self._call(request, route, handler, upstream)
        if isinstance(result, bytes):
            return result
        if watch is not None:
            request.notifyFinish().addBoth(watch)
        return self._later(request, result)

    def _call(self, request: Any, route: Route, handler: Handler, upstream: str) -> Any:
        """The handler's answer: bytes now, or a Deferred of them."""
        try:
            return handler(request, upstream) if route.per_upstream else handler(request)
        except Exception:
            self.log.failure("unhandled error answering {path}", path=route.path)
            return respond_error(request, BridgeError("internal error; see the log"))

    def _later(self, request: Any, result: Deferred[Any]) -> Any:
        """Finish the request when ``result`` fires; cancel it if the client goes."""
        finished = [False]

        def write(body: bytes | None) -> None:
            finished[0] = True
            if body is None:
                return  # cancelled: the client is gone
            request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            if finished[0] or failure.check(CancelledError):
                return
            self.log.failure("unhandled error answering {path}", failure, path=request.path)
            request.write(respond_error(request, BridgeError("internal error; see the log")))
            request.finish()

        def gone(_: object) -> None:
            if not finished[0]:
                finished[0] = True
                result.cancel()

        result.addCallbacks(write, failed)
        request.notifyFinish().addErrback(gone)
        return NOT_DONE_YET

    def _check_token(self, request: Any, decision: Decision) -> bytes | None:
        """None when the bearer token opens this route; else the 401 or 403."""
        header = request.getHeader(b"Authorization") or b""
        scheme, _, credentials = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return self._unauthorized(request)
        credentials = credentials.strip()
        if self._token is not None and hmac.compare_digest(credentials, self._token):
            return None
        # Every scoped token is compared, so the time taken does not say which.
        matched = None
        for token, scoped in self._scoped:
            if hmac.compare_digest(credentials, token):
                matched = scoped
        if matched is None:
            return self._unauthorized(request)
        route = decision.route
        if route is None:
            return None  # the 404 or 405 says nothing of any upstream
        if route.scope is not None and matched.allows(decision.upstream, route.scope):
            return None
        what = (f"{route.scope} on the upstream {decision.upstream!r}"
                if route.scope is not None else route.label)
        return respond_error(request, ClientError(
            403, "forbidden", f"the token {matched.name!r} does not allow {what}"))

    def _unauthorized(self, request: Any) -> bytes:
        return respond_error(request, ClientError(
            401, "unauthorized", "this route needs 'Authorization: Bearer <token>'",
            headers=((b"WWW-Authenticate", b'Bearer realm="bridge"'),)))


def make_gate(api: Any) -> Gate:
    """The gate for ``api`` (a :class:`bridge.http.api.BridgeAPI`): its hot
    handlers, Klein for the other routes, its lifecycle and token."""
    handlers = {route.path: getattr(api, route.handler) for route in ROUTES if route.hot}
    config = api.config
    return Gate(handlers, api.resource(), api.lifecycle, config.token, config.metrics_auth,
                config.scoped_tokens)

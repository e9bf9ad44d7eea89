"""The root resource: who may come in, and whether there is room.

Before the Klein routes run, every request passes here:

* bearer token (when set) on every route but the probes, compared in
  constant time; the token never appears in logs or answers;
* POST /send and /request: 503 ``shutting_down`` while draining and 429
  ``overloaded`` beyond ``max_inflight``; the ones admitted are counted until
  their answer is finished, which is what the shutdown waits for.

The hot routes (POST /send, POST /request and the probes) are then called
directly: they are the same methods Klein routes, without Klein's per-request
URL mapping and Deferred plumbing, which cost more than the bridge's own work
for a one-line request.  Everything else goes to Klein.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable, Mapping

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

from bridge.app.lifecycle import Lifecycle
from bridge.errors import BridgeError, BusyError, ShuttingDownError
from bridge.http.api import BridgeAPI
from bridge.http.web import error_body

OPEN_PATHS = frozenset({b"/healthz", b"/readyz"})
WORK_PATHS = frozenset({b"/send", b"/request"})


class Gate(Resource):
    """Wraps the application resource (Klein's) as the Site's root."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        application: IResource,
        lifecycle: Lifecycle,
        token: str | None,
        metrics_auth: bool = True,
        hot_routes: Mapping[tuple[bytes, bytes], Callable[[IRequest], Any]] | None = None,
    ) -> None:
        super().__init__()
        self._application = application
        self._hot = hot_routes or {}
        self._lifecycle = lifecycle
        self._token = token.encode("utf-8") if token else None
        self._open = OPEN_PATHS if metrics_auth else OPEN_PATHS | {b"/metrics"}

    def render(self, request: IRequest) -> Any:
        path: bytes = request.path
        if self._token is not None and path not in self._open and not self._authorized(request):
            return self._unauthorized(request)
        if path in WORK_PATHS:
            lifecycle = self._lifecycle
            if lifecycle.refusing:
                request.setHeader(b"Connection", b"close")
                # The header alone does not close: twisted.web decides from the
                # request's headers whether the connection stays open.
                channel = getattr(request, "channel", None)
                if channel is not None:
                    channel.persistent = False
                return self._refuse(request, ShuttingDownError(
                    "the bridge is shutting down and takes no new work"))
            if lifecycle.inflight >= lifecycle.max_inflight:
                return self._refuse(request, BusyError(
                    "overloaded",
                    f"{lifecycle.inflight} requests are being handled (max_inflight); "
                    "retry later"))
            lifecycle.started()
            settled = [False]

            def finished(_: object = None) -> None:
                if not settled[0]:
                    settled[0] = True
                    lifecycle.finished()

            try:
                result = self._render(request, path, finished)
            except BaseException:
                finished()
                raise
            if result is not NOT_DONE_YET:
                finished()
            return result
        return self._render(request, path, None)

    def _render(
        self, request: IRequest, path: bytes, watch: Callable[[object], None] | None
    ) -> Any:
        """Render; ``watch`` (if any) is called once the answer is finished.

        It is registered before anything can finish the request: twisted.web
        never fires a notifyFinish() asked for after the request finished.
        """
        handler = self._hot.get((request.method, path))
        if handler is None:
            if watch is not None:
                request.notifyFinish().addBoth(watch)  # type: ignore[attr-defined]
            return self._application.render(request)
        try:
            result = handler(request)
        except Exception:
            self.log.failure("unhandled error answering {path}", path=path)
            return self._refuse(request, BridgeError("internal error; see the log"))
        if isinstance(result, bytes):
            return result
        if watch is not None:
            request.notifyFinish().addBoth(watch)  # type: ignore[attr-defined]
        return self._later(request, result)

    def _later(self, request: IRequest, result: Deferred[Any]) -> Any:
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
            self.log.failure("unhandled error answering {path}", failure,
                             path=request.path)
            request.write(self._refuse(request, BridgeError("internal error; see the log")))
            request.finish()

        def gone(_: object) -> None:
            if not finished[0]:
                finished[0] = True
                result.cancel()

        result.addCallbacks(write, failed)
        request.notifyFinish().addErrback(gone)  # type: ignore[attr-defined]
        return NOT_DONE_YET

    def _authorized(self, request: IRequest) -> bool:
        assert self._token is not None
        header = request.getHeader(b"Authorization") or b""
        scheme, _, credentials = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(credentials.strip(), self._token)

    def _unauthorized(self, request: IRequest) -> bytes:
        body = error_body("unauthorized", "this route needs 'Authorization: Bearer <token>'")
        request.setResponseCode(401)
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="bridge"')
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return body

    def _refuse(self, request: IRequest, error: BridgeError) -> bytes:
        body = error_body(error.code, error.message)
        request.setResponseCode(error.status)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        retry_after = error.retry_after()
        if retry_after is not None:
            request.setHeader(b"Retry-After", b"%d" % retry_after)
        return body


def make_root(api: BridgeAPI) -> Gate:
    """The Site's root for ``api``: the Gate, its hot routes, Klein for the rest."""
    hot_routes = {
        (b"POST", b"/send"): api.send,
        (b"POST", b"/request"): api.request,
        (b"GET", b"/healthz"): api.healthz,
        (b"GET", b"/readyz"): api.readyz,
    }
    config = api.config
    return Gate(api.resource(), api.lifecycle, config.token, config.metrics_auth, hot_routes)

"""The root resource: who may come in, and whether there is room.

Before the Klein routes run, every request passes here:

* bearer token (when set) on every route but the probes, compared in
  constant time; the token never appears in logs or answers;
* POST /send and /request: 503 ``shutting_down`` while draining and 429
  ``overloaded`` beyond ``max_inflight``; the ones admitted are counted until
  their answer is finished, which is what the shutdown waits for.
"""

from __future__ import annotations

import hmac
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from bridge.errors import BridgeError, BusyError, ShuttingDownError
from bridge.lifecycle import Lifecycle
from bridge.web import error_body

OPEN_PATHS = frozenset({b"/healthz", b"/readyz"})
WORK_PATHS = frozenset({b"/send", b"/request"})


class Gate(Resource):
    """Wraps the application resource (Klein's) as the Site's root."""

    isLeaf = True

    def __init__(
        self,
        application: IResource,
        lifecycle: Lifecycle,
        token: str | None,
        metrics_auth: bool = True,
    ) -> None:
        super().__init__()
        self._application = application
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
                return self._refuse(request, ShuttingDownError(
                    "the bridge is shutting down and takes no new work"))
            if lifecycle.inflight >= lifecycle.max_inflight:
                return self._refuse(request, BusyError(
                    "overloaded",
                    f"{lifecycle.inflight} requests are being handled (max_inflight); "
                    "retry later"))
            lifecycle.started()
            request.notifyFinish().addBoth(  # type: ignore[attr-defined]
                lambda _: lifecycle.finished()
            )
        return self._application.render(request)

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

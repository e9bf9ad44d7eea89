"""The HTTP server side: request body limits, access log, the Site.

twisted.web buffers the whole body before a handler runs and has no size
limit of its own.  :class:`LimitedRequest` refuses a declared
``Content-Length`` over the limit before reading any of the body, and stops
buffering a chunked body as soon as it passes the limit.
"""

from __future__ import annotations

import io
import json
from typing import Any, Callable

from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

PROBE_PATHS = frozenset({b"/healthz", b"/readyz", b"/metrics"})


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode("utf-8")


class LimitedRequest(Request):
    """A Request whose body may not exceed ``site.max_body_bytes``."""

    body_too_large = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        limit: int = self.channel.site.max_body_bytes  # type: ignore[attr-defined]
        if length is not None and length > limit:
            self.body_too_large = True
            self._refuse(
                f"the body is {length} bytes; max_body_bytes is {limit}",
            )
            return
        if length is not None and length <= limit:
            self.content = io.BytesIO()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        self._received += len(data)
        limit: int = self.channel.site.max_body_bytes  # type: ignore[attr-defined]
        if self._received > limit:
            self.body_too_large = True
            self._refuse(f"the body is over max_body_bytes ({limit} bytes)")
            return
        assert self.content is not None
        self.content.write(data)

    def process(self) -> None:
        if self.body_too_large:
            return  # already answered 413; the connection is closing
        super().process()

    def _refuse(self, message: str) -> None:
        """Answer 413 now and close: the rest of the body is never read."""
        self.content = io.BytesIO()
        body = error_body("body_too_large", message)
        channel = self.channel
        transport = channel.transport
        assert transport is not None
        transport.write(
            b"HTTP/1.1 413 Content Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Connection: close\r\n"
            b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n\r\n" + body
        )
        self.channel.site.count_request(self, 413)  # type: ignore[attr-defined]
        channel.loseConnection()


class BridgeSite(Site):
    """A Site with body limits and an access log through twisted.logger."""

    access = Logger(namespace="bridge.access")
    requestFactory = LimitedRequest

    def __init__(
        self,
        resource: IResource,
        max_body_bytes: int,
        access_log: bool = True,
        on_request: Callable[[Any, int], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, parsePOSTFormSubmission=False, **kwargs)
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self._on_request = on_request
        self.noisy = False

    def count_request(self, request: Any, code: int) -> None:
        if self._on_request is not None:
            self._on_request(request, code)

    def log(self, request: Any) -> None:
        self.count_request(request, request.code)
        if not self.access_log or request.path in PROBE_PATHS:
            return
        self.log_line(request)

    def log_line(self, request: Any) -> None:
        address = request.getClientAddress()
        self.access.info(
            '{client} "{method} {path}" {code} {length}',
            client=getattr(address, "host", "-"),
            method=request.method.decode("latin-1"),
            path=request.uri.decode("latin-1"),
            code=request.code,
            length=request.sentLength,
        )

    def startFactory(self) -> None:
        # No legacy access-log file: we log through twisted.logger.
        self._logFile = None
        if self._logDateTimeCall is None:
            self._updateLogDateTime()

    def stopFactory(self) -> None:
        pass

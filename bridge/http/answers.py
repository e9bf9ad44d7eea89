"""Every JSON answer the bridge writes, and the one writer of error bodies.

Errors are ``{"error": code, "message": text}`` (plus fields an error adds,
see :meth:`bridge.errors.BridgeError.extra`), always ``application/json``,
whichever part of the bridge refuses: the channel before a request exists,
the gate, or a handler.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.http import RESPONSES

from bridge.errors import BridgeError

JSON = b"application/json"
# RFC 9110's reason phrases where twisted.web's table is older or silent.
_REASONS = {408: b"Request Timeout", 413: b"Content Too Large",
            431: b"Request Header Fields Too Large"}


def reason(code: int) -> bytes:
    """The reason phrase of a status line."""
    return _REASONS.get(code) or RESPONSES.get(code, b"Unknown")


# Formatted once: every answer of the channel starts with one of these.
_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason(code))
                 for code in (*RESPONSES, *_REASONS)}


def status_line(code: int) -> bytes:
    """``HTTP/1.1 <code> <reason>\\r\\n``."""
    line = _STATUS_LINES.get(code)
    return line if line is not None else b"HTTP/1.1 %d %s\r\n" % (code, reason(code))


def error_document(error: BridgeError) -> dict[str, Any]:
    document: dict[str, Any] = {"error": error.code, "message": error.message}
    replies = getattr(error, "replies", None)
    if replies is not None:
        document["replies"] = [frame.value for frame in replies]  # reply frames
    document.update(error.extra())
    return document


# ``request`` is anything with the IRequest subset used here: a twisted.web
# Request or the channel's HotRequest.
def respond(
    request: Any, status: int, document: dict[str, Any], retry_after: int | None = None
) -> bytes:
    """Set status and headers for a JSON answer and return its body."""
    body = json.dumps(document).encode("utf-8")
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", JSON)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    if retry_after is not None:
        request.setHeader(b"Retry-After", b"%d" % retry_after)
    return body


def accepted(request: Any, count: int, spooled: bool = False) -> bytes:
    """The 202 of ``POST /send``: the bytes of ``respond(request, 202,
    {"sent": count})`` (with ``"spooled": true`` when stored in the spool),
    from a template (json.dumps costs more than the rest of a one-line
    /send's answer)."""
    body = (b'{"sent": %d, "spooled": true}' if spooled else b'{"sent": %d}') % count
    request.setResponseCode(202)
    request.setHeader(b"Content-Type", JSON)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def respond_error(request: Any, error: BridgeError) -> bytes:
    """The JSON answer to ``error`` (its status, headers and body)."""
    for name, value in getattr(error, "headers", ()):
        request.setHeader(name, value)
    return respond(request, error.status, error_document(error), error.retry_after())

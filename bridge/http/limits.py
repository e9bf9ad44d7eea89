"""What the bridge refuses before any handler runs, and with which answer.

llhttp (through httptools) decides where each request and its body end and
rejects malformed HTTP; these are the rules on top of it: the RFC 9112
checks llhttp leaves to the server (Host, one ``Transfer-Encoding: chunked``,
the HTTP version), the size of the head (431), the size of the body (413,
from Content-Length before reading, or as soon as a chunked body passes the
limit) and the media types a work route takes (415).  Every refusal is a
:class:`ClientError`: a JSON answer after which the connection closes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bridge.errors import BridgeError

MAX_HEAD = 16384  # bytes of request line and header fields (431 beyond)
VERSIONS = frozenset({"1.0", "1.1"})

# RFC 3986 host (reg-name, IPv4 or IP-literal) with an optional port.
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(:[0-9]*)?\Z").match


class ClientError(BridgeError):
    """A request the bridge refuses (4xx); ``headers`` go with the answer."""

    def __init__(
        self, status: int, code: str, message: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = tuple(headers)


def bad_request(message: str) -> ClientError:
    return ClientError(400, "bad_request", message)


def head_too_large() -> ClientError:
    return ClientError(431, "header_too_large",
                       f"the request line and header fields pass {MAX_HEAD} bytes")


def body_too_large(limit: int, length: int | None = None) -> ClientError:
    if length is None:
        return ClientError(413, "body_too_large",
                           f"the body is over max_body_bytes ({limit} bytes)")
    return ClientError(413, "body_too_large",
                       f"the body is {length} bytes; max_body_bytes is {limit}")


def check_head(
    version: str, headers: Sequence[tuple[bytes, bytes]], max_body_bytes: int, work: bool,
) -> bool:
    """Raise the :class:`ClientError` a complete head deserves, if any; else
    say whether it asks for ``100 Continue``.

    ``headers`` are (lower-case name, value) pairs as received; ``work`` says
    whether the request's route takes a body of lines (multipart is refused
    there: it would reach the upstream as MIME parts).  One pass: this runs
    for every request.
    """
    if version not in VERSIONS:
        raise bad_request(f"HTTP/{version} is not supported; use HTTP/1.1")
    host: bytes | None = None
    chunked = expect = False
    for name, value in headers:
        if name == b"host":
            if host is not None:
                raise bad_request("the request has more than one Host header")
            if not _HOST(value):
                raise bad_request("the Host header is not a valid host")
            host = value
        elif name == b"content-length":
            if int(value) > max_body_bytes:  # llhttp checked its syntax
                raise body_too_large(max_body_bytes, int(value))
        elif name == b"transfer-encoding":
            if chunked or value.strip().lower() != b"chunked":
                raise bad_request("the only Transfer-Encoding accepted is one 'chunked'")
            chunked = True
        elif name == b"content-type":
            if (work and b"multipart/" in value.lower()
                    and media_type(value).startswith(b"multipart/")):
                raise ClientError(
                    415, "unsupported_media_type",
                    "multipart bodies are not taken; send the lines as text "
                    "(--data-binary) or as JSON {\"lines\": [...]}")
        elif name == b"expect":
            expect = value.lower() == b"100-continue"
    if host is None and version == "1.1":
        raise bad_request("an HTTP/1.1 request needs a Host header")
    return expect and version == "1.1"


def media_type(content_type: bytes) -> bytes:
    """The lower-case media type of a Content-Type value, without parameters."""
    return content_type.split(b";", 1)[0].strip().lower()

"""HTTP/1.1 on the wire, as the tests write and read it: the one place that
builds request bytes and parses response bytes.

Used by the in-memory client (:mod:`tests.http_harness`) and by the raw
socket clients of the real-process tests (:mod:`tests.events_client`), so
that both worlds read answers the same way.  Deliberately small and strict:
it reads what the bridge writes (Content-Length or chunked bodies, no
trailers) and fails loudly on anything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Dechunker",
    "Response",
    "chunked",
    "dechunk",
    "http_request",
    "parse_head",
    "parse_responses",
    "split_response",
]


def http_request(
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 request (Content-Length set unless given)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: bridge.test"]
    extra = dict(headers or {})
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding")
                                    for k in extra):
        extra["Content-Length"] = str(len(body))
    lines += [f"{name}: {value}" for name, value in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def chunked(method: str, path: str, body: bytes) -> bytes:
    """A request with a chunked body in one chunk."""
    head = http_request(method, path, None, {"Transfer-Encoding": "chunked"})
    return head + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


@dataclass
class Response:
    """One complete HTTP response."""

    status: int
    reason: bytes
    headers: dict[bytes, list[bytes]]  # lower-cased names, values in order
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """The last value of header ``name`` (any case), or None."""
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def parse_head(head: bytes) -> tuple[bytes, dict[bytes, list[bytes]]]:
    """A response head without its blank line: the status line, and the
    headers (lower-cased names)."""
    status_line, *lines = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status_line, headers


class Dechunker:
    """Decodes a chunked body incrementally: :meth:`feed` bytes as they come,
    get the payload of every chunk completed so far.  ``ended`` once the last
    (empty) chunk arrived; what followed it is in ``rest``.  Works by offsets,
    so that bodies of many megabytes decode in linear time."""

    def __init__(self) -> None:
        self.ended = False
        self.rest = b""
        self._wire = bytearray()

    def feed(self, data: bytes) -> bytes:
        if self.ended:
            self.rest += data
            return b""
        wire = self._wire
        wire += data
        out: list[bytes] = []
        position = 0
        while True:
            line_end = wire.find(b"\r\n", position)
            if line_end < 0:
                break
            size = int(wire[position:line_end].split(b";")[0], 16)
            start = line_end + 2
            if len(wire) < start + size + 2:
                break
            out.append(bytes(wire[start:start + size]))
            position = start + size + 2
            if size == 0:
                self.ended = True
                self.rest = bytes(wire[position:])
                position = len(wire)
                break
        del wire[:position]
        return b"".join(out)


def dechunk(data: bytes) -> bytes:
    """The payload of a complete or partial chunked body (complete chunks only)."""
    return Dechunker().feed(data)


def split_response(raw: bytes) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
    """A response still streaming (GET /events): status line, headers
    (lower-cased names), and the body so far (see :func:`dechunk`)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    return status, headers, body


def parse_responses(data: bytes) -> tuple[list[Response], bytes]:
    """Complete HTTP/1.1 responses in ``data`` and what is left after them."""
    responses: list[Response] = []
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, headers = parse_head(head)
        _, code, reason = [*status_line.split(b" ", 2), b""][:3]
        status = int(code)
        if status < 200 or status in (204, 304):
            body = b""
        elif b"content-length" in headers:
            length = int(headers[b"content-length"][-1])
            if len(rest) < length:
                break
            body, rest = rest[:length], rest[length:]
        elif headers.get(b"transfer-encoding") == [b"chunked"]:
            dechunker = Dechunker()
            body = dechunker.feed(rest)
            if not dechunker.ended:
                break
            rest = dechunker.rest
        else:
            body, rest = rest, b""
        responses.append(Response(status, reason, headers, body))
        data = rest
    return responses, data

"""One HTTP/1.1 GET on a plain socket, over TCP, TLS or a unix socket.

``bridge healthcheck`` runs every few seconds for the life of a container.
With Twisted and treq each run cost 0.6 to 0.8 CPU-seconds of start-up, and
even ``http.client`` (which pulls in the ``email`` package and ``ssl``) costs
more than the rest of the probe together; one GET with ``Connection: close``
needs neither.  Nothing here may import Twisted, and ``ssl`` only for https.
"""

from __future__ import annotations

import re
import socket
import time
from typing import NamedTuple
from urllib.parse import urlsplit

#: The most of an answer kept (status line, headers and the start of the body).
ANSWER_LIMIT = 64 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*$")


class TargetError(ValueError):
    """A URL the probe cannot use (a bad argument, not an unhealthy bridge)."""


class Target(NamedTuple):
    """Where to send the GET: ``scheme`` http or https with ``host`` and
    ``port``, or unix with ``socket_path``; ``prefix`` goes before the path."""

    scheme: str
    shown: str
    host: str = "localhost"
    port: int = 0
    socket_path: str = ""
    prefix: str = ""

    def display(self, path: str) -> str:
        """How the probed address appears in the report line."""
        if self.scheme == "unix":
            return f"{self.shown} {path}"
        return self.shown.rstrip("/") + path


class Answer(NamedTuple):
    """What came back: a status and (the start of) the body, or an error."""

    status: int | None = None
    body: bytes = b""
    error: str | None = None


def parse_target(url: str) -> Target:
    """``http://HOST[:PORT][/prefix]``, ``https://...`` or ``unix:/path/to.sock``."""
    if url.startswith("unix:"):
        path = url[len("unix:"):]
        if not path.strip("/"):
            raise TargetError("no socket path")
        return Target("unix", url, socket_path=path)
    if not url.startswith(("http://", "https://")):
        raise TargetError("must start with http://, https:// or unix:")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for "port" and 99999
    except ValueError as error:
        raise TargetError(str(error) or type(error).__name__) from None
    host = parts.hostname
    if not host:
        raise TargetError("no host")
    if port == 0:
        raise TargetError("port 0 is out of range")
    try:
        _host_bytes(host)
    except UnicodeError as error:
        raise TargetError(f"host {host!r} cannot be encoded: {error}") from None
    default = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, url, host, port or default, prefix=parts.path.rstrip("/"))


def _host_bytes(host: str) -> bytes:
    # The idna codec costs more to import than the rest of the probe; an
    # ASCII host (every IP address) does not need it.
    return host.encode("ascii") if host.isascii() else host.encode("idna")


def _connect(target: Target, timeout: float) -> socket.socket:
    if target.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(target.socket_path)
        except OSError:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((target.host, target.port), timeout)
    if target.scheme != "https":
        return sock
    import ssl

    # The platform's trust store and a host name check, as a browser does.
    context = ssl.create_default_context()
    try:
        return context.wrap_socket(sock, server_hostname=target.host)
    except BaseException:
        sock.close()
        raise


def _request(target: Target, path: str, token: str | None) -> bytes:
    host = _host_bytes(target.host)
    if b":" in host:
        host = b"[" + host + b"]"
    if target.scheme != "unix":
        host += b":%d" % target.port
    lines = [
        b"GET " + (target.prefix + path).encode("utf-8") + b" HTTP/1.1",
        b"Host: " + host,
        b"User-Agent: bridge-healthcheck",
        b"Connection: close",
    ]
    if token:
        lines.append(b"Authorization: Bearer " + token.encode("utf-8"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _dechunk(body: bytes) -> bytes:
    """The data of a chunked body (as much of it as arrived)."""
    data = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        data += rest[:size]
        body = rest[size + 2:]
    return bytes(data)


def _complete(raw: bytes | bytearray) -> bool:
    """True once a Content-Length answer is all here (a server may keep the
    connection open despite ``Connection: close``; no need to wait for it)."""
    head, found, body = bytes(raw).partition(b"\r\n\r\n")
    if not found:
        return False
    match = _CONTENT_LENGTH.search(head)
    return match is not None and len(body) >= int(match.group(1))


def _parse(raw: bytes) -> Answer:
    head, found, body = raw.partition(b"\r\n\r\n")
    if not found:
        return Answer(error="the connection closed before a whole answer" if raw
                      else "the connection closed without an answer")
    status_line, *header_lines = head.split(b"\r\n")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        return Answer(error=f"not an HTTP answer: {status_line[:80]!r}")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        body = _dechunk(body)
    return Answer(status=int(match.group(1)), body=body)


def get(target: Target, path: str, timeout: float, token: str | None = None) -> Answer:
    """GET ``path``; the whole exchange (connect, send, answer) within ``timeout``."""
    deadline = time.monotonic() + timeout
    try:
        sock = _connect(target, timeout)
        with sock:
            sock.sendall(_request(target, path, token))
            raw = bytearray()
            # Connection: close, so the answer ends where the stream does.
            while len(raw) < ANSWER_LIMIT:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(ANSWER_LIMIT)
                if not chunk:
                    break
                raw += chunk
                if _complete(raw):
                    break
    except TimeoutError:
        return Answer(error=f"no answer within {timeout:g} s")
    except OSError as error:
        return Answer(error=_reason(error))
    return _parse(bytes(raw))


def _reason(error: OSError) -> str:
    verify_message = getattr(error, "verify_message", None)  # ssl.SSLCertVerificationError
    if verify_message:
        return f"certificate verify failed: {verify_message}"
    reason = getattr(error, "reason", None)  # other ssl.SSLErrors
    if isinstance(reason, str):
        return f"TLS error: {reason}"
    return error.strerror or str(error) or type(error).__name__

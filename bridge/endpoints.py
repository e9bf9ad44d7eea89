"""Turn the user's address settings into Twisted endpoints.

Twisted's endpoint strings (``tcp:``, ``tls:``, ``unix:``, ``ssl:``) are the
configuration language; on top of them we accept the ``HOST:PORT`` shorthand
that users type without thinking.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    clientFromString,
    serverFromString,
)
from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint
from twisted.internet.testing import MemoryReactor

_ENDPOINT_PREFIX = re.compile(r"^[a-zA-Z][a-zA-Z0-9+_-]*:")
# Endpoint types whose "kind:DIGITS" form must not be read as HOST:PORT.
_ENDPOINT_KINDS = frozenset({"tcp", "tcp6", "ssl", "tls", "unix", "systemd"})
_SHORTHAND = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]*)):(?P<port>[^:]+)$")


class AddressError(ValueError):
    """An address setting cannot be understood."""


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise AddressError(f"port {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise AddressError(f"port {port} is out of range 0-65535")
    return port


def split_shorthand(spec: str) -> tuple[str, int] | None:
    """Split ``HOST:PORT`` or ``[V6]:PORT``; None when ``spec`` is not one."""
    match = _SHORTHAND.match(spec)
    if match is None:
        return None
    host = match.group("v6") or match.group("host") or ""
    return host, _port(match.group("port"))


def _is_endpoint_string(spec: str) -> bool:
    """True when ``spec`` looks like ``kind:...`` rather than ``HOST:PORT``."""
    if not _ENDPOINT_PREFIX.match(spec):
        return False
    kind, _, rest = spec.partition(":")
    # "localhost:6379" is shorthand; "tcp:6379" or "unix:/path" is not.
    return kind in _ENDPOINT_KINDS or not rest.isdigit()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def server_description(spec: str) -> str:
    """Return the strports description for a ``listen`` setting."""
    spec = spec.strip()
    if not spec:
        raise AddressError("is empty")
    if spec.isdigit():
        return f"tcp:{_port(spec)}:interface=127.0.0.1"
    if _is_endpoint_string(spec):
        return spec
    parts = split_shorthand(spec)
    if parts is None:
        raise AddressError(f"{spec!r} is neither HOST:PORT nor an endpoint string")
    host, port = parts
    return f"tcp{'6' if ':' in host else ''}:{port}:interface={_escape(host or '0.0.0.0')}"


def validate_server(spec: str) -> str:
    """Check a ``listen`` setting; return its endpoint description."""
    description = server_description(spec)
    try:
        serverFromString(MemoryReactor(), description)
    except Exception as error:  # Twisted raises many kinds for bad strings
        raise AddressError(f"{description!r} is not a valid server endpoint: {error}") from None
    return description


def server_endpoint(reactor: Any, spec: str) -> IStreamServerEndpoint:
    """Build the listening endpoint for a validated ``listen`` setting."""
    endpoint: IStreamServerEndpoint = serverFromString(reactor, server_description(spec))
    return endpoint


def client_endpoint(reactor: Any, spec: str, connect_timeout: float) -> IStreamClientEndpoint:
    """Build the endpoint that reaches the upstream.

    The shorthand with a host name becomes a :class:`HostnameEndpoint`, which
    resolves the name again on every connection attempt and speaks IPv4 and
    IPv6 alike; with a literal address, a plain TCP endpoint.
    """
    spec = spec.strip()
    if not spec:
        raise AddressError("is empty")
    if _is_endpoint_string(spec):
        try:
            endpoint: IStreamClientEndpoint = clientFromString(reactor, spec)
        except Exception as error:
            raise AddressError(f"{spec!r} is not a valid client endpoint: {error}") from None
        return endpoint
    parts = split_shorthand(spec)
    if parts is None:
        raise AddressError(f"{spec!r} is neither HOST:PORT nor an endpoint string")
    host, port = parts
    if not host:
        raise AddressError(f"{spec!r} has no host name")
    if port == 0:
        raise AddressError(f"{spec!r}: port 0 cannot be connected to")
    timeout = max(1, int(connect_timeout + 0.999))
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    # A literal address needs no resolution, and HostnameEndpoint would report
    # a refused connection only at its next attempt tick (0.3 s later).
    if address.version == 6:
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)


def validate_client(spec: str) -> str:
    """Check an ``upstream`` setting without connecting anywhere."""
    client_endpoint(MemoryReactor(), spec, 1.0)
    return spec.strip()


def is_loopback_listen(spec: str) -> bool:
    """True when a ``listen`` setting only accepts connections from this host."""
    description = server_description(spec)
    kind, _, rest = description.partition(":")
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    interface = None
    for part in re.split(r"(?<!\\):", rest):
        if part.startswith("interface="):
            interface = part[len("interface=") :].replace("\\:", ":").replace("\\\\", "\\")
    if interface is None:
        return False
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False

"""Turn the user's address settings into Twisted endpoints.

Twisted's endpoint strings (``tcp:``, ``tls:``, ``unix:``, ``ssl:``) are the
configuration language; on top of them we accept the ``HOST:PORT`` shorthand
that users type without thinking.  The text side of it (no Twisted) is
:mod:`bridge.addresses`.
"""

from __future__ import annotations

import ipaddress
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

from bridge.addresses import (
    AddressError,
    is_endpoint_string,
    is_loopback_listen,
    server_description,
    split_shorthand,
)

__all__ = [
    "AddressError",
    "client_endpoint",
    "host_and_port",
    "is_loopback_listen",
    "literal_spec",
    "server_description",
    "server_endpoint",
    "split_shorthand",
    "validate_client",
    "validate_server",
]

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
    if is_endpoint_string(spec):
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


def host_and_port(spec: str) -> tuple[str, int] | None:
    """``(host, port)`` when ``spec`` is ``HOST:PORT`` with a host *name*
    (one that resolves to addresses); None for a literal IP address or an
    endpoint string, which are one address each."""
    spec = spec.strip()
    if is_endpoint_string(spec):
        return None
    parts = split_shorthand(spec)
    if parts is None or not parts[0]:
        return None
    try:
        ipaddress.ip_address(parts[0])
    except ValueError:
        return parts
    return None


def literal_spec(ip: str, port: int) -> str:
    """The ``HOST:PORT`` shorthand for a resolved IP address (IPv6 in brackets)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def validate_client(spec: str) -> str:
    """Check an ``upstream`` setting without connecting anywhere."""
    client_endpoint(MemoryReactor(), spec, 1.0)
    return spec.strip()

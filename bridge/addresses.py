"""Address settings as text: the ``HOST:PORT`` shorthand and endpoint strings.

Pure string work, no Twisted and nothing heavy (a NamedTuple rather than a
dataclass): ``bridge healthcheck`` needs to know where the bridge listens, and
it runs every few seconds in a container, where importing Twisted would cost
more CPU than the probe itself.  :mod:`bridge.endpoints`
turns the same strings into Twisted endpoints.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_ENDPOINT_PREFIX = re.compile(r"^[a-zA-Z][a-zA-Z0-9+_-]*:")
# Endpoint types whose "kind:DIGITS" form must not be read as HOST:PORT.
_ENDPOINT_KINDS = frozenset({"tcp", "tcp6", "ssl", "tls", "unix", "systemd"})
_SHORTHAND = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]*)):(?P<port>[^:]+)$")
# Positional parameters of Twisted's server string parsers, in their order.
_POSITIONAL = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "interface", "backlog"),
    "ssl": ("port", "privateKey", "certKey", "sslmethod", "interface"),
    "unix": ("address", "mode", "backlog", "lockfile"),
}


class AddressError(ValueError):
    """An address setting cannot be understood."""


def port_number(text: str) -> int:
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
    return host, port_number(match.group("port"))


def is_endpoint_string(spec: str) -> bool:
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
        return f"tcp:{port_number(spec)}:interface=127.0.0.1"
    if is_endpoint_string(spec):
        return spec
    parts = split_shorthand(spec)
    if parts is None:
        raise AddressError(f"{spec!r} is neither HOST:PORT nor an endpoint string")
    host, port = parts
    return f"tcp{'6' if ':' in host else ''}:{port}:interface={_escape(host or '0.0.0.0')}"


def _fields(text: str) -> list[tuple[str | None, str]]:
    """Split on unescaped ``:`` into ``(key, value)`` pairs (key None for a
    positional field, else the part before the first unescaped ``=``) and undo
    ``\\`` escapes, as Twisted's parser does."""
    fields: list[tuple[str | None, str]] = []
    key: str | None = None
    current = ""
    escaped = False
    for char in text + ":":
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append((key, current))
            key, current = None, ""
        elif char == "=" and key is None:
            key, current = current, ""
        else:
            current += char
    return fields


class ListenAddress(NamedTuple):
    """Where a server endpoint string listens: ``kind`` with ``port`` and
    ``interface`` (tcp, tcp6, ssl) or ``path`` (unix); None where not given."""

    kind: str
    port: str | None = None
    interface: str | None = None
    path: str | None = None


def listen_address(spec: str) -> ListenAddress:
    """Parse a ``listen`` setting (shorthand or endpoint string) into its parts."""
    kind, _, rest = server_description(spec).partition(":")
    names = _POSITIONAL.get(kind, ())
    values: dict[str, str] = {}
    position = 0
    for key, value in _fields(rest):
        if key is not None:
            values[key] = value
        elif position < len(names):
            values[names[position]] = value
            position += 1
    return ListenAddress(kind, values.get("port"), values.get("interface"), values.get("address"))


def is_loopback_listen(spec: str) -> bool:
    """True when a ``listen`` setting only accepts connections from this host."""
    address = listen_address(spec)
    if address.kind == "unix":
        return True
    if address.kind not in ("tcp", "tcp6", "ssl") or not address.interface:
        return False  # no interface: every interface
    if address.interface == "localhost":
        return True
    import ipaddress  # here: the healthcheck path never needs it

    try:
        return ipaddress.ip_address(address.interface).is_loopback
    except ValueError:
        return False

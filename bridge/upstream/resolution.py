"""The addresses a group's entries stand for, found again at every attempt.

An entry is what the user wrote in ``addresses``.  An endpoint string or a
literal IP address is one address.  ``HOST:PORT`` with a host name counts
once for every address the name resolves to *at that moment*, so that DNS
changes are followed without a restart; the name goes through the reactor's
``IHostnameResolver``, injected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from bridge.endpoints import host_and_port, literal_spec

EndpointFor = Callable[[str], IStreamClientEndpoint]


@dataclass(frozen=True)
class Target:
    """One address to connect to: its name (logs, /status, metrics) and endpoint."""

    name: str
    endpoint: IStreamClientEndpoint
    #: Position of the entry it comes from (the group's order is by entry).
    entry: int = 0


@implementer(IResolutionReceiver)
class _Collect:
    """Gathers what one resolution finds; fires ``done`` with the IP texts."""

    def __init__(self) -> None:
        self.done: Deferred[list[str]] = Deferred()
        self._found: list[str] = []

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:  # noqa: N803
        pass

    def addressResolved(self, address: IAddress) -> None:
        host = getattr(address, "host", None)
        if isinstance(host, str) and host not in self._found:
            self._found.append(host)

    def resolutionComplete(self) -> None:
        if not self.done.called:
            self.done.callback(self._found)


class Entry:
    """One configured address: fixed, or a host name to resolve.

    ``resolve=False`` keeps a host name as one address whose endpoint
    resolves it (the single ``upstream``: a HostnameEndpoint, as before groups).
    """

    def __init__(self, spec: str, position: int, endpoint_for: EndpointFor,
                 resolve: bool = True) -> None:
        self.spec = spec
        self.position = position
        self._endpoint_for = endpoint_for
        self._name = host_and_port(spec) if resolve else None
        self._fixed = None if self._name is not None else Target(
            spec, endpoint_for(spec), position)
        # One Target per resolved address, kept so that its endpoint (and so
        # its identity in tests) survives re-resolution.
        self._resolved: dict[str, Target] = {}
        self.last_error: str | None = None

    @property
    def fixed(self) -> Target | None:
        """The one Target of an entry that needs no resolution."""
        return self._fixed

    def resolve(self, resolver: IHostnameResolver | None) -> Deferred[list[Target]]:
        """The entry's addresses now (an empty list when the name resolves to none)."""
        if self._fixed is not None:
            return succeed([self._fixed])
        assert self._name is not None
        host, port = self._name
        if resolver is None:
            self.last_error = f"cannot resolve {host}: no resolver"
            return succeed([])
        collect = _Collect()
        resolver.resolveHostName(collect, host, port)

        def targets(ips: list[str]) -> list[Target]:
            self.last_error = None if ips else f"cannot resolve the host name of {self.spec}"
            found = []
            for ip in ips:
                name = f"{self.spec} ({ip})"
                target = self._resolved.get(name)
                if target is None:
                    target = self._resolved[name] = Target(
                        name, self._endpoint_for(literal_spec(ip, port)), self.position)
                found.append(target)
            return found

        return collect.done.addCallback(targets)


def resolve_all(
    entries: Sequence[Entry], resolver: IHostnameResolver | None
) -> Deferred[list[Target]]:
    """Every entry's addresses, in entry order; fails with DNSLookupError when
    there are none at all."""
    if all(entry.fixed is not None for entry in entries):
        return succeed([entry.fixed for entry in entries if entry.fixed is not None])
    everything = gatherResults([entry.resolve(resolver) for entry in entries],
                               consumeErrors=True)

    def flatten(lists: list[list[Target]]) -> list[Target] | Failure:
        found = [target for targets in lists for target in targets]
        if not found:
            names = ", ".join(entry.spec for entry in entries)
            return Failure(DNSLookupError(f"cannot resolve the host name of {names}"))
        return found

    return everything.addCallback(flatten)

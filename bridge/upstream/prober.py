"""Is an address healthy again?  Ask it with a connection of its own.

While the members of a failover group work on a later address, nothing of
theirs tells whether an earlier one is back; nor, in round robin, whether a
failed one recovered.  A probe is one connection attempt as a member would
make it (connect within ``connect_timeout``, the greeting and the handshake
when configured), then closed at once.  It carries no requests.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from bridge.upstream.connector import describe_failure
from bridge.upstream.handshake import Handshake, HandshakeError
from bridge.upstream.protocol import UpstreamProtocol
from bridge.upstream.resolution import Target


class ProbeError(Exception):
    """The probe failed; the message says why, naming the address."""


class _OneProtocol(Factory):
    noisy = False

    def __init__(self, new_protocol: Callable[[], UpstreamProtocol]) -> None:
        self._new_protocol = new_protocol

    def buildProtocol(self, addr: IAddress | None) -> UpstreamProtocol:
        return self._new_protocol()


class Prober:
    """Probes one address per call; fires None when healthy, else ProbeError."""

    def __init__(
        self,
        clock: IReactorTime,
        connect_timeout: float,
        handshake: Handshake,
        new_protocol: Callable[[], UpstreamProtocol],
    ) -> None:
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._handshake = handshake
        self._factory = _OneProtocol(new_protocol)

    def __call__(self, target: Target) -> Deferred[None]:
        attempt: Deferred[Any] = target.endpoint.connect(self._factory)
        attempt.addTimeout(self._connect_timeout, self._clock)

        def connected(protocol: UpstreamProtocol) -> Deferred[None] | None:
            if not self._handshake:
                protocol.close()
                return None
            passed = self._handshake.run(protocol)

            def close(result: object) -> object:
                protocol.close()
                return result

            return passed.addBoth(close)

        def explain(failure: Failure) -> Failure:
            if failure.check(ProbeError):
                return failure
            if failure.check(HandshakeError):
                return Failure(ProbeError(str(failure.value)))
            return Failure(ProbeError(
                describe_failure(failure, self._connect_timeout, target.name)))

        attempt.addCallback(connected).addErrback(explain)
        return attempt

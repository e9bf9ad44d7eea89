"""The endpoint a pool member's ClientService connects through.

It adds what Twisted's ClientService leaves to us:

* a connect timeout for every endpoint kind (``unix:`` and ``tls:`` too),
  driven by the injected clock;
* notifications of each attempt and its outcome, for state and logs;
* a guard between the transport and ClientService's protocol proxy.
  ClientService has no transition for a connection lost before
  ``prepareConnection`` succeeded (a failed handshake), and raises
  ``NoTransition`` from ``connectionLost``.  Until the member is ready, the
  guard delivers ``connectionLost`` to our protocol only; ClientService learns
  of the failure from ``prepareConnection``'s Deferred.
"""

from __future__ import annotations

from typing import Any, Callable
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from bridge.twisted_private import proxied_protocol
from bridge.upstream.protocol import UpstreamProtocol


class AttemptObserver(TypingProtocol):
    """What the connector reports to its pool member."""

    def attempt_started(self) -> None: ...

    def attempt_failed(self, reason: str) -> None: ...

    def protocol_built(self, protocol: UpstreamProtocol) -> None: ...


def describe_failure(failure: Failure, connect_timeout: float, address: str = "") -> str:
    """A short human reason for a failed attempt, naming the address."""
    at = f" {address}" if address else ""
    if failure.check(DeferredTimeoutError):
        return f"connecting to{at} timed out after {connect_timeout:g} s"
    if failure.check(ConnectionRefusedError):
        return f"connection refused by{at or ' the upstream'}"
    if failure.check(DNSLookupError):
        return f"cannot resolve the host name of{at or ' the upstream'}"
    value = failure.value
    text = str(value).strip() or value.__class__.__name__
    return " ".join(text.split())


@implementer(IProtocol)
class _Guard:
    """Relays to ClientService's proxy, hiding losses before readiness."""

    def __init__(self, proxy: Any, protocol: UpstreamProtocol) -> None:
        self._proxy = proxy
        self._protocol = protocol
        self.dataReceived: Callable[[bytes], None] = protocol.dataReceived

    def makeConnection(self, transport: ITransport) -> None:
        self._proxy.makeConnection(transport)

    def connectionMade(self) -> None:  # pragma: no cover - makeConnection does it
        pass

    def connectionLost(self, reason: Failure) -> None:
        if self._protocol.ready:
            self._proxy.connectionLost(reason)
        else:
            self._protocol.connectionLost(reason)


@implementer(IProtocolFactory)
class _GuardFactory:
    def __init__(self, wrapped: IProtocolFactory, observer: AttemptObserver) -> None:
        self._wrapped = wrapped
        self._observer = observer
        self.built: _Guard | None = None

    def buildProtocol(self, addr: IAddress) -> _Guard | None:
        proxy: Any = self._wrapped.buildProtocol(addr)
        if proxy is None:
            return None
        protocol: UpstreamProtocol = proxied_protocol(proxy)
        self._observer.protocol_built(protocol)
        self.built = _Guard(proxy, protocol)
        return self.built

    def doStart(self) -> None:
        self._wrapped.doStart()

    def doStop(self) -> None:
        self._wrapped.doStop()


@implementer(IStreamClientEndpoint)
class Connector:
    """Wraps the configured endpoint for one pool member."""

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        connect_timeout: float,
        observer: AttemptObserver,
        address: str = "",
    ) -> None:
        self._endpoint = endpoint
        self._address = address
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._observer = observer

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:  # noqa: N803
        self._observer.attempt_started()
        guards = _GuardFactory(protocolFactory, self._observer)
        attempt: Deferred[Any] = self._endpoint.connect(guards)
        attempt.addTimeout(self._connect_timeout, self._clock)

        def connected(guard: _Guard) -> Any:
            return guard._proxy

        def failed(failure: Failure) -> Failure:
            self._observer.attempt_failed(
                describe_failure(failure, self._connect_timeout, self._address)
            )
            return failure

        attempt.addCallbacks(connected, failed)
        return attempt

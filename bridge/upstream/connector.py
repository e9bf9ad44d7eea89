"""The endpoint a pool member's ClientService connects through.

It adds what Twisted's ClientService leaves to us:

* a connect timeout for every endpoint kind (``unix:`` and ``tls:`` too),
  driven by the injected clock;
* notifications of each attempt and its outcome, for state and logs;
* the address of each attempt, asked of the member's group
  (:mod:`bridge.upstream.group`) when the attempt starts: a group of several
  addresses is one endpoint as far as ClientService can tell;
* a guard between the transport and ClientService's protocol proxy.
  ClientService has no transition for a connection lost before
  ``prepareConnection`` succeeded (a failed handshake), and raises
  ``NoTransition`` from ``connectionLost``.  Until the member *attaches* it
  (ready), the guard delivers ``connectionLost`` to our protocol only;
  ClientService learns of the failure from ``prepareConnection``'s Deferred.
  The guard can also *detach* a ready connection: ClientService is told it
  ended (and connects anew) while the connection itself stays open to drain.
"""

from __future__ import annotations

from typing import Any, Callable
from typing import Protocol as TypingProtocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, DNSLookupError
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

from bridge.twisted_private import proxied_protocol, tell_client_service_lost
from bridge.upstream.protocol import UpstreamProtocol
from bridge.upstream.resolution import Target


class AttemptObserver(TypingProtocol):
    """What the connector reports to its pool member."""

    def attempt_started(self) -> None: ...

    def target_chosen(self, target: Target) -> None: ...

    def attempt_failed(self, reason: str, cancelled: bool) -> None: ...

    def protocol_built(self, protocol: UpstreamProtocol, guard: Guard) -> None: ...


def describe_failure(failure: Failure, connect_timeout: float, address: str) -> str:
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
class Guard:
    """Relays to ClientService's proxy the end of a connection ClientService
    counts (from :meth:`attach` to :meth:`detach`); hides it otherwise."""

    def __init__(self, proxy: Any, protocol: UpstreamProtocol) -> None:
        self._proxy = proxy
        self._protocol = protocol
        self._relayed = False
        self.dataReceived: Callable[[bytes], None] = protocol.dataReceived

    def attach(self) -> None:
        """The member is ready with this connection, and ClientService
        counts it connected from now on: its end is ClientService's news."""
        self._relayed = True

    def detach(self) -> None:
        """Tell ClientService this connection ended, so that it connects anew
        at once, while the connection stays open to drain (a member moving to
        another address or replacing an old connection).  Its real end then
        reaches our protocol only."""
        if not self._relayed:
            return
        self._relayed = False
        tell_client_service_lost(self._proxy, Failure(ConnectionDone("moved to a new connection")))

    def makeConnection(self, transport: ITransport) -> None:
        self._proxy.makeConnection(transport)

    def connectionMade(self) -> None:  # pragma: no cover - makeConnection does it
        pass

    def connectionLost(self, reason: Failure) -> None:
        if self._relayed:
            self._proxy.connectionLost(reason)
        else:
            self._protocol.connectionLost(reason)


@implementer(IProtocolFactory)
class _GuardFactory:
    def __init__(self, wrapped: IProtocolFactory, observer: AttemptObserver) -> None:
        self._wrapped = wrapped
        self._observer = observer
        self.built: Guard | None = None

    def buildProtocol(self, addr: IAddress) -> Guard | None:
        proxy: Any = self._wrapped.buildProtocol(addr)
        if proxy is None:
            return None
        protocol: UpstreamProtocol = proxied_protocol(proxy)
        self.built = Guard(proxy, protocol)
        self._observer.protocol_built(protocol, self.built)
        return self.built

    def doStart(self) -> None:
        self._wrapped.doStart()

    def doStop(self) -> None:
        self._wrapped.doStop()


@implementer(IStreamClientEndpoint)
class Connector:
    """The endpoint of one pool member: each attempt goes to the address its
    group chooses then."""

    def __init__(
        self,
        choose: Callable[[], Deferred[Target]],
        clock: IReactorTime,
        connect_timeout: float,
        observer: AttemptObserver,
        label: str,
    ) -> None:
        self._choose = choose
        self._label = label
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._observer = observer

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:  # noqa: N803
        self._observer.attempt_started()
        guards = _GuardFactory(protocolFactory, self._observer)
        address = [self._label]

        def connect_to(target: Target) -> Deferred[Any]:
            address[0] = target.name
            self._observer.target_chosen(target)
            connecting: Deferred[Any] = target.endpoint.connect(guards)
            return connecting

        attempt: Deferred[Any] = self._choose().addCallback(connect_to)
        attempt.addTimeout(self._connect_timeout, self._clock)

        def connected(guard: Guard) -> Any:
            return guard._proxy

        def failed(failure: Failure) -> Failure:
            self._observer.attempt_failed(
                describe_failure(failure, self._connect_timeout, address[0]),
                cancelled=bool(failure.check(CancelledError)),
            )
            return failure

        attempt.addCallbacks(connected, failed)
        return attempt

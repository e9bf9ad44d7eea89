"""Every use of Twisted's private or undocumented attributes, in one place.

The bridge needs a few things Twisted has no public API for: how many bytes a
transport still holds, how much it sends per reactor iteration, handing an
answer to the kernel at once when nothing is waiting before it, which
protocol ClientService's proxy wraps, and how to tell ClientService that its
connection ended while the connection itself stays open.  They live here so that a Twisted
upgrade that changes them breaks one module, and ``tests/test_twisted_private.py``
fails loudly instead of the bridge quietly misjudging congestion.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.tcp import Connection
from twisted.python.failure import Failure


def innermost_transport(transport: object) -> object:
    """The socket transport under any TLS layers (TLSMemoryBIOProtocol
    keeps the one it wraps in ``transport``)."""
    for _ in range(4):
        inner = getattr(transport, "transport", None)
        if inner is None or hasattr(transport, "socket"):
            break
        transport = inner
    return transport


def unsent_bytes(transport: object) -> int:
    """Bytes written to ``transport`` and not yet handed to the kernel.

    ``FileDescriptor`` keeps them in ``dataBuffer`` (from ``offset`` on) and,
    not yet joined, ``_tempDataLen`` bytes in ``_tempDataBuffer``.
    """
    inner = innermost_transport(transport)
    buffered = getattr(inner, "dataBuffer", b"")
    offset = getattr(inner, "offset", 0)
    temporary = getattr(inner, "_tempDataLen", 0)
    try:
        return max(0, len(buffered) - offset + temporary)
    except TypeError:  # not a FileDescriptor (a test transport)
        return 0


def tune_send_buffer(transport: object, high_water: int) -> None:
    """Pause the producer at ``bufferSize`` (64 KiB, also the recv() size, so
    only lowered) and let one reactor iteration send up to ``high_water``
    (``SEND_LIMIT`` is 128 KiB: with many bulk requests per iteration the
    buffer would fill even for a fast peer)."""
    inner: Any = innermost_transport(transport)
    if getattr(inner, "bufferSize", 0) > high_water:
        inner.bufferSize = high_water
    if getattr(inner, "SEND_LIMIT", high_water) < high_water:
        inner.SEND_LIMIT = high_water


def write_now(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, but sent at once when nothing is waiting
    before it, as asyncio's transports do.

    ``FileDescriptor.write`` always buffers and asks the reactor for a
    writable event (``epoll_ctl`` on, a reactor dispatch, ``send()``,
    ``epoll_ctl`` off): for a small answer that costs more than the answer
    itself.  Here a plain TCP connection (no TLS, not closing, nothing
    buffered) gets ``writeSomeData`` directly; what the kernel does not take,
    and every other case, goes through ``write`` as usual, after anything
    already buffered, so the order of bytes and Twisted's own handling of
    congestion (producers) and of a lost connection stay as they are.
    """
    if (
        getattr(type(transport), "writeSomeData", None) is Connection.writeSomeData
        and not getattr(transport, "TLS", True)
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and not transport._writeDisconnected
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):  # else an exception: write() will meet it again
            if sent >= len(data):
                return
            data = data[sent:]
    transport.write(data)


def proxied_protocol(proxy: object) -> Any:
    """The protocol ClientService's ``_ReconnectingProtocolProxy`` wraps."""
    return proxy._protocol  # type: ignore[attr-defined]


def tell_client_service_lost(proxy: object, reason: Failure) -> None:
    """Tell ClientService its connection ended (it waits for its retry
    policy's delay, then connects anew) without closing the connection: the
    notification ``_ReconnectingProtocolProxy`` calls from ``connectionLost``,
    kept in ``_lostNotification``."""
    proxy._lostNotification(reason)  # type: ignore[attr-defined]

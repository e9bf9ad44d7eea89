"""Every use of Twisted's private or undocumented attributes, in one place.

The bridge needs a few things Twisted has no public API for: how many bytes a
transport still holds, how much it sends per reactor iteration, which
protocol ClientService's proxy wraps, and how to tell ClientService that its
connection ended while the connection itself stays open.  They live here so that a Twisted
upgrade that changes them breaks one module, and ``tests/test_twisted_private.py``
fails loudly instead of the bridge quietly misjudging congestion.
"""

from __future__ import annotations

from typing import Any

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


def proxied_protocol(proxy: object) -> Any:
    """The protocol ClientService's ``_ReconnectingProtocolProxy`` wraps."""
    return proxy._protocol  # type: ignore[attr-defined]


def tell_client_service_lost(proxy: object, reason: Failure) -> None:
    """Tell ClientService its connection ended (it waits for its retry
    policy's delay, then connects anew) without closing the connection: the
    notification ``_ReconnectingProtocolProxy`` calls from ``connectionLost``,
    kept in ``_lostNotification``."""
    proxy._lostNotification(reason)  # type: ignore[attr-defined]

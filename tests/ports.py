"""Loopback addresses and ports for tests that open real sockets."""

from __future__ import annotations

import os
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"

__all__ = ["LOOPBACK", "accepting", "free_port", "unused_port"]


def free_port() -> int:
    """A TCP port free on the loopback address right now (nothing listens on
    it: also the port of a server that is down)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def accepting(port: int) -> bool:
    """Whether something accepts TCP connections on ``LOOPBACK:port`` now."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def unused_port() -> int:
    """A free loopback TCP port *outside* the kernel's ephemeral range.

    For an upstream that will be down for a while (stopped, restarted, or not
    started yet) while a client keeps reconnecting to it: connecting to a
    free port of the ephemeral range can pick that very port as the source
    port and connect the socket to itself (TCP simultaneous open), after which
    the port cannot be listened on.  A port below the range cannot be chosen
    as a source port.
    """
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    start, stop = (10000, low) if low > 11000 else (low, 65536)
    # Derive a starting point from the pid so parallel runs rarely collide.
    offset = os.getpid() * 7919
    span = stop - start
    for attempt in range(span):
        port = start + (offset + attempt * 97) % span
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            continue
        finally:
            probe.close()
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")

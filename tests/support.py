"""Compatibility re-exports for the real-process test helpers, which live in
modules of their own, one job each; import from those in new code:

* :mod:`tests.waiting`: ``wait_for`` (reactor), ``wait_until`` (blocking),
  ``concurrently``;
* :mod:`tests.ports`: ``LOOPBACK``, ``free_port``, ``unused_port``;
* :mod:`tests.line_server`: ``LineServer``, the real upstream of the tests;
* :mod:`tests.bridge_process`: ``BridgeProcess``, the bridge as a real process;
* :mod:`tests.http_client`: ``BridgeClient`` (treq) and its ``Reply``;
* :mod:`tests.events_client`: ``RawEventClient`` for ``GET /events``;
* :mod:`tests.base`: ``BridgeTestCase``, one bridge process per test class.
"""

from __future__ import annotations

from tests.base import BridgeTestCase
from tests.bridge_process import REPO, BridgeProcess
from tests.events_client import RawEventClient, SSEEvent, parse_sse_block
from tests.http_client import BridgeClient, Reply, reactor
from tests.line_server import CRLF, LineServer, ServerConnection
from tests.ports import LOOPBACK, free_port, unused_port
from tests.waiting import concurrently, wait_for, wait_until

__all__ = [
    "CRLF",
    "LOOPBACK",
    "REPO",
    "BridgeClient",
    "BridgeProcess",
    "BridgeTestCase",
    "LineServer",
    "RawEventClient",
    "Reply",
    "SSEEvent",
    "ServerConnection",
    "concurrently",
    "free_port",
    "parse_sse_block",
    "reactor",
    "unused_port",
    "wait_for",
    "wait_until",
]

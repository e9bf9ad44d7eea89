"""A tiny line server for ``bridge --demo``: logs each line, answers each one.

It exists so that a newcomer sees the whole path working with no other
server: ``POST /send`` lines show up in the log, ``POST /request`` gets
``OK <line>`` back for every line.  One command answers several lines, to
show reply framing: ``LIST`` answers three item lines, then ``OK LIST``
(``--reply-framing terminator --reply-terminator '^OK '`` groups them).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger


class DemoLineServer(Protocol):
    log = Logger(namespace="bridge.app.demo")

    def __init__(self) -> None:
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > 1024 * 1024:
            self._buffer = b""
            assert self.transport is not None
            self.transport.loseConnection()
            return
        replies = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            self.log.info("demo upstream received {line!r}", line=line)
            if line == b"LIST":
                replies.append(b"item 1\r\nitem 2\r\nitem 3\r\n")
            replies.append(b"OK " + line + b"\r\n")
        if replies:
            assert self.transport is not None
            self.transport.write(b"".join(replies))


class DemoFactory(Factory):
    noisy = False
    protocol = DemoLineServer


def listen_demo(reactor: Any, port: int = 0) -> IListeningPort:
    """Start the demo server on loopback; returns the listening port."""
    listening: IListeningPort = reactor.listenTCP(port, DemoFactory(), interface="127.0.0.1")
    return listening

"""The demo upstream of ``bridge --demo``."""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from bridge.app.demo import DemoFactory


class DemoServerTests(SynchronousTestCase):
    def connect(self) -> tuple[object, StringTransport]:
        protocol = DemoFactory().buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_every_line_is_answered_ok(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"PING\r\nhello world\n")  # type: ignore[attr-defined]
        self.assertEqual(transport.value(), b"OK PING\r\nOK hello world\r\n")

    def test_list_answers_several_lines_then_ok(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"LIST\r\nPING\r\n")  # type: ignore[attr-defined]
        self.assertEqual(transport.value(),
                         b"item 1\r\nitem 2\r\nitem 3\r\nOK LIST\r\nOK PING\r\n")

    def test_a_line_split_across_reads(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(b"LI")  # type: ignore[attr-defined]
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(b"ST\n")  # type: ignore[attr-defined]
        self.assertEqual(transport.value(), b"item 1\r\nitem 2\r\nitem 3\r\nOK LIST\r\n")

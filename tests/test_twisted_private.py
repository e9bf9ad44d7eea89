"""The Twisted internals bridge.twisted_private relies on are still there.

These fail loudly when a Twisted upgrade renames or removes one of them; the
bridge itself reads them with defaults, and would otherwise quietly stop
seeing congestion (a never-reading upstream could then buffer without bound).
"""

from __future__ import annotations

import socket

import twisted
from twisted.application._client_service import _ReconnectingProtocolProxy
from twisted.application.internet import ClientService
from twisted.internet import abstract, tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from bridge.twisted_private import (
    innermost_transport,
    proxied_protocol,
    tell_client_service_lost,
    tune_send_buffer,
    unsent_bytes,
    write_now,
)


class FileDescriptorInternalsTests(SynchronousTestCase):
    def test_the_buffer_attributes_exist_with_the_meaning_we_read(self) -> None:
        descriptor = abstract.FileDescriptor(MemoryReactorClock())
        for name in ("dataBuffer", "offset", "_tempDataBuffer", "_tempDataLen", "bufferSize",
                     "SEND_LIMIT"):
            self.assertTrue(hasattr(descriptor, name), f"Twisted {twisted.__version__}: "
                            f"FileDescriptor.{name} is gone; see bridge/twisted_private.py")
        self.assertEqual(unsent_bytes(descriptor), 0)
        descriptor.connected = True
        descriptor.startWriting = lambda: None  # type: ignore[method-assign]
        descriptor.write(b"x" * 10)  # goes to _tempDataBuffer until doWrite
        self.assertEqual(descriptor._tempDataLen, 10)
        self.assertEqual(unsent_bytes(descriptor), 10)

    def test_tcp_connections_are_file_descriptors_with_a_socket(self) -> None:
        self.assertTrue(issubclass(tcp.Connection, abstract.FileDescriptor))
        one, other = socket.socketpair()
        self.addCleanup(one.close)
        self.addCleanup(other.close)
        connection = tcp.Connection(one, Protocol(), MemoryReactorClock())
        self.assertIs(connection.socket, one)  # how innermost_transport finds the bottom
        self.assertIs(innermost_transport(connection), connection)

    def test_tune_send_buffer(self) -> None:
        descriptor = abstract.FileDescriptor(MemoryReactorClock())
        defaults = (descriptor.bufferSize, descriptor.SEND_LIMIT)
        self.assertEqual(defaults, (2**16, 128 * 1024))
        tune_send_buffer(descriptor, 1024 * 1024)
        self.assertEqual((descriptor.bufferSize, descriptor.SEND_LIMIT), (2**16, 1024 * 1024))
        tune_send_buffer(descriptor, 1000)
        self.assertEqual(descriptor.bufferSize, 1000)

    def test_tls_keeps_the_wrapped_transport_in_transport(self) -> None:
        self.assertIn("transport", dir(TLSMemoryBIOProtocol))

        class Socketish:
            socket = object()

        class Layer:
            def __init__(self, transport: object) -> None:
                self.transport = transport

        bottom = Socketish()
        self.assertIs(innermost_transport(Layer(Layer(bottom))), bottom)


class WriteNowTests(SynchronousTestCase):
    """write_now on a real socket pair: at once when nothing waits, else
    through write() behind what waits; Twisted's buffer attributes as read."""

    def connection(self) -> tuple[tcp.Connection, socket.socket, MemoryReactorClock]:
        one, other = socket.socketpair()
        one.setblocking(False)
        other.setblocking(False)
        self.addCleanup(one.close)
        self.addCleanup(other.close)
        reactor = MemoryReactorClock()
        connection = tcp.Connection(one, Protocol(), reactor)
        connection.connected = True
        self.assertIs(type(connection).writeSomeData, tcp.Connection.writeSomeData)
        self.assertFalse(connection.TLS)
        for name in ("disconnecting", "_writeDisconnecting", "_writeDisconnected"):
            self.assertIs(bool(getattr(connection, name)), False, name)
        return connection, other, reactor

    def test_nothing_buffered_goes_to_the_kernel_at_once(self) -> None:
        connection, other, reactor = self.connection()
        write_now(connection, b"HTTP/1.1 202 Accepted\r\n")
        self.assertEqual(other.recv(100), b"HTTP/1.1 202 Accepted\r\n")
        self.assertEqual(unsent_bytes(connection), 0)
        self.assertEqual(reactor.getWriters(), [])  # no writable event asked for

    def test_behind_buffered_bytes_it_waits_its_turn(self) -> None:
        connection, other, reactor = self.connection()
        connection.write(b"first ")
        write_now(connection, b"second")
        self.assertRaises(BlockingIOError, other.recv, 100)
        self.assertEqual(unsent_bytes(connection), 12)
        self.assertEqual(reactor.getWriters(), [connection])
        connection.doWrite()
        self.assertEqual(other.recv(100), b"first second")

    def test_what_the_kernel_does_not_take_is_buffered(self) -> None:
        connection, other, reactor = self.connection()
        connection.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        data = bytes(range(256)) * 4096  # 1 MiB: more than the socket takes
        write_now(connection, data)
        left = unsent_bytes(connection)
        self.assertGreater(left, 0)
        self.assertLess(left, len(data))
        self.assertEqual(reactor.getWriters(), [connection])
        received = bytearray()
        while len(received) < len(data):
            try:
                received += other.recv(1 << 16)
            except BlockingIOError:
                connection.doWrite()
        self.assertEqual(bytes(received), data)

    def test_a_closing_connection_takes_the_ordinary_way(self) -> None:
        connection, other, reactor = self.connection()
        connection.disconnecting = True
        write_now(connection, b"late")
        self.assertRaises(BlockingIOError, other.recv, 100)
        self.assertEqual(unsent_bytes(connection), 4)
        self.assertEqual(reactor.getWriters(), [connection])

    def test_a_lost_peer_is_left_to_write_and_doWrite(self) -> None:
        connection, other, _ = self.connection()
        other.close()
        write_now(connection, b"answer")  # the kernel says EPIPE: buffered
        self.assertEqual(unsent_bytes(connection), 6)
        self.assertIsInstance(connection.doWrite(), Exception)  # Twisted's CONNECTION_LOST

    def test_other_transports_get_write(self) -> None:
        transport = StringTransport()
        write_now(transport, b"answer")
        self.assertEqual(transport.value(), b"answer")


class ClientServiceInternalsTests(SynchronousTestCase):
    def test_the_proxy_keeps_its_protocol_in_protocol(self) -> None:
        protocol = Protocol()
        proxy = _ReconnectingProtocolProxy(protocol, lambda reason: None)
        self.assertIs(proxied_protocol(proxy), protocol)
        self.assertTrue(ClientService)  # the public class this proxy belongs to

    def test_the_proxy_tells_client_service_of_a_loss_through_lost_notification(self) -> None:
        heard: list[Failure] = []
        proxy = _ReconnectingProtocolProxy(Protocol(), heard.append)
        reason = Failure(ConnectionDone("moved"))
        tell_client_service_lost(proxy, reason)
        self.assertEqual(heard, [reason])

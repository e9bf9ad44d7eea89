"""Address settings to Twisted endpoints (bridge.endpoints)."""

from __future__ import annotations

from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from bridge.endpoints import (
    AddressError,
    client_endpoint,
    is_loopback_listen,
    server_description,
    split_shorthand,
    validate_client,
    validate_server,
)


class ServerDescriptionTests(SynchronousTestCase):
    def test_shorthand(self) -> None:
        cases = {
            "127.0.0.1:8080": "tcp:8080:interface=127.0.0.1",
            "0.0.0.0:80": "tcp:80:interface=0.0.0.0",
            "localhost:8080": "tcp:8080:interface=localhost",
            "[::1]:8080": "tcp6:8080:interface=\\:\\:1",
            "[::]:0": "tcp6:0:interface=\\:\\:",
            ":8080": "tcp:8080:interface=0.0.0.0",
            "  127.0.0.1:8080\n": "tcp:8080:interface=127.0.0.1",
        }
        for spec, description in cases.items():
            self.assertEqual(server_description(spec), description, spec)

    def test_bare_port_listens_on_loopback_only(self) -> None:
        self.assertEqual(server_description("8080"), "tcp:8080:interface=127.0.0.1")

    def test_endpoint_strings_pass_through(self) -> None:
        for spec in (
            "tcp:8080",
            "tcp6:8080",
            "tcp:8080:interface=127.0.0.1",
            "tcp:port=8080:interface=127.0.0.1",
            "unix:/run/bridge.sock",
            "unix:/run/bridge.sock:mode=660",
        ):
            self.assertEqual(server_description(spec), spec)

    def test_empty(self) -> None:
        with self.assertRaises(AddressError) as caught:
            server_description("   ")
        self.assertEqual(str(caught.exception), "is empty")

    def test_neither_shorthand_nor_endpoint(self) -> None:
        with self.assertRaises(AddressError) as caught:
            server_description("bogus")
        self.assertEqual(
            str(caught.exception), "'bogus' is neither HOST:PORT nor an endpoint string"
        )

    def test_port_out_of_range(self) -> None:
        with self.assertRaises(AddressError) as caught:
            server_description("127.0.0.1:65536")
        self.assertEqual(str(caught.exception), "port 65536 is out of range 0-65535")
        with self.assertRaises(AddressError) as caught:
            server_description("99999")
        self.assertEqual(str(caught.exception), "port 99999 is out of range 0-65535")


class SplitShorthandTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(split_shorthand("example.com:6379"), ("example.com", 6379))
        self.assertEqual(split_shorthand("[::1]:6379"), ("::1", 6379))
        self.assertEqual(split_shorthand(":6379"), ("", 6379))
        self.assertIsNone(split_shorthand("::1:6379"))
        self.assertIsNone(split_shorthand("example.com"))

    def test_port_not_a_number(self) -> None:
        with self.assertRaises(AddressError) as caught:
            split_shorthand("[::1]:http")
        self.assertEqual(str(caught.exception), "port 'http' is not a number")


class ValidateServerTests(SynchronousTestCase):
    def test_returns_the_description(self) -> None:
        self.assertEqual(validate_server("127.0.0.1:0"), "tcp:0:interface=127.0.0.1")
        self.assertEqual(validate_server("[::1]:8080"), "tcp6:8080:interface=\\:\\:1")
        self.assertEqual(validate_server("tcp:8080"), "tcp:8080")
        self.assertEqual(validate_server("unix:/tmp/bridge.sock"), "unix:/tmp/bridge.sock")

    def test_unknown_endpoint_type(self) -> None:
        with self.assertRaises(AddressError) as caught:
            validate_server("nope:x=1")
        self.assertTrue(
            str(caught.exception).startswith("'nope:x=1' is not a valid server endpoint: "),
            str(caught.exception),
        )

    def test_bad_endpoint_arguments(self) -> None:
        with self.assertRaises(AddressError) as caught:
            validate_server("tcp:notaport")
        self.assertTrue(
            str(caught.exception).startswith("'tcp:notaport' is not a valid server endpoint: "),
            str(caught.exception),
        )


def connect(spec: str, connect_timeout: float) -> MemoryReactorClock:
    """Connect the endpoint for ``spec`` on a memory reactor and return it."""
    reactor = MemoryReactorClock()
    client_endpoint(reactor, spec, connect_timeout).connect(Factory.forProtocol(Protocol))
    reactor.advance(0)
    return reactor


class ClientEndpointTests(SynchronousTestCase):
    def test_shorthand_is_a_hostname_endpoint(self) -> None:
        endpoint = client_endpoint(MemoryReactorClock(), "localhost:6379", 5.0)
        self.assertIsInstance(endpoint, HostnameEndpoint)
        self.assertEqual(repr(endpoint), "<HostnameEndpoint localhost:6379>")

    def test_ipv6_shorthand(self) -> None:
        endpoint = client_endpoint(MemoryReactorClock(), "[::1]:6379", 5.0)
        self.assertIsInstance(endpoint, TCP6ClientEndpoint)
        self.assertEqual((endpoint._host, endpoint._port), ("::1", 6379))

    def test_literal_ipv4_shorthand_is_a_plain_tcp_endpoint(self) -> None:
        """No resolution, and a refused connection is reported at once
        (HostnameEndpoint would wait for its next 0.3 s attempt tick)."""
        endpoint = client_endpoint(MemoryReactorClock(), "127.0.0.1:6379", 5.0)
        self.assertIsInstance(endpoint, TCP4ClientEndpoint)

    def test_shorthand_connects_with_the_connect_timeout(self) -> None:
        reactor = connect("127.0.0.1:6379", 5.0)
        [(host, port, _, timeout, bind)] = reactor.tcpClients
        self.assertEqual((host, port, timeout, bind), ("127.0.0.1", 6379, 5, None))

    def test_fractional_connect_timeout_rounds_up(self) -> None:
        [(_, _, _, timeout, _)] = connect("127.0.0.1:6379", 2.5).tcpClients
        self.assertEqual(timeout, 3)
        [(_, _, _, timeout, _)] = connect("127.0.0.1:6379", 0.1).tcpClients
        self.assertEqual(timeout, 1)

    def test_tcp_endpoint_string(self) -> None:
        endpoint = client_endpoint(MemoryReactorClock(), "tcp:host=127.0.0.1:port=6379", 5.0)
        self.assertIsInstance(endpoint, TCP4ClientEndpoint)
        [(host, port, _, _, _)] = connect("tcp:127.0.0.1:6379", 5.0).tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 6379))

    def test_tls_endpoint_string_connects_over_tcp(self) -> None:
        [(host, port, _, _, _)] = connect("tls:127.0.0.1:6380", 5.0).tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 6380))

    def test_unix_endpoint_string(self) -> None:
        endpoint = client_endpoint(MemoryReactorClock(), "unix:/run/redis.sock", 5.0)
        self.assertIsInstance(endpoint, UNIXClientEndpoint)
        [(path, _, _, _)] = connect("unix:/run/redis.sock", 5.0).unixClients
        self.assertEqual(path, "/run/redis.sock")

    def test_errors(self) -> None:
        cases = {
            "": "is empty",
            "redis": "'redis' is neither HOST:PORT nor an endpoint string",
            ":6379": "':6379' has no host name",
            "localhost:0": "'localhost:0': port 0 cannot be connected to",
            "localhost:65536": "port 65536 is out of range 0-65535",
            "[::1]:x": "port 'x' is not a number",
        }
        for spec, message in cases.items():
            with self.assertRaises(AddressError) as caught:
                client_endpoint(MemoryReactorClock(), spec, 5.0)
            self.assertEqual(str(caught.exception), message, spec)

    def test_bad_endpoint_strings(self) -> None:
        for spec in ("nope:x=1", "tcp:host=example.com", "tcp:6379", "tls:"):
            with self.assertRaises(AddressError) as caught:
                client_endpoint(MemoryReactorClock(), spec, 5.0)
            self.assertTrue(
                str(caught.exception).startswith(f"{spec!r} is not a valid client endpoint: "),
                str(caught.exception),
            )


class ValidateClientTests(SynchronousTestCase):
    def test_returns_the_stripped_spec(self) -> None:
        self.assertEqual(validate_client("  localhost:6379 \n"), "localhost:6379")
        self.assertEqual(validate_client("[::1]:6379"), "[::1]:6379")
        self.assertEqual(validate_client("unix:/run/redis.sock"), "unix:/run/redis.sock")

    def test_rejects_what_client_endpoint_rejects(self) -> None:
        with self.assertRaises(AddressError) as caught:
            validate_client("localhost:99999")
        self.assertEqual(str(caught.exception), "port 99999 is out of range 0-65535")


class IsLoopbackListenTests(SynchronousTestCase):
    def test_loopback(self) -> None:
        for spec in (
            "127.0.0.1:8080",
            "127.1.2.3:8080",
            "[::1]:8080",
            "localhost:8080",
            "8080",
            "unix:/run/bridge.sock",
            "tcp:8080:interface=127.0.0.1",
            "tcp6:8080:interface=\\:\\:1",
        ):
            self.assertTrue(is_loopback_listen(spec), spec)

    def test_not_loopback(self) -> None:
        for spec in (
            "0.0.0.0:8080",
            ":8080",
            "[::]:8080",
            "203.0.113.7:8080",
            "[2001:db8::1]:8080",
            "example.com:8080",
            "tcp:8080",
            "tcp6:8080",
            "tcp:8080:interface=0.0.0.0",
            "systemd:domain=INET:index=0",
        ):
            self.assertFalse(is_loopback_listen(spec), spec)


class ListenAddressTests(SynchronousTestCase):
    """The parts of a listen setting, read the way Twisted's parser reads them."""

    def test_forms(self) -> None:
        from bridge.addresses import ListenAddress, listen_address

        cases = {
            "127.0.0.1:8080": ListenAddress("tcp", "8080", "127.0.0.1"),
            "[::1]:81": ListenAddress("tcp6", "81", "::1"),
            "9000": ListenAddress("tcp", "9000", "127.0.0.1"),
            "tcp:8080": ListenAddress("tcp", "8080"),
            "tcp:8080:127.0.0.2": ListenAddress("tcp", "8080", "127.0.0.2"),
            "tcp:port=8080:interface=127.0.0.2": ListenAddress("tcp", "8080", "127.0.0.2"),
            "ssl:8443:privateKey=k\\:x.pem:certKey=c.pem:interface=127.0.0.1":
                ListenAddress("ssl", "8443", "127.0.0.1"),
            "unix:/run/b.sock": ListenAddress("unix", path="/run/b.sock"),
            "unix:/run/a\\:b.sock:mode=660": ListenAddress("unix", path="/run/a:b.sock"),
            "unix:address=/run/b.sock:lockfile=1": ListenAddress("unix", path="/run/b.sock"),
            "systemd:domain=INET:index=0": ListenAddress("systemd"),
        }
        for spec, expected in cases.items():
            self.assertEqual(listen_address(spec), expected, spec)

    def test_positional_interface_is_loopback(self) -> None:
        self.assertTrue(is_loopback_listen("tcp:8080:127.0.0.1"))
        self.assertFalse(is_loopback_listen("tcp:8080:0.0.0.0"))

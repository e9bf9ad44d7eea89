"""TLS on both sides, end to end: the bridge listens with an ``ssl:`` endpoint
and reaches its upstream through a ``tls:`` endpoint.  The certificate is
generated inside the test; no private key is committed."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import treq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool


def write_certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate for localhost / 127.0.0.1; returns (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


class Recorder(Protocol):
    """Upstream: records bytes, answers each line with ``OK <line>``."""

    def __init__(self, received: list[bytes]) -> None:
        self.received = received
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        lines = (self.buffer + data).split(b"\r\n")
        self.buffer = lines.pop()
        for line in lines:
            assert self.transport is not None
            self.transport.write(b"OK " + line + b"\r\n")


class TLSBothSidesTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_https_listen_and_tls_upstream(self):  # type: ignore[no-untyped-def]
        directory = tempfile.mkdtemp(prefix="bridge-tls-")
        self.addCleanup(shutil.rmtree, directory, True)
        roots = os.path.join(directory, "roots")
        os.mkdir(roots)
        cert_path, key_path = write_certificate(directory)
        shutil.copy(cert_path, os.path.join(roots, "ca.pem"))

        received: list[bytes] = []
        factory = Factory.forProtocol(lambda: Recorder(received))
        upstream = yield serverFromString(
            reactor, f"ssl:0:privateKey={key_path}:certKey={cert_path}:interface=127.0.0.1"
        ).listen(factory)
        self.addCleanup(upstream.stopListening)
        upstream_port = upstream.getHost().port

        log_path = os.path.join(directory, "bridge.log")
        with open(log_path, "wb") as log:
            bridge = subprocess.Popen(
                [sys.executable, "-m", "bridge",
                 "--listen", f"ssl:0:privateKey={key_path}:certKey={cert_path}"
                             ":interface=127.0.0.1",
                 "--upstream", f"tls:localhost:{upstream_port}:trustRoots={roots}",
                 "--backoff-initial", "0.05", "--backoff-max", "0.2"],
                stdout=log, stderr=subprocess.STDOUT,
            )

        def stop() -> None:
            if bridge.poll() is None:
                bridge.kill()
            bridge.wait(10)

        self.addCleanup(stop)

        port = yield self._poll(lambda: self._listening_port(log_path), "the bridge to listen")
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        with open(cert_path, "rb") as handle:
            policy = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(handle.read()))
        client = treq.client.HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))
        base = f"https://localhost:{port}"

        @inlineCallbacks
        def ready():  # type: ignore[no-untyped-def]
            response = yield client.get(base + "/readyz")
            yield treq.content(response)
            return response.code == 200

        yield self._poll_deferred(ready, "the bridge to connect over TLS")

        response = yield client.post(base + "/send", data=b"hello\nworld\n")
        self.assertEqual(response.code, 202)
        self.assertEqual((yield treq.json_content(response)), {"sent": 2})
        response = yield client.post(base + "/request", data=b"ping\n")
        self.assertEqual(response.code, 200)
        self.assertEqual((yield treq.json_content(response)), {"replies": ["OK ping"]})
        self.assertEqual(b"".join(received), b"hello\r\nworld\r\nping\r\n")

        bridge.send_signal(signal.SIGTERM)
        code = yield self._poll(lambda: bridge.poll() is not None, "the bridge to exit")
        self.assertTrue(code)
        self.assertEqual(bridge.returncode, 0)

    @staticmethod
    def _listening_port(log_path: str) -> int | None:
        with open(log_path, encoding="utf-8") as handle:
            for line in handle:
                if "listening on https://127.0.0.1:" in line:
                    return int(line.rsplit(":", 1)[1].strip().rstrip("/"))
        return None

    @inlineCallbacks
    def _poll(self, check, what: str, limit: float = 15.0):  # type: ignore[no-untyped-def]
        deadline = reactor.seconds() + limit
        while reactor.seconds() < deadline:
            value = check()
            if value:
                return value
            yield deferLater(reactor, 0.02, lambda: None)
        self.fail(f"timed out waiting for {what}")

    @inlineCallbacks
    def _poll_deferred(self, check, what: str, limit: float = 15.0):  # type: ignore[no-untyped-def]
        deadline = reactor.seconds() + limit
        while reactor.seconds() < deadline:
            try:
                value = yield check()
            except Exception:
                value = False
            if value:
                return value
            yield deferLater(reactor, 0.02, lambda: None)
        self.fail(f"timed out waiting for {what}")




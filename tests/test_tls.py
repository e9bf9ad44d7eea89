"""TLS on both sides, end to end: the bridge listens with an ``ssl:`` endpoint
and reaches its upstream through a ``tls:`` endpoint.  The certificate is
generated inside the test; no private key is committed."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate
from twisted.trial.unittest import TestCase

from tests.bridge_process import BridgeProcess
from tests.http_client import BridgeClient, reactor
from tests.waiting import wait_for


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

    async def test_https_listen_and_tls_upstream(self) -> None:
        directory = tempfile.mkdtemp(prefix="bridge-tls-")
        self.addCleanup(shutil.rmtree, directory, True)
        roots = os.path.join(directory, "roots")
        os.mkdir(roots)
        cert_path, key_path = write_certificate(directory)
        shutil.copy(cert_path, os.path.join(roots, "ca.pem"))

        received: list[bytes] = []
        factory = Factory.forProtocol(lambda: Recorder(received))
        upstream = await serverFromString(
            reactor, f"ssl:0:privateKey={key_path}:certKey={cert_path}:interface=127.0.0.1"
        ).listen(factory)
        self.addCleanup(upstream.stopListening)
        upstream_port = upstream.getHost().port

        bridge = BridgeProcess.bridge(
            "--listen", f"ssl:0:privateKey={key_path}:certKey={cert_path}:interface=127.0.0.1",
            "--upstream", f"tls:localhost:{upstream_port}:trustRoots={roots}",
            "--backoff-initial", "0.05", "--backoff-max", "0.2",
        )
        self.addCleanup(bridge.stop)
        port = await bridge.wait_listening()
        self.assertEqual(bridge.url, f"https://127.0.0.1:{port}")
        with open(cert_path, "rb") as handle:
            trust = Certificate.loadPEM(handle.read())
        client = BridgeClient(f"https://localhost:{port}", persistent=False, trust=trust)
        self.addCleanup(client.close)

        async def ready() -> bool:
            return (await client.get("/readyz")).status == 200

        await wait_for(ready, what="the bridge to connect over TLS", timeout=15,
                       context=bridge.describe)

        reply = await client.post("/send", b"hello\nworld\n")
        self.assertEqual((reply.status, reply.json()), (202, {"sent": 2}))
        reply = await client.post("/request", b"ping\n")
        self.assertEqual((reply.status, reply.json()), (200, {"replies": ["OK ping"]}))
        self.assertEqual(b"".join(received), b"hello\r\nworld\r\nping\r\n")

        bridge.signal(signal.SIGTERM)
        self.assertEqual(await bridge.wait_exit(timeout=15), 0, bridge.describe())

"""Keys from an HTTPS jwks_uri: fetched at load, refreshed on rotation, never flooded."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from caep.codec import SetVerifier, UnknownKey, sign_set
from caep.errors import ConfigError, InvalidKey
from caep.jwks import KeyRefresher
from caep.keys import generate_jwk, jwks_of, private_key
from caep.trust import TrustStore

ISS = "https://idp.example.com"
AUD = "https://rp.example.com"
REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
OLD_KEY = generate_jwk("RS256", kid="2026-01")
NEW_KEY = generate_jwk("RS256", kid="2026-02")


def _certificate(subject: str, issuer_key: Any, public_key: Any, issuer: str, ca: bool,
                 san: x509.SubjectAlternativeName | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class JwksServer:
    """A real HTTPS server on loopback, signed by a private CA, serving a changeable JWKS."""

    directory: Path
    jwks: dict[str, Any] = field(default_factory=lambda: jwks_of(OLD_KEY))
    requests: int = 0
    port: int = 0

    def start(self) -> ThreadingHTTPServer:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("test CA", ca_key, ca_key.public_key(), "test CA", ca=True)
        key = ec.generate_private_key(ec.SECP256R1())
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        cert = _certificate("127.0.0.1", ca_key, key.public_key(), "test CA", ca=False, san=san)
        (self.directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (self.directory / "server.pem").write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                body = orjson.dumps(owner.jwks)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.directory / "server.pem")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def trust_file(self, ca: bool = True, path: str = "/jwks") -> Path:
        lines = [f'[[issuer]]\niss = "{ISS}"\naudience = "{AUD}"',
                 f'jwks_uri = "https://127.0.0.1:{self.port}{path}"']
        if ca:
            lines.append('jwks_ca_file = "ca.pem"')
        trust = self.directory / "trust.toml"
        trust.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return trust


@pytest.fixture
def jwks_server(tmp_path: Path) -> Iterator[JwksServer]:
    server = JwksServer(tmp_path)
    http = server.start()
    yield server
    http.shutdown()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token(jwk: dict[str, Any], kid: str | None = None) -> str:
    claims = {"iss": ISS, "aud": AUD, "sub_id": {"format": "email", "email": "a@example.com"},
              "events": {REVOKED: {}}}
    return sign_set(claims, private_key(jwk), kid=kid or jwk["kid"])


def test_keys_are_fetched_over_https_at_load(jwks_server: JwksServer) -> None:
    store = TrustStore.from_file(jwks_server.trust_file())
    assert jwks_server.requests == 1
    assert SetVerifier(store).verify(token(OLD_KEY)).iss == ISS


def test_untrusted_tls_certificate_is_a_clear_startup_error(jwks_server: JwksServer) -> None:
    with pytest.raises(ConfigError, match=r"cannot fetch JWKS .*CERTIFICATE_VERIFY_FAILED"):
        TrustStore.from_file(jwks_server.trust_file(ca=False))


def test_rotation_is_picked_up_and_a_kid_flood_fetches_once_per_interval(
    jwks_server: JwksServer,
) -> None:
    store = TrustStore.from_file(jwks_server.trust_file())
    verifier = SetVerifier(store)
    clock = FakeClock()
    refresher = KeyRefresher(clock=clock)
    jwks_server.jwks = jwks_of(OLD_KEY, NEW_KEY)

    assert refresher.verify(verifier, token(NEW_KEY)).iss == ISS
    assert jwks_server.requests == 2

    for _ in range(2000):
        with pytest.raises(UnknownKey):
            refresher.verify(verifier, token(NEW_KEY, kid=uuid.uuid4().hex))
    assert jwks_server.requests == 2, "a flood of unknown kids must not cause fetches"

    clock.now += 30.0
    with pytest.raises(InvalidKey):
        refresher.verify(verifier, token(NEW_KEY, kid="still-unknown"))
    assert jwks_server.requests == 3
    assert refresher.verify(verifier, token(NEW_KEY)).iss == ISS


def test_async_flood_keeps_the_event_loop_responsive_and_fetches_once(
    jwks_server: JwksServer,
) -> None:
    store = TrustStore.from_file(jwks_server.trust_file())
    verifier = SetVerifier(store)
    refresher = KeyRefresher()
    flood = [token(NEW_KEY, kid=uuid.uuid4().hex) for _ in range(300)]

    async def run() -> tuple[int, int]:
        ticks = 0
        rejected = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.create_task(ticker())
        for tok in flood:
            try:
                await refresher.averify(verifier, tok)
            except InvalidKey:
                rejected += 1
            await asyncio.sleep(0)
        tick_task.cancel()
        return ticks, rejected

    ticks, rejected = asyncio.run(run())
    assert rejected == len(flood)
    assert jwks_server.requests == 2
    assert ticks > 0


def test_a_batch_refreshes_once_and_verifies_the_rotated_keys_tokens_again(
    jwks_server: JwksServer,
) -> None:
    """The worker's path (`averify_all`): a batch naming the new key and random kids costs one
    fetch; the new key's tokens are then accepted, the random kids still refused."""
    store = TrustStore.from_file(jwks_server.trust_file())
    verifier = SetVerifier(store)
    clock = FakeClock()
    refresher = KeyRefresher(clock=clock)
    jwks_server.jwks = jwks_of(OLD_KEY, NEW_KEY)
    batch = [token(OLD_KEY), token(NEW_KEY), token(NEW_KEY, kid=uuid.uuid4().hex),
             "not a SET", token(NEW_KEY), token(NEW_KEY, kid=uuid.uuid4().hex)]

    outcomes = asyncio.run(refresher.averify_all(verifier, batch))

    assert jwks_server.requests == 2
    assert [type(o).__name__ for o in outcomes] == [
        "VerifiedSet", "VerifiedSet", "UnknownKey", "InvalidRequest", "VerifiedSet",
        "UnknownKey"]
    flood = [token(NEW_KEY, kid=uuid.uuid4().hex) for _ in range(50)]
    assert all(isinstance(o, UnknownKey)
               for o in asyncio.run(refresher.averify_all(verifier, flood)))
    assert jwks_server.requests == 2, "within the interval a batch of unknown kids fetches nothing"


def test_failed_refresh_keeps_the_old_keys(jwks_server: JwksServer) -> None:
    store = TrustStore.from_file(jwks_server.trust_file())
    verifier = SetVerifier(store)
    jwks_server.jwks = {"keys": "broken"}
    refresher = KeyRefresher()
    with pytest.raises(UnknownKey):
        refresher.verify(verifier, token(NEW_KEY))
    assert jwks_server.requests == 2
    assert verifier.verify(token(OLD_KEY)).iss == ISS


def test_plain_http_jwks_uri_is_refused(tmp_path: Path) -> None:
    trust = tmp_path / "trust.toml"
    trust.write_text(f'[[issuer]]\niss = "{ISS}"\naudience = "{AUD}"\n'
                     'jwks_uri = "http://127.0.0.1:1/jwks"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="must use https"):
        TrustStore.from_file(trust)

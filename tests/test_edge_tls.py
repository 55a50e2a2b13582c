"""The edge serving HTTPS itself (CAEP interoperability profile: TLS-protected endpoints)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from caep.errors import ConfigError
from streams.edge import Edge
from tests.conftest import Idp
from tests.edge_support import PUSH_TOKEN, bearer, edge_settings, running_edge


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "caep-edge-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "edge.crt", directory / "edge.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_with_a_certificate_the_edge_speaks_https_only_and_names_https_urls(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path,
                             edge_tls_cert_file=cert, edge_tls_key_file=key)
    trusted = ssl.create_default_context(cafile=str(cert))
    with running_edge(settings) as edge:
        assert edge.url.startswith("https://")
        metadata = httpx.get(f"{edge.url}/.well-known/ssf-configuration", verify=trusted,
                             timeout=10).json()
        assert metadata["issuer"] == edge.url
        for member in ("jwks_uri", "configuration_endpoint", "status_endpoint",
                       "verification_endpoint"):
            assert metadata[member].startswith(f"{edge.url}/"), member
        token = idp.sign(idp.claims({"format": "email", "email": "tls@example.com"}))
        pushed = httpx.post(f"{edge.url}/ssf/push", content=token, verify=trusted, timeout=30,
                            headers={"Content-Type": "application/secevent+jwt",
                                     **bearer(PUSH_TOKEN)})
        assert pushed.status_code == 202, pushed.text
        plain = edge.url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(f"{plain}/.well-known/ssf-configuration", timeout=10)
        with pytest.raises(httpx.ConnectError):  # and a client that does not trust it stops
            httpx.get(f"{edge.url}/.well-known/ssf-configuration", timeout=10)


def test_a_certificate_without_its_key_is_a_config_error(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    cert, _key = self_signed(tmp_path)
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path, edge_tls_cert_file=cert)
    with pytest.raises(ConfigError, match="go together"):
        Edge(settings, bootstrap, embedded=False)
    missing = edge_settings(bootstrap, idp.trust_file, tmp_path,
                            edge_tls_cert_file=cert, edge_tls_key_file=tmp_path / "nope.key")
    with pytest.raises(ConfigError, match="does not exist"):
        Edge(missing, bootstrap, embedded=False)

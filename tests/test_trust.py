"""The trust file: what it accepts, and one clear message for everything it does not."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from caep.errors import ConfigError
from caep.keys import generate_jwk, jwks_of, public_jwk
from caep.trust import TrustStore

JWK = generate_jwk("RS256", kid="k1")


def write(tmp_path: Path, toml: str, jwks: object | None = None) -> Path:
    if jwks is not None:
        (tmp_path / "idp.jwks.json").write_bytes(orjson.dumps(jwks))
    path = tmp_path / "trust.toml"
    path.write_text(toml, encoding="utf-8")
    return path


ISSUER = '[[issuer]]\niss = "https://idp.example.com"\naudience = "https://rp.example.com"\n'


def test_loads_issuer_with_relative_jwks_file(tmp_path: Path) -> None:
    store = TrustStore.from_file(write(tmp_path, ISSUER + 'jwks_file = "idp.jwks.json"\n',
                                       jwks_of(JWK)))
    issuer = store.get("https://idp.example.com")
    assert issuer is not None
    assert issuer.config.audiences == {"https://rp.example.com"}
    assert [k.alg for k in issuer.candidates("k1", "RS256")] == ["RS256"]
    assert issuer.candidates("k2", "RS256") == ()
    assert store.get("https://other.example.com") is None


@pytest.mark.parametrize(
    ("toml", "jwks", "message"),
    [
        ("not toml [", None, "not valid TOML"),
        ("", None, "issuer: Field required"),
        (ISSUER, None, "exactly one of jwks_file or jwks_uri"),
        (ISSUER + 'jwks_file = "missing.json"\n', None, "cannot read"),
        (ISSUER + 'jwks_file = "idp.jwks.json"\nalgorithms = ["HS256"]\n', {"keys": []},
         "never accepted"),
        (ISSUER + 'jwks_file = "idp.jwks.json"\nalgorithms = ["none"]\n', {"keys": []},
         "never accepted"),
        (ISSUER + 'jwks_uri = "http://idp.example.com/jwks"\n', None, "must use https"),
        (ISSUER + 'jwks_file = "idp.jwks.json"\ncolour = "blue"\n', {"keys": []},
         "Extra inputs are not permitted"),
        (ISSUER + 'jwks_file = "idp.jwks.json"\n', {"nokeys": []}, "not a JWKS"),
        (ISSUER + 'jwks_file = "idp.jwks.json"\n', {"keys": [public_jwk(JWK)] * 2},
         "duplicate kid"),
        (ISSUER + 'jwks_file = "idp.jwks.json"\n', {"keys": [dict(public_jwk(JWK), use="enc")]},
         "is not `sig`"),
        (ISSUER + 'jwks_file = "idp.jwks.json"\n', {"keys": [JWK]}, "private"),
        (ISSUER + 'jwks_file = "idp.jwks.json"\n',
         {"keys": [dict(public_jwk(JWK), alg="ES256")]}, "does not fit kty"),
        (ISSUER + 'jwks_file = "idp.jwks.json"\n',
         jwks_of(generate_jwk("ES256", kid="e1")), "no key usable"),
        (ISSUER + 'jwks_file = "idp.jwks.json"\n' + ISSUER + 'jwks_file = "idp.jwks.json"\n',
         jwks_of(JWK), "listed twice"),
    ],
)
def test_bad_trust_files_are_one_clear_error(tmp_path: Path, toml: str, jwks: object | None,
                                            message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrustStore.from_file(write(tmp_path, toml, jwks))


def test_weak_rsa_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    weak = RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 1024).public_key(), as_dict=True)
    weak.update(kid="weak", use="sig")
    path = write(tmp_path, ISSUER + 'jwks_file = "idp.jwks.json"\n', {"keys": [weak]})
    with pytest.raises(ConfigError, match="1024 bits"):
        TrustStore.from_file(path)


def test_missing_trust_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read trust file"):
        TrustStore.from_file(tmp_path / "nope.toml")

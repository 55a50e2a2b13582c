"""The edge's signing key: generated once and kept, rotated with both keys published."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from caep.codec import SetVerifier
from caep.errors import ConfigError
from caep.trust import IssuerConfig, TrustStore
from streams.edge_keys import load_keys, retire, rotate

ISS = "https://edge.example.com"
AUD = "https://rp.example.com"
CLAIMS = {"iss": ISS, "aud": AUD, "sub_id": {"format": "opaque", "id": "stream-1"},
          "events": {"https://schemas.openid.net/secevent/ssf/event-type/verification": {}}}


def verifier_for(jwks: dict[str, object]) -> SetVerifier:
    config = IssuerConfig(iss=ISS, audience=AUD, jwks_file=Path("-"))
    return SetVerifier(TrustStore.from_jwks(config, jwks))


def test_first_start_generates_and_keeps_one_private_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "edge.json"
    first = load_keys(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = load_keys(path)
    assert again.current == first.current
    (published,) = first.jwks()["keys"]
    assert "d" not in published and published["alg"] == "RS256"
    assert verifier_for(first.jwks()).verify(first.sign(CLAIMS)).header["kid"] == \
        first.current["kid"]


def test_rotation_publishes_both_keys_until_retired(tmp_path: Path) -> None:
    path = tmp_path / "edge.json"
    old = load_keys(path)
    signed_before = old.sign(CLAIMS)
    rotated = rotate(path)
    assert [k["kid"] for k in rotated.jwks()["keys"]] == [
        rotated.current["kid"], old.current["kid"]]
    verifier = verifier_for(rotated.jwks())
    assert verifier.verify(signed_before).header["kid"] == old.current["kid"]
    assert verifier.verify(rotated.sign(CLAIMS)).header["kid"] == rotated.current["kid"]
    assert load_keys(path).current == rotated.current  # the rotation is kept
    retired = retire(path)
    assert [k["kid"] for k in retired.jwks()["keys"]] == [rotated.current["kid"]]


def test_a_broken_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "edge.json"
    for content in (b"not json", b'{"keys": []}', b'{"keys": [{"kty": "RSA", "kid": "x"}]}'):
        path.write_bytes(content)
        with pytest.raises(ConfigError, match="edge key file"):
            load_keys(path)


def test_a_key_the_caep_profile_does_not_allow_is_refused(tmp_path: Path) -> None:
    """CAEP interoperability profile 2.6: SETs are signed RS256 with RSA keys of at least
    2048 bits; a key file holding anything else (even as the old key of a rotation) is a
    configuration error, not a key the edge would sign with."""
    import orjson
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    from caep.keys import generate_jwk

    short: dict[str, object] = RSAAlgorithm.to_jwk(
        rsa.generate_private_key(public_exponent=65537, key_size=1024), as_dict=True)
    short.update({"kid": "short", "alg": "RS256", "use": "sig"})
    good = generate_jwk("RS256", kid="good")
    path = tmp_path / "edge.json"
    for keys in ([generate_jwk("ES256", kid="ec")], [short], [good, generate_jwk("PS256")]):
        path.write_bytes(orjson.dumps({"keys": keys}))
        with pytest.raises(ConfigError, match="CAEP interoperability profile"):
            load_keys(path)
    path.write_bytes(orjson.dumps({"keys": [good]}))
    assert load_keys(path).current["kid"] == "good"

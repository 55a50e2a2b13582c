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

"""The edge's SET signing keys: one per deployment, kept in a file, rotated with overlap.

The file is a JWKS of private keys. The first key signs; every key in it is published, so
after a rotation SETs signed with the old key still verify, and a receiver that meets the new
`kid` finds it at the JWKS URI (the edge signs with it from its next start). `rotate` puts a
fresh key first and keeps the one it replaces; `retire` drops every key but the signing one
once the overlap is over. RS256 with RSA keys of at least 2048 bits, as the CAEP
interoperability profile requires: a key file holding anything else is refused.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

from caep.codec import sign_set
from caep.errors import ConfigError
from caep.keys import generate_jwk, jwks_of, private_key

ALGORITHM = "RS256"
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class SigningKeys:
    """Private JWKs, the signing one first."""

    keys: tuple[dict[str, Any], ...]

    @property
    def current(self) -> dict[str, Any]:
        return self.keys[0]

    def jwks(self) -> dict[str, Any]:
        """The public JWKS to publish: every key, signing one first."""
        return jwks_of(*self.keys)

    def sign(self, claims: Mapping[str, Any]) -> str:
        key = self.current
        return sign_set(claims, private_key(key), alg=str(key.get("alg", ALGORITHM)),
                        kid=str(key["kid"]))


def _fresh_key() -> dict[str, Any]:
    return generate_jwk(ALGORITHM, kid=f"edge-{uuid.uuid4().hex[:16]}")


def _write(path: Path, keys: tuple[dict[str, Any], ...]) -> None:
    """Atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps({"keys": list(keys)}, option=orjson.OPT_INDENT_2))
    os.replace(temporary, path)


def load_keys(path: Path) -> SigningKeys:
    """The keys in `path`; a fresh key, written there, when the file does not exist."""
    if not path.exists():
        keys = (_fresh_key(),)
        _write(path, keys)
        return SigningKeys(keys)
    try:
        document = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read edge key file {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"edge key file {path} is not JSON: {exc}") from None
    listed = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(listed, list) or not listed:
        raise ConfigError(f"edge key file {path}: expected a JWKS with at least one key")
    for index, jwk in enumerate(listed):
        if not isinstance(jwk, dict) or "d" not in jwk or not isinstance(jwk.get("kid"), str):
            raise ConfigError(f"edge key file {path}: key #{index} is not a private JWK "
                              "with a kid")
        try:
            key = private_key(jwk)
        except Exception as exc:
            raise ConfigError(f"edge key file {path}: key #{index} is unusable: {exc}") from None
        _check_profile(path, index, jwk, key)
    return SigningKeys(tuple(listed))


def _check_profile(path: Path, index: int, jwk: dict[str, Any], key: Any) -> None:
    """CAEP interoperability profile 2.6: every SET is signed RS256 with an RSA key of at
    least 2048 bits; any key in the file may sign (the first now, the others before a
    rotation), so each must qualify."""
    if jwk.get("alg", ALGORITHM) != ALGORITHM:
        raise ConfigError(f"edge key file {path}: key #{index} is for {jwk.get('alg')!r}; "
                          f"the edge signs {ALGORITHM} only (CAEP interoperability profile)")
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_RSA_BITS:
        raise ConfigError(f"edge key file {path}: key #{index} is not an RSA key of at least "
                          f"{MIN_RSA_BITS} bits (CAEP interoperability profile)")


def rotate(path: Path) -> SigningKeys:
    """A fresh signing key first; the previous signing key stays published."""
    keys = (_fresh_key(), load_keys(path).current)
    _write(path, keys)
    return SigningKeys(keys)


def retire(path: Path) -> SigningKeys:
    """End the overlap: only the signing key stays."""
    keys = (load_keys(path).current,)
    _write(path, keys)
    return SigningKeys(keys)

"""Signing keys as JWKs: generate, load, and publish the public half."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.api_jwk import PyJWK


def generate_jwk(alg: str = "RS256", kid: str = "key-1") -> dict[str, Any]:
    """A fresh private JWK (RSA 2048 for RS256/PS256, P-256 for ES256, Ed25519 for EdDSA)."""
    if alg in ("RS256", "PS256"):
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(
            rsa.generate_private_key(public_exponent=65537, key_size=2048), as_dict=True
        )
    elif alg == "ES256":
        jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True)
    elif alg == "EdDSA":
        jwk = OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate(), as_dict=True)
    else:
        raise ValueError(f"cannot generate keys for {alg!r}")
    jwk.pop("key_ops", None)  # pyjwt writes ["sign"], which would leak into the public half
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k", "key_ops"})


def public_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    """The public half of a private JWK."""
    return {name: value for name, value in jwk.items() if name not in _PRIVATE_MEMBERS}


def jwks_of(*jwks: dict[str, Any]) -> dict[str, Any]:
    return {"keys": [public_jwk(jwk) for jwk in jwks]}


def private_key(jwk: dict[str, Any]) -> Any:
    """The cryptography key object of a private JWK, as `sign_set` wants it.

    Building one re-validates the key (tens of milliseconds for RSA), so each distinct JWK is
    built once and kept.
    """
    if "d" not in jwk:
        raise ValueError("JWK has no private part (`d`)")
    return _key_object(orjson.dumps(jwk, option=orjson.OPT_SORT_KEYS))


@functools.lru_cache(maxsize=64)
def _key_object(canonical_jwk: bytes) -> Any:
    return PyJWK(orjson.loads(canonical_jwk)).key

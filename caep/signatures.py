"""Signature checks prepared once per key, so verifying a token is one `cryptography` call.

pyjwt's algorithm objects build padding and hash objects and re-encode ECDSA signatures on
every call; here those are built when the trust file is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

SignatureCheck = Callable[[bytes, bytes], bool]
"""`check(signing_input, signature) -> bool`; never raises for a bad signature."""

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512,
}
_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1,
}


def _rsa_check(key: rsa.RSAPublicKey, pad: padding.AsymmetricPadding,
               digest: hashes.HashAlgorithm) -> SignatureCheck:
    def check(message: bytes, signature: bytes) -> bool:
        try:
            key.verify(signature, message, pad, digest)
        except InvalidSignature:
            return False
        return True

    return check


def _ec_check(key: ec.EllipticCurvePublicKey, digest: hashes.HashAlgorithm) -> SignatureCheck:
    size = (key.curve.key_size + 7) // 8
    algorithm = ec.ECDSA(digest)

    def check(message: bytes, signature: bytes) -> bool:
        if len(signature) != 2 * size:
            return False
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        try:
            key.verify(encode_dss_signature(r, s), message, algorithm)
        except InvalidSignature:
            return False
        return True

    return check


def _eddsa_check(key: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey) -> SignatureCheck:
    def check(message: bytes, signature: bytes) -> bool:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    return check


def signature_check(alg: str, key: Any) -> SignatureCheck:
    """The prepared check for one JWS algorithm and public key; ValueError if they don't fit."""
    if alg.startswith(("RS", "PS")) and isinstance(key, rsa.RSAPublicKey):
        digest = _HASHES[alg[2:]]()
        if alg.startswith("RS"):
            return _rsa_check(key, padding.PKCS1v15(), digest)
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        return _rsa_check(key, pss, digest)
    if alg in _EC_CURVES and isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _EC_CURVES[alg]):
            raise ValueError(f"{alg} needs curve {_EC_CURVES[alg].name}, not {key.curve.name}")
        return _ec_check(key, _HASHES[alg[2:]]())
    if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return _eddsa_check(key)
    raise ValueError(f"a {type(key).__name__} cannot verify {alg}")

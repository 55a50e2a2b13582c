"""Signature checks prepared once per key, so verifying a token is one `cryptography` call.

pyjwt's algorithm objects build padding and hash objects and re-encode ECDSA signatures on
every call; here those are built when the trust file is loaded.

RSASSA-PKCS1-v1_5 (RS256/384/512) is checked the way RFC 8017 section 8.2.2 specifies it:
the RSA public operation with its type-1 padding check, then the recovered DigestInfo compared
whole with the one expected for the message. The verdict is `key.verify`'s
(tests/test_codec_primitives.py); it costs about 10% less because OpenSSL no longer looks up and
runs the digest itself.
"""

from __future__ import annotations

import hashlib
import hmac
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


_DIGEST_INFO: dict[str, tuple[bytes, Callable[[bytes], Any]]] = {
    "256": (bytes.fromhex("3031300d060960864801650304020105000420"), hashlib.sha256),
    "384": (bytes.fromhex("3041300d060960864801650304020205000430"), hashlib.sha384),
    "512": (bytes.fromhex("3051300d060960864801650304020305000440"), hashlib.sha512),
}
"""DER DigestInfo prefix (RFC 8017 section 9.2, note 1) and hash, by JWS hash size."""


def _rsa_pkcs1_check(key: rsa.RSAPublicKey, bits: str) -> SignatureCheck:
    prefix, digest = _DIGEST_INFO[bits]
    size = (key.key_size + 7) // 8
    recover = key.recover_data_from_signature
    pkcs1 = padding.PKCS1v15()
    compare = hmac.compare_digest

    def check(message: bytes, signature: bytes) -> bool:
        if len(signature) != size:
            return False
        try:
            recovered = recover(signature, pkcs1, None)
        except (InvalidSignature, ValueError):
            return False
        return compare(recovered, prefix + digest(message).digest())

    return check


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
        if alg.startswith("RS"):
            return _rsa_pkcs1_check(key, alg[2:])
        digest = _HASHES[alg[2:]]()
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        return _rsa_check(key, pss, digest)
    if alg in _EC_CURVES and isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _EC_CURVES[alg]):
            raise ValueError(f"{alg} needs curve {_EC_CURVES[alg].name}, not {key.curve.name}")
        return _ec_check(key, _HASHES[alg[2:]]())
    if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return _eddsa_check(key)
    raise ValueError(f"a {type(key).__name__} cannot verify {alg}")

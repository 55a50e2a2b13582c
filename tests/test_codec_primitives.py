"""The codec's fast primitives against slow, obvious oracles.

Duplicate JSON members are found by counting colons, base64url is decoded through one
translation table, and RS256 is checked by recovering the DigestInfo: each is cheaper than the
obvious way, so each is checked here to give exactly the obvious way's verdict.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import example, given
from hypothesis import strategies as st

from caep.codec import _b64decode, _parse_json_object
from caep.errors import InvalidRequest
from caep.keys import generate_jwk, private_key
from caep.signatures import signature_check

# ----------------------------------------------------------------- JSON with duplicate members

_KEYS = st.sampled_from(["a", "b", "a:b", ":", "é", "\u0061", "x\"y", "k\\", "😀", ""])
_STRINGS = st.text(alphabet=st.sampled_from('ab:"\\é😀/\n\t \u2028'), max_size=6)
_SCALARS = (st.none() | st.booleans() | st.integers(-(2**53), 2**53)
            | st.floats(allow_nan=False, allow_infinity=False) | _STRINGS)

Node = Any  # a scalar, ("list", [nodes]) or ("object", [(key, node)]) - members may repeat


def _nodes() -> st.SearchStrategy[Node]:
    return st.recursive(
        _SCALARS,
        lambda children: (st.tuples(st.just("list"), st.lists(children, max_size=4))
                          | st.tuples(st.just("object"),
                                      st.lists(st.tuples(_KEYS, children), max_size=4))),
        max_leaves=20,
    )


def _string(text: str, style: dict[str, Any]) -> str:
    """A JSON string literal, with some characters written as \\uXXXX escapes."""
    out = []
    for char in text:
        if style["escape_all"] or (char == ":" and style["escape_colon"]):
            if ord(char) > 0xFFFF:
                high, low = divmod(ord(char) - 0x10000, 0x400)
                out.append(f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04X}")
            else:
                out.append(f"\\u{ord(char):04{'x' if style['lower_hex'] else 'X'}}")
        else:
            out.append(json.dumps(char, ensure_ascii=style["ascii"])[1:-1])
    return '"' + "".join(out) + '"'


def _serialize(node: Node, style: dict[str, Any]) -> str:
    space = style["space"]
    if isinstance(node, tuple):
        kind, items = node
        if kind == "list":
            return "[" + f",{space}".join(_serialize(item, style) for item in items) + "]"
        return "{" + f",{space}".join(
            f"{_string(key, style)}{space}:{space}{_serialize(value, style)}"
            for key, value in items) + "}"
    if isinstance(node, str):
        return _string(node, style)
    return json.dumps(node)


def _has_duplicate(node: Node) -> bool:
    if not isinstance(node, tuple):
        return False
    kind, items = node
    if kind == "list":
        return any(_has_duplicate(item) for item in items)
    keys = [key for key, _ in items]
    return len(set(keys)) != len(keys) or any(_has_duplicate(value) for _, value in items)


_STYLES = st.fixed_dictionaries({
    "space": st.sampled_from(["", " ", "\n  "]),
    "ascii": st.booleans(),
    "escape_colon": st.booleans(),
    "escape_all": st.booleans(),
    "lower_hex": st.booleans(),
})


@given(st.lists(st.tuples(_KEYS, _nodes()), max_size=5), _STYLES)
@example([("a", 1), ("b", ("object", [("a:b", "x:y")])), ("a", "z")], {
    "space": "", "ascii": True, "escape_colon": False, "escape_all": False, "lower_hex": True})
@example([("a", "x:y"), ("\u0061", 2)], {
    "space": "", "ascii": True, "escape_colon": True, "escape_all": False, "lower_hex": True})
def test_duplicate_members_are_found_however_the_json_is_written(
        members: list[tuple[str, Node]], style: dict[str, Any]) -> None:
    raw = _serialize(("object", members), style).encode()
    if _has_duplicate(("object", members)):
        with pytest.raises(InvalidRequest, match="duplicate JSON member"):
            _parse_json_object(raw, "payload")
    else:
        assert _parse_json_object(raw, "payload") == json.loads(raw)


def test_a_duplicate_hidden_behind_an_escaped_colon_is_found() -> None:
    """One escaped colon elsewhere offsets one dropped member in a plain colon count."""
    raw = b'{"a":1,"note":"x\\u003ay","a":2}'
    assert raw.count(b":") == json.dumps(json.loads(raw), separators=(",", ":")).count(":")
    with pytest.raises(InvalidRequest, match="duplicate"):
        _parse_json_object(raw, "payload")


# ------------------------------------------------------------------------------- base64url

_URL_SAFE = re.compile(rb"[A-Za-z0-9_-]+\Z")


def _oracle_b64decode(segment: bytes) -> bytes | None:
    """RFC 7515 base64url the slow way; None where it must be refused."""
    if not _URL_SAFE.match(segment) or len(segment) % 4 == 1:
        return None
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))


@given(st.binary(max_size=64).map(lambda data: base64.urlsafe_b64encode(data).rstrip(b"="))
       | st.binary(max_size=12)
       | st.text(alphabet="AZaz09-_+/=. \n!", max_size=12).map(str.encode))
def test_base64url_decoding_matches_the_oracle(segment: bytes) -> None:
    expected = _oracle_b64decode(segment)
    if expected is None:
        with pytest.raises(InvalidRequest):
            _b64decode(segment, "segment")
    else:
        try:
            assert _b64decode(segment, "segment") == expected
        except binascii.Error:  # pragma: no cover - the decoder must never leak this
            pytest.fail("binascii.Error escaped")


# ----------------------------------------------------------------------------------- RS256

_RSA_JWK = generate_jwk("RS256", kid="primitives")
_RSA_PRIVATE: rsa.RSAPrivateKey = private_key(_RSA_JWK)
_RSA_PUBLIC = _RSA_PRIVATE.public_key()


def _prefix(digest: hashes.HashAlgorithm) -> bytes:
    oid = {"sha256": "01", "sha384": "02", "sha512": "03"}[digest.name]
    length = digest.digest_size
    return bytes.fromhex(f"30{length + 17:02x}300d06096086480165030402{oid}050004{length:02x}")


def _raw_sign(data: bytes, filler: int | None = None) -> bytes:
    """The RSA private operation on an EMSA-PKCS1-v1_5 block of our choosing (RFC 8017 9.2),
    so hand-built encodings can be tried against the check."""
    numbers = _RSA_PRIVATE.private_numbers()
    size = (_RSA_PUBLIC.key_size + 7) // 8
    fill = size - 3 - len(data) if filler is None else filler
    block = (b"\x00\x01" + b"\xff" * fill + b"\x00" + data).rjust(size, b"\x00")
    value = pow(int.from_bytes(block, "big"), numbers.d, numbers.public_numbers.n)
    return value.to_bytes(size, "big")


@pytest.mark.parametrize(("alg", "digest"), [
    ("RS256", hashes.SHA256()), ("RS384", hashes.SHA384()), ("RS512", hashes.SHA512())])
def test_rsa_pkcs1_check_accepts_exactly_what_cryptography_verify_accepts(
        alg: str, digest: hashes.HashAlgorithm) -> None:
    check = signature_check(alg, _RSA_PUBLIC)
    message = b"header.payload"
    good = _RSA_PRIVATE.sign(message, padding.PKCS1v15(), digest)
    other_hash = _RSA_PRIVATE.sign(message, padding.PKCS1v15(),
                                   hashes.SHA1() if alg != "RS256" else hashes.SHA512())
    pss = _RSA_PRIVATE.sign(message, padding.PSS(padding.MGF1(digest), digest.digest_size),
                            digest)
    hashed = hashlib.new(digest.name, message).digest()
    sha1_prefix = bytes.fromhex("3021300906052b0e03021a05000414")
    candidates = {
        "good": good, "other-hash": other_hash, "pss": pss,
        "flipped": bytes([good[0] ^ 1]) + good[1:],
        "short": good[1:], "long": b"\x00" + good, "empty": b"", "zeros": bytes(len(good)),
        "modulus": _RSA_PUBLIC.public_numbers().n.to_bytes(len(good), "big"),
        "wrong-digestinfo": _raw_sign(sha1_prefix + hashed),
        "bare-hash": _raw_sign(hashed),
        "digest-with-trailer": _raw_sign(_prefix(digest) + hashed + b"\x00"),
        "short-padding": _raw_sign(_prefix(digest) + hashed, filler=7),
        "right-encoding-raw": _raw_sign(_prefix(digest) + hashed),
    }
    for name, signature in candidates.items():
        try:
            _RSA_PUBLIC.verify(signature, message, padding.PKCS1v15(), digest)
            expected = True
        except (InvalidSignature, ValueError):
            expected = False
        assert check(message, signature) is expected, name
        assert check(message + b"x", signature) is False, name
    assert check(message, good) is True
    assert check(message, candidates["right-encoding-raw"]) is True

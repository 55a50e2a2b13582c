"""A named corpus of forged, misdirected and malformed SETs: each is refused with its RFC 8935 code.

Every case goes through the public API only: `SetVerifier.verify` must raise a `SetError` whose
`.code` is the exact RFC 8935 code below, and never anything else. The trust side (JWKS and trust
file) must refuse unsafe or broken keys with `ConfigError`.

The baseline tokens the cases are cut from verify (see `test_baselines_verify`), so a refusal is
caused by the one thing each case changes. All SETs carry real, conforming CAEP/RISC payloads and
RFC 9493 subjects, so they stay valid when the verifier also checks the event models.

Codes follow the verifier's documented order (cheapest first): size, shape and encoding, then the
JOSE header (`typ`, forbidden `alg` -> invalid_key, `crit`, `kid` type), then `iss`
(invalid_request when absent, invalid_issuer when untrusted), `aud` (invalid_audience), the
algorithm and key choice and the signature (invalid_key), and last the remaining claims.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm, get_default_algorithms

from caep.codec import SetVerifier, sign_set
from caep.errors import ConfigError, ErrorCode, SetError
from caep.keys import generate_jwk, jwks_of, public_jwk
from caep.trust import IssuerConfig, TrustedIssuer, TrustStore, load_jwks
from tests.jose_helpers import b64, signing_key, unb64

IR = ErrorCode.INVALID_REQUEST
IK = ErrorCode.INVALID_KEY
II = ErrorCode.INVALID_ISSUER
IA = ErrorCode.INVALID_AUDIENCE

NOW = 1_750_000_000
ISS_A = "https://idp.example.com"
ISS_B = "https://other-idp.example.net"
AUD = "https://rp.example.com"
OTHER_AUD = "https://evil-rp.example.com"
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
REVOKED = CAEP + "session-revoked"

# Keys are generated once, at import. Issuer A trusts RSA_A, EC_A and SHARED_A; issuer B trusts
# RSA_B and SHARED_B. SHARED_A and SHARED_B carry the same kid on purpose. ATTACKER reuses the
# kid of RSA_A but is trusted nowhere.
RSA_A = generate_jwk("RS256", kid="a-rsa")
EC_A = generate_jwk("ES256", kid="a-ec")
SHARED_A = generate_jwk("RS256", kid="shared")
RSA_B = generate_jwk("RS256", kid="b-rsa")
SHARED_B = generate_jwk("RS256", kid="shared")
ATTACKER = generate_jwk("RS256", kid="a-rsa")
ATTACKER_EC = generate_jwk("ES256", kid="a-ec")

CONFIG_A = IssuerConfig(iss=ISS_A, audience=AUD, jwks_file=Path("unused"),
                        algorithms=["RS256", "ES256"])
CONFIG_B = IssuerConfig(iss=ISS_B, audience=AUD, jwks_file=Path("unused"), algorithms=["RS256"])
STORE = TrustStore([
    TrustedIssuer(CONFIG_A, load_jwks(jwks_of(RSA_A, EC_A, SHARED_A), CONFIG_A.algorithms, "A")),
    TrustedIssuer(CONFIG_B, load_jwks(jwks_of(RSA_B, SHARED_B), CONFIG_B.algorithms, "B")),
])
VERIFIER = SetVerifier(STORE)  # default max_bytes 65536, iat_skew 300
BIG_VERIFIER = SetVerifier(STORE, max_bytes=4_000_000)  # lets deep nesting reach the parser
TINY_VERIFIER = SetVerifier(STORE, max_bytes=200)

_ALGORITHMS = get_default_algorithms()
DROP = object()  # an override value meaning "remove this member"


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for name, value in overrides.items():
        if value is DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def claims(**overrides: Any) -> dict[str, Any]:
    """A conforming CAEP session-revoked SET of issuer A (CAEP 1.0 section 3.1)."""
    base: dict[str, Any] = {
        "iss": ISS_A,
        "aud": AUD,
        "iat": NOW - 5,
        "jti": "4f1c9a2e7b3d4e8f9a0b1c2d3e4f5a6b",
        "txn": "8675309",
        "sub_id": {"format": "email", "email": "a@example.com"},
        "events": {REVOKED: {"initiating_entity": "policy", "event_timestamp": 1615304991643}},
    }
    return merged(base, overrides)


def header(**overrides: Any) -> dict[str, Any]:
    return merged({"alg": "RS256", "typ": "secevent+jwt", "kid": "a-rsa"}, overrides)


def es_header(**overrides: Any) -> dict[str, Any]:
    return merged({"alg": "ES256", "typ": "secevent+jwt", "kid": "a-ec"}, overrides)


def jws(head: dict[str, Any] | bytes, payload: dict[str, Any] | bytes,
        jwk: dict[str, Any] = RSA_A, alg: str | None = None) -> str:
    """A compact JWS over exactly these header and payload bytes, signed with `jwk`."""
    h = head if isinstance(head, bytes) else orjson.dumps(head)
    p = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    if alg is None:
        alg = head["alg"] if isinstance(head, dict) else "RS256"
    signing_input = f"{b64(h)}.{b64(p)}"
    signature = _ALGORITHMS[alg].sign(signing_input.encode("ascii"), signing_key(jwk))
    return f"{signing_input}.{b64(signature)}"


def unsigned(head: dict[str, Any] | bytes, payload: dict[str, Any] | bytes,
             signature: str = "") -> str:
    h = head if isinstance(head, bytes) else orjson.dumps(head)
    p = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return f"{b64(h)}.{b64(p)}.{signature}"


def hmac_signed(alg: str, secret: bytes, head: dict[str, Any] | None = None) -> str:
    """Key confusion: an HMAC over the SET with public key material as the shared secret."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = unsigned(head or header(alg=alg), claims()).rstrip(".")
    mac = hmac.new(secret, signing_input.encode("ascii"), digest).digest()
    return f"{signing_input}.{b64(mac)}"


def part(token: str, index: int) -> str:
    return token.split(".")[index]


def with_part(token: str, index: int, segment: str) -> str:
    parts = token.split(".")
    parts[index] = segment
    return ".".join(parts)


def flip_bit(token: str, index: int, byte: int, bit: int) -> str:
    raw = bytearray(unb64(part(token, index)))
    raw[byte] ^= 1 << bit
    return with_part(token, index, b64(bytes(raw)))


def swap_char(segment: str, position: int, char: str) -> str:
    return segment[:position] + char + segment[position + 1:]


def nested(depth: int, opening: bytes = b"[", closing: bytes = b"]") -> bytes:
    return opening * depth + closing * depth


VALID_RS = jws(header(), claims())
VALID_ES = jws(es_header(), claims(), EC_A)
VALID_B = jws(header(kid="b-rsa"), claims(iss=ISS_B), RSA_B)
OTHER_RS = jws(header(), claims(jti="another-valid-set"))
PEM_SPKI = signing_key(RSA_A).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
PEM_PKCS1 = signing_key(RSA_A).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
DER_SPKI = signing_key(RSA_A).public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
JWK_JSON = orjson.dumps(public_jwk(RSA_A))
JWKS_JSON = orjson.dumps(jwks_of(RSA_A))
EC_PEM = signing_key(EC_A).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _odd_alphabet_token() -> str:
    """A valid SET whose three segments all contain `-` or `_`, for the alphabet cases."""
    note = "?????>>>>>"  # 5 x 0x3F and 5 x 0x3E encode to `_` and `-` at any alignment
    for attempt in range(1000):
        token = jws(header(**{"x-note": note}), claims(txn=f"{note}{attempt}"))
        if all(set(segment) & {"-", "_"} for segment in token.split(".")):
            return token
    raise AssertionError("no RSA signature with `-` or `_` in 1000 attempts")


ODD_B64 = _odd_alphabet_token()
_SIG_LEN = len(part(VALID_RS, 2))
assert _SIG_LEN == 342, "RSA-2048 signatures are 256 bytes: 342 base64url characters"


def to_standard_alphabet(token: str, index: int) -> str:
    """The same bytes, encoded in the *standard* base64 alphabet (`+` `/`), not base64url."""
    segment = part(token, index).replace("-", "+").replace("_", "/")
    assert segment != part(token, index)
    return with_part(token, index, segment)


def des_der_signature() -> str:
    """ES256 with an ASN.1 DER signature instead of JOSE's raw 64-byte r||s."""
    signing_input = VALID_ES.rsplit(".", 1)[0]
    der = signing_key(EC_A).sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    return f"{signing_input}.{b64(der)}"


class Attack(NamedTuple):
    id: str
    token: Any
    code: ErrorCode
    verifier: SetVerifier = VERIFIER


def _reheader(token: str, **overrides: Any) -> str:
    """The token with header members changed, keeping the original signature."""
    head = orjson.loads(unb64(part(token, 0)))
    return with_part(token, 0, b64(orjson.dumps(merged(head, overrides))))


def _reclaim(token: str, **overrides: Any) -> str:
    """The token with claims changed, keeping the original signature."""
    payload = orjson.loads(unb64(part(token, 1)))
    return with_part(token, 1, b64(orjson.dumps(merged(payload, overrides))))


_PAYLOAD = orjson.dumps(claims())
_HEAD = orjson.dumps(header())

ATTACKS: list[Attack] = [
    # --- alg none and its spellings -------------------------------------------------------
    Attack("alg-none-with-signature", unsigned(header(alg="none"), claims(), b64(b"sig")), IK),
    Attack("alg-none-empty-signature", unsigned(header(alg="none"), claims()), IK),
    Attack("alg-none-no-kid", unsigned(header(alg="none", kid=DROP), claims()), IK),
    Attack("alg-none-two-parts", unsigned(header(alg="none"), claims()).rstrip("."), IR),
    Attack("alg-NONE-uppercase", unsigned(header(alg="NONE"), claims(), b64(b"x")), IK),
    Attack("alg-None-capitalised", unsigned(header(alg="None"), claims(), b64(b"x")), IK),
    Attack("alg-nOnE-mixed-case", unsigned(header(alg="nOnE"), claims()), IK),
    Attack("alg-missing", jws(header(alg=DROP), claims(), alg="RS256"), IR),
    Attack("alg-not-a-string", jws(header(alg=256), claims(), alg="RS256"), IR),
    Attack("alg-null", jws(header(alg=None), claims(), alg="RS256"), IR),
    Attack("alg-empty-string", jws(header(alg=""), claims(), alg="RS256"), IK),
    Attack("alg-RS512-not-allowed-for-issuer", jws(header(alg="RS512"), claims()), IK),
    Attack("alg-PS256-not-allowed-for-issuer", jws(header(alg="PS256"), claims()), IK),
    Attack("alg-EdDSA-not-allowed-for-issuer", unsigned(header(alg="EdDSA"), claims(), "AAAA"),
           IK),
    # --- HMAC key confusion: the public key as the HMAC secret ----------------------------
    *[
        Attack(f"{alg}-secret-{name}", hmac_signed(alg, secret), IK)
        for alg in ("HS256", "HS384", "HS512")
        for name, secret in (("rsa-pem-spki", PEM_SPKI), ("rsa-pem-pkcs1", PEM_PKCS1),
                             ("rsa-der", DER_SPKI), ("rsa-jwk-json", JWK_JSON),
                             ("rsa-jwks-json", JWKS_JSON), ("ec-pem", EC_PEM))
    ],
    Attack("hs256-lowercase-alg", hmac_signed("HS256", PEM_SPKI, header(alg="hs256")), IK),
    Attack("hs256-no-kid", hmac_signed("HS256", PEM_SPKI, header(alg="HS256", kid=DROP)), IK),
    # --- header alg does not match the key that signed -----------------------------------
    Attack("rs256-signed-header-says-es256-rsa-kid",
           jws(es_header(kid="a-rsa"), claims(), RSA_A, alg="RS256"), IK),
    Attack("rs256-signed-header-says-es256-ec-kid",
           jws(es_header(), claims(), RSA_A, alg="RS256"), IK),
    Attack("rs256-signed-header-says-es256-no-kid",
           jws(es_header(kid=DROP), claims(), RSA_A, alg="RS256"), IK),
    Attack("es256-signed-header-says-rs256-ec-kid",
           jws(header(kid="a-ec"), claims(), EC_A, alg="ES256"), IK),
    Attack("es256-signed-header-says-rs256-rsa-kid",
           jws(header(), claims(), EC_A, alg="ES256"), IK),
    Attack("es256-signed-header-says-rs256-no-kid",
           jws(header(kid=DROP), claims(), EC_A, alg="ES256"), IK),
    Attack("ps256-signature-header-says-rs256", jws(header(), claims(), RSA_A, alg="PS256"), IK),
    Attack("es256-signature-der-encoded", des_der_signature(), IK),
    # --- signature part ----------------------------------------------------------------
    Attack("signature-stripped", with_part(VALID_RS, 2, ""), IR),
    Attack("signature-stripped-es256", with_part(VALID_ES, 2, ""), IR),
    Attack("signature-spliced-from-other-set", with_part(VALID_RS, 2, part(OTHER_RS, 2)), IK),
    Attack("signature-spliced-from-other-issuer", with_part(VALID_RS, 2, part(VALID_B, 2)), IK),
    Attack("signature-spliced-es256-onto-rs256", with_part(VALID_RS, 2, part(VALID_ES, 2)), IK),
    Attack("signature-bitflip-first-byte", flip_bit(VALID_RS, 2, 0, 0), IK),
    Attack("signature-bitflip-middle-byte", flip_bit(VALID_RS, 2, 128, 4), IK),
    Attack("signature-bitflip-last-byte-low-bit", flip_bit(VALID_RS, 2, 255, 0), IK),
    Attack("signature-bitflip-last-byte-high-bit", flip_bit(VALID_RS, 2, 255, 7), IK),
    Attack("signature-bitflip-es256-r", flip_bit(VALID_ES, 2, 3, 1), IK),
    Attack("signature-bitflip-es256-s", flip_bit(VALID_ES, 2, 40, 6), IK),
    Attack("signature-all-zero-bytes", with_part(VALID_RS, 2, b64(bytes(256))), IK),
    Attack("signature-es256-all-zero", with_part(VALID_ES, 2, b64(bytes(64))), IK),
    Attack("signature-doubled", with_part(VALID_RS, 2, part(VALID_RS, 2) * 2), IK),
    # --- header altered without re-signing -----------------------------------------------
    Attack("header-altered-kid-to-ec-key", _reheader(VALID_RS, kid="a-ec"), IK),
    Attack("header-altered-kid-to-shared-key", _reheader(VALID_RS, kid="shared"), IK),
    Attack("header-altered-kid-removed", _reheader(VALID_RS, kid=DROP), IK),
    Attack("header-altered-alg-to-es256", _reheader(VALID_RS, alg="ES256"), IK),
    Attack("header-altered-typ-to-jwt", _reheader(VALID_RS, typ="JWT"), IR),
    Attack("header-altered-member-added", _reheader(VALID_RS, cty="secevent+jwt"), IK),
    Attack("header-altered-x5t-added", _reheader(VALID_RS, x5t="AAAA"), IK),
    Attack("header-altered-member-order",
           with_part(VALID_RS, 0, b64(b'{"typ":"secevent+jwt","alg":"RS256","kid":"a-rsa"}')),
           IK),
    Attack("header-altered-whitespace", with_part(VALID_RS, 0, b64(_HEAD + b" ")), IK),
    Attack("header-bitflip-kid", flip_bit(VALID_RS, 0, len(_HEAD) - 3, 0), IK),
    # --- payload altered without re-signing ----------------------------------------------
    Attack("payload-altered-jti", _reclaim(VALID_RS, jti="replayed-jti"), IK),
    Attack("payload-altered-iat", _reclaim(VALID_RS, iat=NOW - 4), IK),
    Attack("payload-altered-subject",
           _reclaim(VALID_RS, sub_id={"format": "email", "email": "victim@example.com"}), IK),
    Attack("payload-altered-event-payload",
           _reclaim(VALID_RS, events={REVOKED: {"initiating_entity": "admin",
                                                "event_timestamp": 1615304991643}}), IK),
    Attack("payload-altered-event-type",
           _reclaim(VALID_RS, events={RISC + "account-disabled": {"reason": "hijacking"}}), IK),
    Attack("payload-altered-txn", _reclaim(VALID_RS, txn="1"), IK),
    Attack("payload-altered-claim-added", _reclaim(VALID_RS, toe=NOW), IK),
    Attack("payload-altered-jti-removed", _reclaim(VALID_RS, jti=DROP), IK),
    Attack("payload-altered-iss-to-other-trusted-issuer", _reclaim(VALID_RS, iss=ISS_B), IK),
    Attack("payload-altered-iss-to-untrusted", _reclaim(VALID_RS, iss="https://evil.example"),
           II),
    Attack("payload-altered-aud", _reclaim(VALID_RS, aud=OTHER_AUD), IA),
    Attack("payload-altered-whitespace", with_part(VALID_RS, 1, b64(_PAYLOAD + b"\n")), IK),
    # "4f1c..." -> "5f1c...": still a conforming SET, just not the one that was signed
    Attack("payload-bitflip-in-jti", flip_bit(VALID_RS, 1, _PAYLOAD.index(b"4f1c"), 0), IK),
    Attack("es256-payload-altered-jti", _reclaim(VALID_ES, jti="replayed-jti"), IK),
    # --- truncation ---------------------------------------------------------------------
    Attack("header-truncated-by-one", with_part(VALID_RS, 0, part(VALID_RS, 0)[:-1]), IR),
    Attack("header-truncated-by-two", with_part(VALID_RS, 0, part(VALID_RS, 0)[:-2]), IR),
    Attack("header-truncated-to-half", with_part(VALID_RS, 0, part(VALID_RS, 0)[:24]), IR),
    Attack("payload-truncated-by-one", with_part(VALID_RS, 1, part(VALID_RS, 1)[:-1]), IR),
    Attack("payload-truncated-by-two", with_part(VALID_RS, 1, part(VALID_RS, 1)[:-2]), IR),
    Attack("payload-truncated-to-half", with_part(VALID_RS, 1, part(VALID_RS, 1)[:100]), IR),
    # 341 characters: a length no base64 can have
    Attack("signature-truncated-by-one", with_part(VALID_RS, 2, part(VALID_RS, 2)[:-1]), IR),
    # 340 characters: 255 bytes, one short of an RSA-2048 signature
    Attack("signature-truncated-by-two", with_part(VALID_RS, 2, part(VALID_RS, 2)[:-2]), IK),
    Attack("signature-truncated-to-one-char", with_part(VALID_RS, 2, "A"), IR),
    Attack("signature-truncated-to-four-chars", with_part(VALID_RS, 2, "AAAA"), IK),
    Attack("token-truncated-mid-payload", VALID_RS[: len(part(VALID_RS, 0)) + 30], IR),
    # --- padding and alphabet -------------------------------------------------------------
    *[
        Attack(f"{name}-with-padding-{pad.count('=')}",
               with_part(VALID_RS, index, part(VALID_RS, index) + pad), IR)
        for index, name in enumerate(("header", "payload", "signature"))
        for pad in ("=", "==")
    ],
    Attack("header-padding-in-the-middle", with_part(VALID_RS, 0, "eyJ=" + part(VALID_RS, 0)),
           IR),
    Attack("header-standard-alphabet-plus-slash", to_standard_alphabet(ODD_B64, 0), IR),
    Attack("payload-standard-alphabet-plus-slash", to_standard_alphabet(ODD_B64, 1), IR),
    Attack("signature-standard-alphabet-plus-slash", to_standard_alphabet(ODD_B64, 2), IR),
    Attack("header-with-asterisk", with_part(VALID_RS, 0, swap_char(part(VALID_RS, 0), 5, "*")),
           IR),
    Attack("payload-with-bang", with_part(VALID_RS, 1, swap_char(part(VALID_RS, 1), 9, "!")), IR),
    Attack("signature-with-tilde", with_part(VALID_RS, 2, swap_char(part(VALID_RS, 2), 7, "~")),
           IR),
    Attack("signature-with-inner-space",
           with_part(VALID_RS, 2, part(VALID_RS, 2)[:100] + " " + part(VALID_RS, 2)[100:]), IR),
    Attack("payload-with-inner-newline",
           with_part(VALID_RS, 1, part(VALID_RS, 1)[:40] + "\n" + part(VALID_RS, 1)[40:]), IR),
    Attack("signature-percent-encoded", with_part(VALID_RS, 2, part(VALID_RS, 2) + "%3D"), IR),
    Attack("header-with-nul", with_part(VALID_RS, 0, part(VALID_RS, 0) + "\x00"), IR),
    # --- typ ----------------------------------------------------------------------------
    Attack("typ-missing", jws(header(typ=DROP), claims()), IR),
    Attack("typ-JWT", jws(header(typ="JWT"), claims()), IR),
    Attack("typ-jwt-lowercase", jws(header(typ="jwt"), claims()), IR),
    Attack("typ-secevent+JWT", jws(header(typ="secevent+JWT"), claims()), IR),
    Attack("typ-SECEVENT+JWT", jws(header(typ="SECEVENT+JWT"), claims()), IR),
    Attack("typ-application/secevent+jwt", jws(header(typ="application/secevent+jwt"), claims()),
           IR),
    Attack("typ-trailing-space", jws(header(typ="secevent+jwt "), claims()), IR),
    Attack("typ-null", jws(header(typ=None), claims()), IR),
    Attack("typ-array", jws(header(typ=["secevent+jwt"]), claims()), IR),
    Attack("typ-number", jws(header(typ=1), claims()), IR),
    Attack("typ-deeply-nested-array", jws(b'{"alg":"RS256","kid":"a-rsa","typ":'
                                          + nested(900) + b"}", claims()), IR),
    # nesting deeper than orjson serialises (255) but within what it parses (1024), pre-signature
    Attack("typ-nested-300-unsigned", unsigned(b'{"alg":"RS256","kid":"a-rsa","typ":'
                                               + nested(300) + b"}", claims(), "AAAA"), IR),
    Attack("iss-nested-300-unsigned",
           unsigned(header(), orjson.dumps(claims(iss=DROP))[:-1] + b',"iss":' + nested(300) + b"}",
                    "AAAA"), IR),
    Attack("aud-nested-300-unsigned",
           unsigned(header(), orjson.dumps(claims(aud=DROP))[:-1] + b',"aud":' + nested(300) + b"}",
                    "AAAA"), IA),
    # --- claims a SET must not carry ----------------------------------------------------
    Attack("exp-present", jws(header(), claims(exp=NOW + 3600)), IR),
    Attack("exp-present-null", jws(header(), claims(exp=None)), IR),
    Attack("top-level-sub-present", jws(header(), claims(sub="alice")), IR),
    Attack("top-level-sub-present-with-sub-id",
           jws(header(), claims(sub="a@example.com")), IR),
    # --- iss -------------------------------------------------------------------------------
    Attack("iss-missing", jws(header(), claims(iss=DROP)), IR),
    Attack("iss-empty", jws(header(), claims(iss="")), IR),
    Attack("iss-null", jws(header(), claims(iss=None)), IR),
    Attack("iss-number", jws(header(), claims(iss=42)), IR),
    Attack("iss-array", jws(header(), claims(iss=[ISS_A])), IR),
    Attack("iss-object", jws(header(), claims(iss={"iss": ISS_A})), IR),
    Attack("iss-unknown", jws(header(), claims(iss="https://evil.example.com")), II),
    Attack("iss-trailing-slash", jws(header(), claims(iss=ISS_A + "/")), II),
    Attack("iss-uppercase", jws(header(), claims(iss=ISS_A.upper())), II),
    Attack("iss-unknown-signed-by-attacker",
           jws(header(), claims(iss="https://evil.example.com"), ATTACKER), II),
    # --- aud -------------------------------------------------------------------------------
    Attack("aud-wrong", jws(header(), claims(aud=OTHER_AUD)), IA),
    Attack("aud-uppercase", jws(header(), claims(aud=AUD.upper())), IA),
    Attack("aud-list-wrong-value", jws(header(), claims(aud=[OTHER_AUD])), IA),
    Attack("aud-list-multi-valued-not-allowed", jws(header(), claims(aud=[AUD, OTHER_AUD])), IA),
    Attack("aud-list-same-value-twice-not-allowed", jws(header(), claims(aud=[AUD, AUD])), IA),
    Attack("aud-missing", jws(header(), claims(aud=DROP)), IA),
    Attack("aud-null", jws(header(), claims(aud=None)), IA),
    Attack("aud-empty-list", jws(header(), claims(aud=[])), IA),
    Attack("aud-empty-string", jws(header(), claims(aud="")), IA),
    Attack("aud-number", jws(header(), claims(aud=7)), IA),
    Attack("aud-list-with-non-string", jws(header(), claims(aud=[AUD, 7])), IA),
    Attack("aud-object", jws(header(), claims(aud={"aud": AUD})), IA),
    # --- kid: unknown, other issuer's, injection --------------------------------------------
    Attack("kid-unknown", jws(header(kid="nope"), claims()), IK),
    Attack("kid-of-other-issuer-signed-by-its-key", jws(header(kid="b-rsa"), claims(), RSA_B),
           IK),
    Attack("no-kid-signed-by-other-issuers-key", jws(header(kid=DROP), claims(), RSA_B), IK),
    Attack("shared-kid-signed-by-other-issuers-key", jws(header(kid="shared"), claims(),
                                                         SHARED_B), IK),
    Attack("other-issuer-set-signed-by-this-issuers-key",
           jws(header(), claims(iss=ISS_B)), IK),
    Attack("kid-reused-by-attacker-key", jws(header(), claims(), ATTACKER), IK),
    Attack("kid-reused-by-attacker-ec-key", jws(es_header(), claims(), ATTACKER_EC), IK),
    Attack("no-kid-signed-by-attacker", jws(header(kid=DROP), claims(), ATTACKER), IK),
    Attack("kid-path-traversal", jws(header(kid="../../../../etc/passwd"), claims()), IK),
    Attack("kid-path-traversal-to-real-kid", jws(header(kid="../a-rsa"), claims()), IK),
    Attack("kid-sql-injection", jws(header(kid="a-rsa' OR '1'='1"), claims()), IK),
    Attack("kid-nul-suffix", jws(header(kid="a-rsa\x00"), claims()), IK),
    Attack("kid-trailing-space", jws(header(kid="a-rsa "), claims()), IK),
    Attack("kid-uppercase", jws(header(kid="A-RSA"), claims()), IK),
    Attack("kid-wildcard", jws(header(kid="*"), claims()), IK),
    Attack("kid-empty", jws(header(kid=""), claims()), IK),
    Attack("kid-url", jws(header(kid="https://evil.example/jwks.json#a-rsa"), claims()), IK),
    Attack("kid-very-long", jws(header(kid="k" * 20000), claims()), IK),
    Attack("kid-number", jws(header(kid=1), claims()), IR),
    Attack("kid-true", jws(header(kid=True), claims()), IR),
    Attack("kid-array", jws(header(kid=["a-rsa"]), claims()), IR),
    Attack("kid-object", jws(header(kid={"kid": "a-rsa"}), claims()), IR),
    Attack("kid-null", jws(header(kid=None), claims()), IR),
    # --- header members that try to bring their own key ----------------------------------
    Attack("embedded-jwk-attacker-key",
           jws(header(jwk=public_jwk(ATTACKER)), claims(), ATTACKER), IK),
    Attack("embedded-jwk-attacker-key-own-kid",
           jws(header(kid="attacker", jwk=dict(public_jwk(ATTACKER), kid="attacker")),
               claims(), ATTACKER), IK),
    Attack("embedded-jwk-attacker-key-no-kid",
           jws(header(kid=DROP, jwk=public_jwk(ATTACKER)), claims(), ATTACKER), IK),
    Attack("embedded-jwk-attacker-ec-key",
           jws(es_header(jwk=public_jwk(ATTACKER_EC)), claims(), ATTACKER_EC), IK),
    Attack("jku-attacker-url", jws(header(jku="https://evil.example/jwks.json"), claims(),
                                   ATTACKER), IK),
    Attack("jku-attacker-url-own-kid",
           jws(header(kid="attacker", jku="https://evil.example/jwks.json"), claims(),
               ATTACKER), IK),
    Attack("x5u-attacker-url", jws(header(x5u="https://evil.example/cert.pem"), claims(),
                                   ATTACKER), IK),
    Attack("x5c-attacker-chain",
           jws(header(kid=DROP, x5c=[base64.b64encode(DER_SPKI).decode()]), claims(),
               ATTACKER), IK),
    # --- crit -----------------------------------------------------------------------------
    Attack("crit-unknown-member", jws(header(crit=["x-custom"], **{"x-custom": 1}), claims()),
           IR),
    Attack("crit-exp", jws(header(crit=["exp"]), claims()), IR),
    Attack("crit-b64-false", jws(header(crit=["b64"], b64=False), claims()), IR),
    Attack("crit-empty-list", jws(header(crit=[]), claims()), IR),
    Attack("crit-string", jws(header(crit="b64"), claims()), IR),
    Attack("crit-number-member", jws(header(crit=[1]), claims()), IR),
    Attack("crit-array-member", jws(header(crit=[["b64"]]), claims()), IR),
    Attack("crit-object-member", jws(header(crit=[{"b64": False}]), claims()), IR),
    Attack("crit-null", jws(header(crit=None), claims()), IR),
    Attack("crit-unknown-unsigned-array-member",
           unsigned(header(crit=[[]]), claims(), "AAAA"), IR),
    # --- duplicate JSON members (hand-built) ----------------------------------------------
    Attack("header-duplicate-typ",
           jws(b'{"alg":"RS256","typ":"secevent+jwt","kid":"a-rsa","typ":"secevent+jwt"}',
               claims()), IR),
    Attack("header-duplicate-alg-none-last",
           jws(b'{"alg":"RS256","typ":"secevent+jwt","kid":"a-rsa","alg":"none"}', claims()),
           IR),
    Attack("header-duplicate-kid",
           jws(b'{"alg":"RS256","typ":"secevent+jwt","kid":"nope","kid":"a-rsa"}', claims()),
           IR),
    Attack("payload-duplicate-iss",
           jws(header(), _PAYLOAD[:-1] + b',"iss":"https://evil.example.com"}'), IR),
    Attack("payload-duplicate-iss-same-value", jws(header(), _PAYLOAD[:-1] + b',"iss":'
                                                   + orjson.dumps(ISS_A) + b"}"), IR),
    Attack("payload-duplicate-aud", jws(header(), _PAYLOAD[:-1] + b',"aud":"x"}'), IR),
    Attack("payload-duplicate-jti", jws(header(), b'{"jti":"a",' + _PAYLOAD[1:]), IR),
    Attack("payload-duplicate-events", jws(header(), _PAYLOAD[:-1] + b',"events":{}}'), IR),
    Attack("payload-duplicate-in-sub-id",
           jws(header(), _PAYLOAD.replace(b'"format":"email",',
                                          b'"format":"email","email":"b@example.com",')), IR),
    Attack("payload-duplicate-in-event",
           jws(header(), _PAYLOAD.replace(b'"initiating_entity":"policy",',
                                          b'"initiating_entity":"policy",'
                                          b'"initiating_entity":"admin",')), IR),
    # --- size -------------------------------------------------------------------------------
    Attack("oversized-string", "a" * 65537, IR),
    Attack("oversized-bytes", b"a" * 65537, IR),
    Attack("oversized-valid-looking-token", VALID_RS + "A" * 65536, IR),
    Attack("oversized-signed-set", jws(header(), claims(txn="x" * 70000)), IR),
    Attack("valid-set-over-a-small-limit", VALID_RS, IR, TINY_VERIFIER),
    Attack("valid-set-bytes-over-a-small-limit", VALID_RS.encode(), IR, TINY_VERIFIER),
    # --- deep nesting -----------------------------------------------------------------------
    Attack("payload-100k-open-brackets", jws(header(), b"[" * 100_000), IR, BIG_VERIFIER),
    Attack("payload-100k-nested-arrays", jws(header(), nested(100_000)), IR, BIG_VERIFIER),
    Attack("payload-100k-nested-objects",
           jws(header(), b'{"a":' * 100_000 + b"1" + b"}" * 100_000), IR, BIG_VERIFIER),
    Attack("header-100k-nested-arrays", jws(nested(100_000), claims(), alg="RS256"), IR,
           BIG_VERIFIER),
    Attack("payload-30k-nested-in-default-limit", jws(header(), nested(30_000)), IR),
    Attack("sub-id-deeply-nested",
           jws(header(), _PAYLOAD.replace(b'"sub_id":{', b'"sub_id":{"x":' + nested(5000)
                                          + b",")), IR, BIG_VERIFIER),
    Attack("event-payload-deeply-nested",
           jws(header(), _PAYLOAD.replace(b'"initiating_entity":"policy",',
                                          b'"x":' + nested(5000) + b",")), IR, BIG_VERIFIER),
    # --- text encoding ----------------------------------------------------------------------
    Attack("header-not-utf8",
           jws(b'{"alg":"RS256","typ":"secevent+jwt","kid":"a-rsa","x":"\xff"}', claims()), IR),
    Attack("payload-not-utf8", jws(header(), _PAYLOAD.replace(b"8675309", b"867\xc3\x28")), IR),
    Attack("payload-overlong-utf8", jws(header(), _PAYLOAD.replace(b"8675309", b"\xc0\xaf")), IR),
    Attack("payload-utf16", jws(header(), _PAYLOAD.decode().encode("utf-16")), IR),
    Attack("payload-utf16-le-no-bom", jws(header(), _PAYLOAD.decode().encode("utf-16-le")), IR),
    Attack("payload-utf8-bom", jws(header(), b"\xef\xbb\xbf" + _PAYLOAD), IR),
    Attack("payload-lone-surrogate-escape",
           jws(header(), _PAYLOAD.replace(b"8675309", b"\\ud800")), IR),
    Attack("payload-not-an-object", jws(header(), b"[1,2,3]"), IR),
    Attack("payload-json-string", jws(header(), b'"SET"'), IR),
    Attack("payload-empty", jws(header(), b""), IR),
    Attack("payload-trailing-garbage", jws(header(), _PAYLOAD + b"x"), IR),
    Attack("payload-two-objects", jws(header(), _PAYLOAD + _PAYLOAD), IR),
    Attack("header-not-an-object", jws(b'["RS256"]', claims(), alg="RS256"), IR),
    Attack("header-empty-object", jws(b"{}", claims(), alg="RS256"), IR),
    # --- the token as a whole ---------------------------------------------------------------
    Attack("token-non-ascii-char", swap_char(VALID_RS, 20, "\u00e9"), IR),
    Attack("token-non-ascii-dot-separator", VALID_RS.replace(".", "\uff0e"), IR),
    Attack("token-zero-width-space-inside", VALID_RS[:30] + "\u200b" + VALID_RS[30:], IR),
    Attack("token-wrapped-in-no-break-spaces", "\u00a0" + VALID_RS + "\u00a0", IR),
    Attack("token-wrapped-in-ideographic-spaces", "\u3000" + VALID_RS + "\u3000", IR),
    Attack("token-bytes-non-ascii", VALID_RS.encode() + b"\xff", IR),
    Attack("token-bytes-latin1", b"\xe9" + VALID_RS.encode(), IR),
    Attack("token-jwe-five-parts",
           "eyJhbGciOiJSU0EtT0FFUC0yNTYiLCJlbmMiOiJBMjU2R0NNIn0.a2V5.aXY.Y2lwaGVy.dGFn", IR),
    Attack("token-four-parts", VALID_RS + ".AAAA", IR),
    Attack("token-six-parts", VALID_RS + ".AAAA.AAAA.AAAA", IR),
    Attack("token-two-parts", VALID_RS.rsplit(".", 1)[0], IR),
    Attack("token-one-part", part(VALID_RS, 1), IR),
    Attack("token-only-dots", "..", IR),
    Attack("token-empty-header", with_part(VALID_RS, 0, ""), IR),
    Attack("token-empty-payload", with_part(VALID_RS, 1, ""), IR),
    Attack("token-empty-string", "", IR),
    Attack("token-empty-bytes", b"", IR),
    Attack("token-whitespace-only", " \t\r\n ", IR),
    Attack("token-whitespace-only-bytes", b" \n", IR),
    Attack("token-none", None, IR),
    Attack("token-int", 12345, IR),
    Attack("token-bytearray", bytearray(VALID_RS.encode()), IR),
    Attack("token-list", [VALID_RS], IR),
    Attack("token-json-serialization",
           orjson.dumps({"protected": part(VALID_RS, 0), "payload": part(VALID_RS, 1),
                         "signature": part(VALID_RS, 2)}).decode(), IR),
    # --- iat ------------------------------------------------------------------------------
    Attack("iat-far-future", jws(header(), claims(iat=NOW + 10 * 365 * 86400)), IR),
    Attack("iat-just-beyond-skew", jws(header(), claims(iat=NOW + 301)), IR),
    Attack("iat-float-beyond-skew", jws(header(), claims(iat=NOW + 300.001)), IR),
    Attack("iat-string", jws(header(), claims(iat=str(NOW))), IR),
    Attack("iat-true", jws(header(), claims(iat=True)), IR),
    Attack("iat-false", jws(header(), claims(iat=False)), IR),
    Attack("iat-null", jws(header(), claims(iat=None)), IR),
    Attack("iat-array", jws(header(), claims(iat=[NOW])), IR),
    Attack("iat-missing", jws(header(), claims(iat=DROP)), IR),
    Attack("iat-nan-literal", jws(header(), _PAYLOAD.replace(b'"iat":', b'"iat":NaN,"_":')), IR),
    Attack("iat-minus-infinity-literal",
           jws(header(), _PAYLOAD.replace(b'"iat":', b'"iat":-Infinity,"_":')), IR),
    Attack("iat-infinity-literal",
           jws(header(), _PAYLOAD.replace(b'"iat":', b'"iat":Infinity,"_":')), IR),
    Attack("iat-overflowing-float",
           jws(header(), _PAYLOAD.replace(b'"iat":', b'"iat":1e999,"_":')), IR),
    Attack("claim-nan-literal", jws(header(), _PAYLOAD[:-1] + b',"score":NaN}'), IR),
    # --- events -----------------------------------------------------------------------------
    Attack("events-missing", jws(header(), claims(events=DROP)), IR),
    Attack("events-empty", jws(header(), claims(events={})), IR),
    Attack("events-null", jws(header(), claims(events=None)), IR),
    Attack("events-array",
           jws(header(), claims(events=[{REVOKED: {"initiating_entity": "policy"}}])), IR),
    Attack("events-string", jws(header(), claims(events=REVOKED)), IR),
    Attack("events-payload-string", jws(header(), claims(events={REVOKED: "revoked"})), IR),
    Attack("events-payload-null", jws(header(), claims(events={REVOKED: None})), IR),
    Attack("events-payload-array", jws(header(), claims(events={REVOKED: []})), IR),
    Attack("events-payload-number", jws(header(), claims(events={REVOKED: 1})), IR),
    Attack("events-more-than-allowed",
           jws(header(), claims(events={REVOKED: {}, RISC + "account-disabled": {}})), IR),
    Attack("event-payload-not-conforming",
           jws(header(), claims(events={REVOKED: {"initiating_entity": "martian"}})), IR),
    Attack("event-timestamp-not-a-number",
           jws(header(), claims(events={REVOKED: {"event_timestamp": "yesterday"}})), IR),
    Attack("event-required-member-missing",
           jws(header(), claims(events={CAEP + "credential-change": {"change_type": "create"}})),
           IR),
    # --- sub_id ----------------------------------------------------------------------------
    Attack("sub-id-string", jws(header(), claims(sub_id="a@example.com")), IR),
    Attack("sub-id-array", jws(header(), claims(sub_id=[{"format": "email",
                                                         "email": "a@example.com"}])), IR),
    Attack("sub-id-bad-email", jws(header(), claims(sub_id={"format": "email",
                                                           "email": "not-an-email"})), IR),
    Attack("sub-id-member-missing", jws(header(), claims(sub_id={"format": "email"})), IR),
    Attack("sub-id-undefined-member",
           jws(header(), claims(sub_id={"format": "email", "email": "a@example.com",
                                        "admin": True})), IR),
    Attack("sub-id-empty-complex", jws(header(), claims(sub_id={"format": "complex"})), IR),
    Attack("subject-missing-everywhere", jws(header(), claims(sub_id=DROP)), IR),
    # --- jti --------------------------------------------------------------------------------
    Attack("jti-missing", jws(header(), claims(jti=DROP)), IR),
    Attack("jti-empty", jws(header(), claims(jti="")), IR),
    Attack("jti-number", jws(header(), claims(jti=12345)), IR),
    Attack("jti-null", jws(header(), claims(jti=None)), IR),
    Attack("jti-array", jws(header(), claims(jti=["a"])), IR),
]


def test_corpus_ids_are_unique() -> None:
    ids = [attack.id for attack in ATTACKS]
    assert len(ids) == len(set(ids))


def test_baselines_verify() -> None:
    """The tokens the corpus is cut from are valid, so each refusal is the case's own doing."""
    for token in (VALID_RS, VALID_ES, OTHER_RS, ODD_B64, VALID_RS.encode()):
        assert VERIFIER.verify(token, now=NOW).claims["iss"] == ISS_A
    assert VERIFIER.verify(VALID_B, now=NOW).claims["iss"] == ISS_B
    assert VERIFIER.verify(VALID_RS, now=NOW).claims == claims()
    assert BIG_VERIFIER.verify(VALID_RS, now=NOW).claims == claims()
    assert VERIFIER.verify(jws(header(), claims(iat=NOW + 300)), now=NOW).claims["iat"] == (
        NOW + 300)
    signed = sign_set(claims(), signing_key(RSA_A), alg="RS256", kid="a-rsa")
    assert VERIFIER.verify(signed, now=NOW).claims == claims()


def _refusal(attack: Attack) -> SetError:
    try:
        result = attack.verifier.verify(attack.token, now=NOW)
    except SetError as error:
        return error
    except Exception as error:  # the contract: nothing but SetError, ever
        pytest.fail(f"{attack.id}: raised {type(error).__name__}: {error!r}, not a SetError")
    pytest.fail(f"{attack.id}: ACCEPTED with claims {result.claims!r:.300}")


@pytest.mark.parametrize("attack", ATTACKS, ids=[attack.id for attack in ATTACKS])
def test_attack_is_refused_with_its_code(attack: Attack) -> None:
    error = _refusal(attack)
    assert error.code is attack.code, f"{attack.id}: {error.code.value}: {error.description}"


@pytest.mark.parametrize("attack", ATTACKS, ids=[attack.id for attack in ATTACKS])
def test_refusal_is_an_rfc8935_error_body(attack: Attack) -> None:
    error = _refusal(attack)
    description = error.description
    assert isinstance(description, str)
    assert description.strip()
    assert description.isprintable(), f"{description!r:.300}"
    assert "Traceback" not in description
    assert str(error) == description
    body = error.to_dict()
    assert body == {"err": error.code.value, "description": description}
    assert body["err"] in {code.value for code in ErrorCode}
    # the body is what the edges serialise (dead-letter topic, HTTP push, CLI)
    assert orjson.loads(orjson.dumps(body)) == body


# --- the trust side: keys the engine must refuse to trust ------------------------------------

_RSA_1024 = RSAAlgorithm.to_jwk(
    rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(), as_dict=True)
_PUB_RSA = public_jwk(RSA_A)
_PUB_EC = public_jwk(EC_A)

BAD_JWKS: list[Any] = [
    pytest.param({"keys": [dict(_PUB_RSA, use="enc")]}, id="use-enc"),
    pytest.param({"keys": [dict(_PUB_EC, use="enc")]}, id="use-enc-ec"),
    pytest.param({"keys": [dict(_PUB_RSA, use=None)]}, id="use-null"),
    pytest.param({"keys": [_PUB_RSA, dict(public_jwk(SHARED_A), kid="a-rsa")]},
                 id="duplicate-kid"),
    pytest.param({"keys": [_PUB_RSA, _PUB_RSA]}, id="duplicate-key-and-kid"),
    pytest.param({"keys": [dict(_RSA_1024, kid="small", alg="RS256")]}, id="rsa-1024"),
    pytest.param({"keys": [dict(_RSA_1024, kid="small")]}, id="rsa-1024-no-alg"),
    pytest.param({"keys": [dict(_RSA_1024, kid="small", use="sig")]}, id="rsa-1024-use-sig"),
    pytest.param({"keys": [RSA_A]}, id="rsa-private-key"),
    pytest.param({"keys": [EC_A]}, id="ec-private-key"),
    pytest.param({"keys": [dict(_PUB_RSA, d=RSA_A["d"])]}, id="rsa-private-exponent-only"),
    pytest.param({"keys": [{"kty": "oct", "k": b64(PEM_SPKI), "kid": "hmac", "alg": "HS256"}]},
                 id="symmetric-key"),
    pytest.param({"keys": [dict(_PUB_EC, alg="RS256")]}, id="alg-rs256-on-ec-key"),
    pytest.param({"keys": [dict(_PUB_RSA, alg="ES256")]}, id="alg-es256-on-rsa-key"),
    pytest.param({"keys": [dict(_PUB_RSA, alg="HS256")]}, id="alg-hs256-on-rsa-key"),
    pytest.param({"keys": [dict(_PUB_RSA, alg="none")]}, id="alg-none-on-rsa-key"),
    pytest.param({"keys": [dict(_PUB_RSA, kid=7)]}, id="kid-not-a-string"),
    pytest.param({"keys": ["not a key"]}, id="key-not-an-object"),
    pytest.param({"keys": []}, id="no-keys"),
    pytest.param({"keys": {"a-rsa": _PUB_RSA}}, id="keys-not-an-array"),
    pytest.param([_PUB_RSA], id="not-a-jwks"),
    # broken key material must be a ConfigError too (README: one line, `caep: error: ...`)
    pytest.param({"keys": [{k: v for k, v in _PUB_RSA.items() if k != "n"}]},
                 id="rsa-modulus-missing"),
    pytest.param({"keys": [dict(_PUB_RSA, n="!!!")]}, id="rsa-modulus-not-base64url"),
    pytest.param({"keys": [dict(_PUB_RSA, n=5)]}, id="rsa-modulus-a-number"),
    pytest.param({"keys": [{k: v for k, v in _PUB_EC.items() if k != "crv"}]},
                 id="ec-curve-missing"),
    pytest.param({"keys": [dict(_PUB_EC, crv="P-999")]}, id="ec-curve-unknown"),
    pytest.param({"keys": [dict(_PUB_EC, x=_PUB_EC["y"])]}, id="ec-point-not-on-curve"),
    pytest.param({"keys": [dict(_PUB_RSA, alg=["RS256"])]}, id="alg-an-array"),
]


@pytest.mark.parametrize("document", BAD_JWKS)
def test_unsafe_or_broken_jwks_is_a_config_error(document: Any) -> None:
    try:
        load_jwks(document, ["RS256", "ES256"], "test.jwks.json")
    except ConfigError as error:
        assert error.description.strip()
        return
    except Exception as error:
        pytest.fail(f"raised {type(error).__module__}.{type(error).__name__}: {error}, "
                    "not a ConfigError")
    pytest.fail("the JWKS was accepted")


@pytest.mark.parametrize("document", BAD_JWKS)
def test_unsafe_or_broken_trust_file_is_a_config_error(document: Any, tmp_path: Path) -> None:
    (tmp_path / "idp.jwks.json").write_bytes(orjson.dumps(document))
    trust = tmp_path / "trust.toml"
    trust.write_text(f'[[issuer]]\niss = "{ISS_A}"\naudience = "{AUD}"\n'
                     'jwks_file = "idp.jwks.json"\nalgorithms = ["RS256", "ES256"]\n',
                     encoding="utf-8")
    try:
        TrustStore.from_file(trust)
    except ConfigError as error:
        assert error.description.strip()
        return
    except Exception as error:
        pytest.fail(f"raised {type(error).__module__}.{type(error).__name__}: {error}, "
                    "not a ConfigError")
    pytest.fail("the trust file was accepted")


def test_trust_file_with_good_keys_loads(tmp_path: Path) -> None:
    """Control for the cases above: the same file with sound keys verifies a SET."""
    (tmp_path / "idp.jwks.json").write_bytes(orjson.dumps(jwks_of(RSA_A, EC_A)))
    trust = tmp_path / "trust.toml"
    trust.write_text(f'[[issuer]]\niss = "{ISS_A}"\naudience = "{AUD}"\n'
                     'jwks_file = "idp.jwks.json"\nalgorithms = ["RS256", "ES256"]\n',
                     encoding="utf-8")
    verifier = SetVerifier(TrustStore.from_file(trust))
    assert verifier.verify(VALID_ES, now=NOW).claims == claims()

"""Properties of the SET verifier, checked with hypothesis.

* Mutation: one mutation of a valid SET (byte-level, field-level without re-signing, or a
  security-relevant field change re-signed by the legitimate key) is never accepted as a
  different SET.
* Positive control: generated valid SETs with real, conforming CAEP/RISC/SSF payloads and
  RFC 9493 / SSF subjects are all accepted, with exactly the claims that were signed.
* Total function: for any input, `verify` returns or raises `SetError`; nothing else.

Keys are generated once, at import. Every `verify` call passes `now=NOW`. How many examples
run is noted at the end of the file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import event as label
from hypothesis import strategies as st
from jwt.algorithms import get_default_algorithms

from caep.codec import SetVerifier, VerifiedSet, sign_set
from caep.errors import ErrorCode, SetError
from caep.keys import generate_jwk, jwks_of, public_jwk
from caep.trust import IssuerConfig, TrustedIssuer, TrustStore, load_jwks
from tests.jose_helpers import b64, signing_key, unb64

NOW = 1_750_000_000
SKEW = 300
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
SSF = "https://schemas.openid.net/secevent/ssf/event-type/"
SPEC_EXAMPLES = Path(__file__).parent / "spec_examples"

MUTATION_EXAMPLES = 3000
POSITIVE_EXAMPLES = 300
BATCH_EXAMPLES = 150
TEXT_EXAMPLES = 1000
BYTES_EXAMPLES = 1000
STRUCTURED_EXAMPLES = 800
SIGNED_JUNK_EXAMPLES = 500
NESTING_EXAMPLES = 200

_ALGORITHMS = get_default_algorithms()


# --- issuers and keys: generated once ----------------------------------------------------------

@dataclass(frozen=True)
class Issuer:
    iss: str
    audiences: tuple[str, ...]
    multiple_audiences: bool
    max_events: int
    # (private JWK, alg, whether the header names its kid); kept out of failure reports
    keys: tuple[tuple[dict[str, Any], str, bool], ...] = field(repr=False)


def _without_kid(jwk: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in jwk.items() if name != "kid"}


ISSUER_A = Issuer("https://idp-a.example.com", ("https://rp-a.example.com",), False, 1,
                  ((generate_jwk("RS256", kid="a-rsa"), "RS256", True),
                   (generate_jwk("ES256", kid="a-ec"), "ES256", True)))
ISSUER_B = Issuer("https://idp-b.example.org/tenants/42/",
                  ("https://rp-b1.example.org", "https://rp-b2.example.org"), True, 1,
                  ((generate_jwk("ES256", kid="b-ec"), "ES256", True),))
ISSUER_C = Issuer("urn:example:idp:c", ("https://rp-c.example.net/caep",), False, 2,
                  ((_without_kid(generate_jwk("RS256", kid="unused")), "RS256", False),))
ISSUERS = (ISSUER_A, ISSUER_B, ISSUER_C)
TRUSTED = frozenset(issuer.iss for issuer in ISSUERS)
ALL_AUDIENCES = frozenset(aud for issuer in ISSUERS for aud in issuer.audiences)
KIDS = ("a-rsa", "a-ec", "b-ec")


def _trusted(issuer: Issuer) -> TrustedIssuer:
    algorithms = sorted({alg for _, alg, _ in issuer.keys})
    config = IssuerConfig(
        iss=issuer.iss, jwks_file=Path("unused"), algorithms=algorithms,
        audience=list(issuer.audiences) if len(issuer.audiences) > 1 else issuer.audiences[0],
        allow_multiple_audiences=issuer.multiple_audiences, max_events=issuer.max_events,
    )
    jwks = jwks_of(*(jwk for jwk, _, _ in issuer.keys))
    return TrustedIssuer(config, load_jwks(jwks, algorithms, issuer.iss))


VERIFIER = SetVerifier(TrustStore([_trusted(issuer) for issuer in ISSUERS]), iat_skew=SKEW)
BIG_VERIFIER = SetVerifier(VERIFIER.trust, max_bytes=1_000_000, iat_skew=SKEW)
ATTACKER = generate_jwk("RS256", kid="a-rsa")


def compact(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes,
            jwk: dict[str, Any], alg: str) -> str:
    h = header if isinstance(header, bytes) else orjson.dumps(header)
    p = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    signing_input = f"{b64(h)}.{b64(p)}"
    signature = _ALGORITHMS[alg].sign(signing_input.encode("ascii"), signing_key(jwk))
    return f"{signing_input}.{b64(signature)}"


def set_header(alg: str, kid: str | None) -> dict[str, Any]:
    header: dict[str, Any] = {"alg": alg, "typ": "secevent+jwt"}
    if kid is not None:
        header["kid"] = kid
    return header


def verify(token: str | bytes, verifier: SetVerifier = VERIFIER) -> VerifiedSet | SetError:
    """The verifier's answer; any exception other than SetError fails the test with the input."""
    try:
        return verifier.verify(token, now=NOW)
    except SetError as error:
        return error
    except Exception as error:  # the contract: nothing but SetError, ever
        pytest.fail(f"verify raised {type(error).__name__}: {error!r:.500} "
                    f"(a SetError was due) for input {token!r:.3000}")


# --- conforming subjects and events ------------------------------------------------------------

def _spec_examples() -> list[dict[str, Any]]:
    examples = []
    for path in sorted(SPEC_EXAMPLES.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(document.get("events"), dict) and isinstance(document.get("sub_id"), dict):
            examples.append(document)
    return examples


SPEC_SETS = _spec_examples()
assert SPEC_SETS, "tests/spec_examples holds complete SETs"

_slug = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_domain = st.builds(lambda a, b: f"{a}.{b}", _slug, st.sampled_from(["com", "org", "example"]))
_https = st.builds(lambda d, p: f"https://{d}/{p}", _domain, _slug)
_any_text = st.text(min_size=1, max_size=24)

_email = st.builds(lambda local, d: f"{local}@{d}",
                   st.from_regex(r"[a-zA-Z0-9._+-]{1,16}", fullmatch=True), _domain)
email_subject = st.builds(lambda e: {"format": "email", "email": e}, _email)
phone_subject = st.builds(lambda n: {"format": "phone_number", "phone_number": n},
                          st.from_regex(r"\+[1-9][0-9]{1,14}", fullmatch=True))
iss_sub_subject = st.builds(lambda i, s: {"format": "iss_sub", "iss": i, "sub": s},
                            _https, _any_text)
opaque_subject = st.builds(lambda i: {"format": "opaque", "id": i}, _any_text)
account_subject = st.builds(lambda u, d: {"format": "account", "uri": f"acct:{u}@{d}"},
                            _slug, _domain)
uri_subject = st.builds(lambda u: {"format": "uri", "uri": u}, _https)
did_subject = st.builds(lambda m, i: {"format": "did", "url": f"did:{m}:{i}"},
                        st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), _slug)
ip_subject = st.builds(lambda ips: {"format": "ip-addresses", "ip-addresses": ips},
                       st.lists(st.ip_addresses().map(str), min_size=1, max_size=3))
jwt_id_subject = st.builds(lambda i, j: {"format": "jwt_id", "iss": i, "jti": j},
                           _https, _any_text)
simple_subject = st.one_of(email_subject, phone_subject, iss_sub_subject, opaque_subject,
                           account_subject, uri_subject, did_subject, ip_subject, jwt_id_subject)
aliases_subject = st.builds(lambda ids: {"format": "aliases", "identifiers": ids},
                            st.lists(simple_subject, min_size=1, max_size=3))


@st.composite
def complex_subject(draw: st.DrawFn) -> dict[str, Any]:
    members = {"user": st.one_of(email_subject, iss_sub_subject, aliases_subject),
               "session": opaque_subject, "device": st.one_of(opaque_subject, uri_subject),
               "tenant": opaque_subject, "group": opaque_subject}
    chosen = draw(st.lists(st.sampled_from(sorted(members)), min_size=1, max_size=4,
                           unique=True))
    subject: dict[str, Any] = {"format": "complex"}
    for name in chosen:
        subject[name] = draw(members[name])
    return subject


any_subject = st.one_of(simple_subject, aliases_subject, complex_subject(),
                        st.sampled_from([s["sub_id"] for s in SPEC_SETS]))

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=16),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=8,
)
_timestamp = st.one_of(st.integers(0, 2**53), st.floats(0, 1e13, allow_nan=False))
_language_map = st.dictionaries(st.sampled_from(["en", "es-410", "de", "fr-CA", "zh-Hant"]),
                                st.text(max_size=30), min_size=1, max_size=3)


def _caep_common(draw: st.DrawFn) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if draw(st.booleans()):
        payload["initiating_entity"] = draw(st.sampled_from(["admin", "user", "policy",
                                                             "system"]))
    if draw(st.booleans()):
        payload["event_timestamp"] = draw(_timestamp)
    if draw(st.booleans()):
        payload["reason_admin"] = draw(_language_map)
    if draw(st.booleans()):
        payload["reason_user"] = draw(_language_map)
    if draw(st.booleans()):  # SSF 4.2.3: receivers ignore members they do not understand
        payload["x-" + draw(st.text(max_size=6))] = draw(json_values)
    return payload


_LEVELS = ["LOW", "MEDIUM", "HIGH"]
_STATUSES = ["compliant", "not-compliant"]
_SIMPLE = {"session-revoked": CAEP, "account-purged": RISC, "account-enabled": RISC,
           "account-credential-change-required": RISC, "sessions-revoked": RISC,
           "recovery-activated": RISC, "recovery-information-changed": RISC, "opt-in": RISC}


@st.composite
def event(draw: st.DrawFn) -> tuple[str, dict[str, Any], Any]:
    """A conforming (event type, payload, subject strategy) triple."""
    kind = draw(st.sampled_from([*sorted(_SIMPLE), "token-claims-change", "credential-change",
                                 "assurance-level-change", "device-compliance-change",
                                 "session-established", "risk-level-change",
                                 "account-disabled", "credential-compromise",
                                 "identifier-changed", "verification", "stream-updated",
                                 "unrecognized", "spec"]))
    subjects: Any = any_subject
    if kind == "spec":
        example = draw(st.sampled_from(SPEC_SETS))
        ((event_type, payload),) = example["events"].items()
        return event_type, payload, st.just(example["sub_id"])
    if kind == "unrecognized":
        event_type = "https://example.com/secevent/" + draw(_slug)
        return event_type, draw(st.dictionaries(st.text(max_size=8), json_values,
                                                max_size=4)), subjects
    if kind in _SIMPLE:
        payload = _caep_common(draw) if _SIMPLE[kind] == CAEP else {}
        return _SIMPLE[kind] + kind, payload, subjects
    payload = _caep_common(draw) if kind in {"token-claims-change", "credential-change",
                                             "assurance-level-change",
                                             "device-compliance-change",
                                             "session-established",
                                             "risk-level-change"} else {}
    prefix = CAEP
    if kind == "token-claims-change":
        payload["claims"] = draw(st.dictionaries(st.text(min_size=1, max_size=8), json_values,
                                                 min_size=1, max_size=3))
    elif kind == "credential-change":
        payload["credential_type"] = draw(st.sampled_from(["password", "fido2-roaming", "x509",
                                                           "app"]) | st.text(max_size=12))
        payload["change_type"] = draw(st.sampled_from(["create", "revoke", "update",
                                                       "delete"]))
    elif kind == "assurance-level-change":
        payload["namespace"] = draw(st.sampled_from(["NIST-AAL", "RFC8176"]) | _any_text)
        payload["current_level"] = draw(_any_text)
        if draw(st.booleans()):
            payload["change_direction"] = draw(st.sampled_from(["increase", "decrease"]))
    elif kind == "device-compliance-change":
        payload["previous_status"] = draw(st.sampled_from(_STATUSES))
        payload["current_status"] = draw(st.sampled_from(_STATUSES))
    elif kind == "session-established":
        if draw(st.booleans()):
            payload["amr"] = draw(st.lists(st.sampled_from(["pwd", "otp", "hwk"]), max_size=3))
        if draw(st.booleans()):
            payload["acr"] = draw(_any_text)
    elif kind == "risk-level-change":
        payload["principal"] = draw(st.sampled_from(["USER", "DEVICE", "SESSION"]) | _any_text)
        payload["current_level"] = draw(st.sampled_from(_LEVELS))
        if draw(st.booleans()):
            payload["previous_level"] = draw(st.sampled_from(_LEVELS))
    elif kind == "account-disabled":
        prefix = RISC
        if draw(st.booleans()):
            payload["reason"] = draw(st.sampled_from(["hijacking", "bulk-account"]) | _any_text)
    elif kind == "credential-compromise":
        prefix = RISC
        payload["credential_type"] = draw(st.sampled_from(["password", "pin"]))
        if draw(st.booleans()):
            payload["reason_admin"] = draw(_language_map | _any_text)
    elif kind == "identifier-changed":
        prefix = RISC
        if draw(st.booleans()):
            payload["new-value"] = draw(_email)
        subjects = st.one_of(email_subject, phone_subject)
    elif kind == "verification":
        prefix = SSF
        if draw(st.booleans()):
            payload["state"] = draw(_any_text)
        subjects = opaque_subject
    elif kind == "stream-updated":
        prefix = SSF
        payload["status"] = draw(st.sampled_from(["enabled", "paused", "disabled"]))
        subjects = opaque_subject
    return prefix + kind, payload, subjects


@dataclass(frozen=True)
class SignedSet:
    token: str
    header: dict[str, Any]
    claims: dict[str, Any]
    issuer: Issuer = field(repr=False)
    jwk: dict[str, Any] = field(repr=False)
    alg: str


@st.composite
def valid_claims(draw: st.DrawFn, issuer: Issuer) -> dict[str, Any]:
    accepted = draw(st.sampled_from(issuer.audiences))
    if issuer.multiple_audiences:
        others = draw(st.lists(_https.filter(lambda a: a not in ALL_AUDIENCES), max_size=2))
        aud: Any = draw(st.permutations([accepted, *others]))
    else:
        aud = draw(st.sampled_from([accepted, [accepted]]))
    iat = draw(st.one_of(st.integers(NOW - 10**8, NOW + SKEW),
                         st.floats(NOW - 10**8, NOW + SKEW, allow_nan=False)))
    events: dict[str, Any] = {}
    subject: Any = None
    for _ in range(draw(st.integers(1, issuer.max_events))):
        event_type, payload, subjects = draw(event())
        if subject is None:
            subject = draw(subjects)
        elif event_type.endswith(("identifier-changed", "verification", "stream-updated")):
            continue  # their subject constraint is on the shared sub_id; keep one such event
        events[event_type] = payload
    claims: dict[str, Any] = {"iss": issuer.iss, "aud": aud, "iat": iat,
                              "jti": draw(st.text(min_size=1, max_size=40)),
                              "sub_id": subject, "events": events}
    if draw(st.booleans()):
        claims["txn"] = draw(st.text(max_size=20))
    if draw(st.booleans()):
        claims["toe"] = draw(_timestamp)
    return claims


@st.composite
def signed_sets(draw: st.DrawFn) -> SignedSet:
    issuer = draw(st.sampled_from(ISSUERS))
    jwk, alg, with_kid = draw(st.sampled_from(issuer.keys))
    claims = draw(valid_claims(issuer))
    kid = jwk["kid"] if with_kid else None
    if with_kid and draw(st.booleans()):  # the project's own signer (pyjwt, json.dumps)
        token = sign_set(claims, signing_key(jwk), alg=alg, kid=kid)
        header = orjson.loads(unb64(token.split(".")[0]))
    else:
        header = set_header(alg, kid)
        if draw(st.booleans()):  # unknown, non-critical header members are ignored (RFC 7515)
            header["x-note"] = draw(st.text(max_size=12))
        token = compact(header, claims, jwk, alg)
    return SignedSet(token, header, claims, issuer, jwk, alg)


# --- positive control ------------------------------------------------------------------------

@settings(max_examples=POSITIVE_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(signed_sets(), st.booleans())
def test_every_valid_set_is_accepted_with_its_claims(signed: SignedSet, as_bytes: bool) -> None:
    result = verify(signed.token.encode("ascii") if as_bytes else signed.token)
    assert isinstance(result, VerifiedSet), (
        f"a valid SET was refused: {result.code.value}: {result.description}\n"
        f"claims={signed.claims!r}\nheader={signed.header!r}")
    assert result.claims == signed.claims
    assert result.header == signed.header
    assert result.claims["iss"] == signed.issuer.iss


def test_every_spec_example_reissued_is_accepted() -> None:
    """Each complete SET of tests/spec_examples, re-issued by a trusted issuer, verifies."""
    jwk, alg, _ = ISSUER_A.keys[0]
    for example in SPEC_SETS:
        claims = dict(example, iss=ISSUER_A.iss, aud=ISSUER_A.audiences[0], iat=NOW)
        result = verify(compact(set_header(alg, jwk["kid"]), claims, jwk, alg))
        assert isinstance(result, VerifiedSet), (example, result)
        assert result.claims == claims


# --- mutation ---------------------------------------------------------------------------------

def _pool() -> list[SignedSet]:
    """Valid SETs: RS256 and ES256, three issuers, several audiences, subjects and events."""
    pool = []
    for index, example in enumerate(SPEC_SETS[:12]):
        issuer = ISSUERS[index % len(ISSUERS)]
        jwk, alg, with_kid = issuer.keys[(index // len(ISSUERS)) % len(issuer.keys)]
        aud: Any = issuer.audiences[index % len(issuer.audiences)]
        if issuer.multiple_audiences and index % 2:
            aud = [aud, "https://unrelated.example.com"]
        claims = dict(example, iss=issuer.iss, aud=aud, iat=NOW - index, jti=f"jti-{index}")
        kid = jwk["kid"] if with_kid else None
        if with_kid and index % 3 == 0:
            token = sign_set(claims, signing_key(jwk), alg=alg, kid=kid)
            header = orjson.loads(unb64(token.split(".")[0]))
        else:
            header = set_header(alg, kid)
            token = compact(header, claims, jwk, alg)
        pool.append(SignedSet(token, header, claims, issuer, jwk, alg))
    return pool


POOL = _pool()
assert {s.alg for s in POOL} == {"RS256", "ES256"}
assert {s.issuer.iss for s in POOL} == TRUSTED

_B64URL = string.ascii_letters + string.digits + "-_"
# base64url itself (so replacements are often plausible), separators, padding, the standard
# alphabet, whitespace and control characters, and non-ASCII look-alikes
_MUTATION_CHARS = [*_B64URL, ".", "=", "+", "/", " ", "\t", "\n", "\r", "\x00", "\x0b", "\x0c",
                   "\x1c", "\x7f", "\u00e9", "\u00a0", "\u2028", "\u3000", "\u200b", "\ufeff",
                   "\uff0e"]
_JOSE_NAMES = ["alg", "typ", "kid", "crit", "jku", "jwk", "x5u", "x5c", "x5t", "cty", "b64",
               "zip", "enc", "iss", "aud"]
_CLAIM_NAMES = ["iss", "aud", "iat", "jti", "sub_id", "events", "exp", "sub", "nbf", "txn",
                "toe"]


@dataclass(frozen=True)
class Mutation:
    kind: str
    original: SignedSet
    token: str
    code: ErrorCode | None  # the exact RFC 8935 code when it is determined, else any refusal


def _with_segment(token: str, index: int, segment: str) -> str:
    parts = token.split(".")
    parts[index] = segment
    return ".".join(parts)


@st.composite
def byte_mutation(draw: st.DrawFn, original: SignedSet) -> Mutation:
    token = original.token
    kind = draw(st.sampled_from(["replace", "insert", "delete", "bitflip"]))
    if kind == "bitflip":
        index = draw(st.integers(0, 2))
        raw = bytearray(unb64(token.split(".")[index]))
        position = draw(st.integers(0, len(raw) - 1))
        raw[position] ^= 1 << draw(st.integers(0, 7))
        return Mutation(f"byte/bitflip-part-{index}", original,
                        _with_segment(token, index, b64(bytes(raw))), None)
    if kind == "delete":
        position = draw(st.integers(0, len(token) - 1))
        return Mutation("byte/delete", original, token[:position] + token[position + 1:], None)
    char = draw(st.sampled_from(_MUTATION_CHARS))
    if kind == "insert":
        position = draw(st.integers(0, len(token)))
        return Mutation("byte/insert", original, token[:position] + char + token[position:],
                        None)
    position = draw(st.integers(0, len(token) - 1))
    return Mutation("byte/replace", original, token[:position] + char + token[position + 1:],
                    None)


@st.composite
def field_mutation(draw: st.DrawFn, original: SignedSet) -> Mutation:
    """Change, remove or add one header member or claim, keeping the original signature."""
    index = draw(st.integers(0, 1))
    document = dict(original.header if index == 0 else original.claims)
    names = _JOSE_NAMES if index == 0 else _CLAIM_NAMES
    action = draw(st.sampled_from(["change", "remove", "add"]))
    if action == "add":
        name = draw(st.sampled_from(names) | st.text(max_size=10))
        assume(name not in document)
        document[name] = draw(json_values)
    else:
        name = draw(st.sampled_from(sorted(document)))
        if action == "remove":
            del document[name]
        else:
            document[name] = draw(json_values.filter(lambda v: v != document[name]))
    token = _with_segment(original.token, index, b64(orjson.dumps(document)))
    return Mutation(f"field/{action}-{'header' if index == 0 else 'claim'}-{name!r}", original,
                    token, None)


def _hmac(alg: str, secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), digest).digest())}"


@st.composite
def resigned_mutation(draw: st.DrawFn, original: SignedSet) -> Mutation:
    """A security-relevant change, signed again by the legitimate key of the issuer."""
    header, claims = dict(original.header), dict(original.claims)
    code: ErrorCode | None = ErrorCode.INVALID_REQUEST

    def resign() -> str:
        return compact(header, claims, original.jwk, original.alg)

    kind = draw(st.sampled_from(["iss-untrusted", "iss-other-trusted", "aud-wrong",
                                 "aud-list-wrong", "typ-other", "typ-removed", "alg-none",
                                 "alg-hmac", "kid-unknown", "exp-added", "sub-added",
                                 "iat-removed", "jti-removed", "events-removed",
                                 "events-empty", "iat-future", "crit-unknown"]))
    if kind == "iss-untrusted":
        claims["iss"] = draw(st.text(min_size=1, max_size=40).filter(lambda v: v not in TRUSTED))
        code = ErrorCode.INVALID_ISSUER
    elif kind == "iss-other-trusted":
        claims["iss"] = draw(st.sampled_from(sorted(TRUSTED - {original.issuer.iss})))
        code = None  # invalid_audience or invalid_key, depending on the other issuer's audience
    elif kind == "aud-wrong":
        claims["aud"] = draw(st.text(max_size=40).filter(
            lambda v: v not in original.issuer.audiences))
        code = ErrorCode.INVALID_AUDIENCE
    elif kind == "aud-list-wrong":
        claims["aud"] = draw(st.lists(st.text(max_size=40).filter(
            lambda v: v not in original.issuer.audiences), min_size=1, max_size=3))
        code = ErrorCode.INVALID_AUDIENCE
    elif kind == "typ-other":
        header["typ"] = draw(json_values.filter(lambda v: v != "secevent+jwt"))
    elif kind == "typ-removed":
        del header["typ"]
    elif kind == "alg-none":
        header["alg"] = "none"
        signature = draw(st.sampled_from(["", b64(b"\x00"), original.token.split(".")[2]]))
        return Mutation(f"resigned/{kind}", original, _with_segment(
            f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}.", 2, signature),
            ErrorCode.INVALID_KEY)
    elif kind == "alg-hmac":
        alg = draw(st.sampled_from(["HS256", "HS384", "HS512"]))
        header["alg"] = alg
        public = signing_key(original.jwk).public_key()
        secret = draw(st.sampled_from([
            public.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo),
            orjson.dumps(public_jwk(original.jwk)),
        ]))
        return Mutation(f"resigned/{kind}", original, _hmac(alg, secret, header, claims),
                        ErrorCode.INVALID_KEY)
    elif kind == "kid-unknown":
        header["kid"] = draw(st.text(max_size=20).filter(lambda v: v not in KIDS))
        code = ErrorCode.INVALID_KEY
    elif kind == "exp-added":
        claims["exp"] = draw(json_values)
    elif kind == "sub-added":
        claims["sub"] = draw(json_values)
    elif kind in {"iat-removed", "jti-removed", "events-removed"}:
        del claims[kind.split("-")[0]]
    elif kind == "events-empty":
        claims["events"] = {}
    elif kind == "iat-future":
        claims["iat"] = draw(st.integers(NOW + SKEW + 1, 2**53))
    elif kind == "crit-unknown":
        header["crit"] = draw(st.lists(st.text(max_size=10), min_size=1, max_size=3))
    return Mutation(f"resigned/{kind}", original, resign(), code)


@st.composite
def mutations(draw: st.DrawFn) -> Mutation:
    original = draw(st.sampled_from(POOL))
    family: Callable[[SignedSet], st.SearchStrategy[Mutation]] = draw(
        st.sampled_from([byte_mutation, byte_mutation, field_mutation, resigned_mutation]))
    return draw(family(original))


def _lenient_signature(segment: str) -> bytes | None:
    """The bytes a tolerant base64 decoder reads (either alphabet, any unused low bits)."""
    try:
        return base64.b64decode(segment.replace("-", "+").replace("_", "/")
                                + "=" * (-len(segment) % 4), validate=True)
    except ValueError:
        return None


def same_signed_content(original: str, mutated: str) -> bool:
    """Whether `mutated` carries exactly the header, payload and signature of `original`.

    A JWS signature covers the header and payload *text*, so any accepted change to those two
    segments would be a forgery. The signature segment is different: base64url has
    non-canonical spellings. In a segment of 4k+2 (4k+3) characters the last character has 4 (2)
    unused low bits, and `binascii.a2b_base64(strict_mode=True)` does not check them, so 15 (3)
    other final characters decode to the very same signature bytes. Such a token is not a
    forgery: it is the signed SET, byte for byte, spelled differently. The same holds for
    whitespace around the token (the verifier strips it, so a SET read from a file or stdin with
    its newline verifies). Those are the only benign acceptances; strictness of the encoding
    itself (standard-alphabet `+` `/` in the signature, non-ASCII whitespace around the token)
    is asserted by named cases in test_codec_attacks.py.
    """
    parts, mutated_parts = original.split("."), mutated.strip().split(".")
    if len(mutated_parts) != 3 or mutated_parts[:2] != parts[:2]:
        return False
    return _lenient_signature(mutated_parts[2]) == unb64(parts[2])


@settings(max_examples=MUTATION_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(mutations(), st.booleans())
def test_no_single_mutation_of_a_valid_set_is_accepted(mutation: Mutation,
                                                       as_bytes: bool) -> None:
    assume(mutation.token != mutation.original.token)  # e.g. a character replaced by itself
    note(f"mutation {mutation.kind}: {mutation.original.token!r} -> {mutation.token!r}")
    token: str | bytes = mutation.token
    if as_bytes:
        token = mutation.token.encode("utf-8")
    result = verify(token)
    label(f"family: {mutation.kind.split('/')[0]}")
    if isinstance(result, VerifiedSet):
        label("accepted: same signed content, spelled differently")
        assert mutation.code is None and same_signed_content(
            mutation.original.token, mutation.token), (
            f"ACCEPTED a mutated SET ({mutation.kind}): {mutation.token!r}")
        assert result.claims == mutation.original.claims
        assert result.header == mutation.original.header
        return
    if mutation.code is not None:
        assert result.code is mutation.code, (
            f"{mutation.kind}: {result.code.value}: {result.description}")


# --- batches ----------------------------------------------------------------------------------

def _same_outcome(batch: VerifiedSet | SetError, single: VerifiedSet | SetError) -> bool:
    if isinstance(single, VerifiedSet):
        return (isinstance(batch, VerifiedSet) and batch.header == single.header
                and batch.claims == single.claims and batch.items == single.items
                and batch.issuer is single.issuer)
    return (type(batch) is type(single) and batch.code is single.code
            and batch.description == single.description)


@settings(max_examples=BATCH_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(st.sampled_from(POOL).map(lambda s: s.token)
                | mutations().map(lambda m: m.token)
                | st.text(max_size=60) | st.binary(max_size=60)
                | st.sampled_from([None, 42, ["a.b.c"]]), max_size=12))
def test_a_batch_gets_per_token_exactly_what_verify_gives(tokens: list[Any]) -> None:
    """verify_all stages a batch (every token's checks before any signature); each token
    still gets what verify alone gives it, whatever its neighbours."""
    batch = VERIFIER.verify_all(tokens, now=NOW)
    assert len(batch) == len(tokens)
    for token, outcome in zip(tokens, batch, strict=True):
        single = verify(token)
        assert _same_outcome(outcome, single), (token, outcome, single)
    envelopes = VERIFIER.verify_envelopes(tokens, now=NOW)
    for outcome, envelope in zip(batch, envelopes, strict=True):
        if isinstance(outcome, VerifiedSet):
            assert envelope == (outcome.header, outcome.claims, outcome.issuer)


# --- total function ---------------------------------------------------------------------------

@settings(max_examples=TEXT_EXAMPLES, deadline=None)
@given(st.text(max_size=400) | st.text(alphabet=_B64URL + ".=+/ ", max_size=600))
def test_any_text_is_verified_or_refused(text: str) -> None:
    assert not isinstance(verify(text), VerifiedSet)


@settings(max_examples=BYTES_EXAMPLES, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_are_verified_or_refused(data: bytes) -> None:
    assert not isinstance(verify(data), VerifiedSet)


_header_junk = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "ES256", "PS256", "EdDSA", "none", "NONE", "HS256",
                                "hs512", ""]) | json_values,
        "typ": st.sampled_from(["secevent+jwt", "JWT", "application/secevent+jwt"])
        | json_values,
        "kid": st.sampled_from([*KIDS, "", "../x"]) | json_values,
        "crit": st.lists(json_values, max_size=3) | json_values,
        "jwk": st.just(public_jwk(ATTACKER)) | json_values,
        "jku": st.just("https://evil.example/jwks.json") | json_values,
        "b64": st.booleans(),
    },
)
_claims_junk = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.sampled_from(sorted(TRUSTED)) | json_values,
        "aud": st.sampled_from(sorted(ALL_AUDIENCES)) | json_values,
        "iat": st.integers(NOW - 10, NOW + 10) | json_values,
        "jti": st.text(max_size=8) | json_values,
        "exp": json_values,
        "sub": json_values,
        "sub_id": st.sampled_from([s["sub_id"] for s in SPEC_SETS]) | json_values,
        "events": st.dictionaries(st.sampled_from([CAEP + "session-revoked",
                                                   RISC + "account-disabled"]) | st.text(),
                                  json_values | st.dictionaries(st.text(max_size=6),
                                                                json_values, max_size=3),
                                  max_size=3) | json_values,
    },
)
_segment = st.one_of(
    (_header_junk | _claims_junk | json_values).map(lambda v: b64(orjson.dumps(v))),
    st.binary(max_size=300).map(b64),
    st.text(alphabet=_B64URL + "=+/ ", max_size=100),
)


@settings(max_examples=STRUCTURED_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_header_junk, _claims_junk, _segment,
       st.lists(st.sampled_from(["", "e30", "AAAA", "eyJ9", "=", "."]), max_size=3),
       st.booleans())
def test_structured_junk_is_verified_or_refused(header: dict[str, Any], claims: dict[str, Any],
                                                signature: str, extra: list[str],
                                                as_bytes: bool) -> None:
    token = ".".join([b64(orjson.dumps(header)), b64(orjson.dumps(claims)), signature, *extra])
    assert not isinstance(verify(token.encode() if as_bytes else token), VerifiedSet)


@settings(max_examples=SIGNED_JUNK_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_header_junk, _claims_junk, st.sampled_from(ISSUER_A.keys))
def test_signed_junk_is_verified_or_refused(header: dict[str, Any], claims: dict[str, Any],
                                            key: tuple[dict[str, Any], str, bool]) -> None:
    """Junk signed by a trusted key reaches every check after the signature, too."""
    jwk, alg, _ = key
    result = verify(compact(header, claims, jwk, alg))
    if isinstance(result, VerifiedSet):  # only a SET that meets every rule may pass
        assert result.claims == claims
        assert header.get("typ") == "secevent+jwt"
        assert header.get("alg") == alg
        assert "exp" not in claims
        assert "sub" not in claims


@settings(max_examples=NESTING_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 3000), st.sampled_from(["header", "typ", "payload", "iss", "aud", "sub_id",
                                               "event"]),
       st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]), st.booleans())
def test_nested_json_anywhere_is_verified_or_refused(depth: int, where: str,
                                                     brackets: tuple[bytes, bytes],
                                                     signed: bool) -> None:
    opening, closing = brackets
    value = opening * depth + (b"1" if opening != b"[" else b"") + closing * depth
    jwk, alg, _ = ISSUER_A.keys[0]
    header = orjson.dumps(set_header(alg, jwk["kid"]))
    claims = {"iss": ISSUER_A.iss, "aud": ISSUER_A.audiences[0], "iat": NOW, "jti": "j",
              "sub_id": {"format": "opaque", "id": "s"},
              "events": {CAEP + "session-revoked": {"initiating_entity": "policy"}}}
    payload = orjson.dumps(claims)
    if where == "header":
        header = header[:-1] + b',"x":' + value + b"}"
    elif where == "typ":
        header = b'{"alg":"RS256","kid":"a-rsa","typ":' + value + b"}"
    elif where == "payload":
        payload = payload[:-1] + b',"x":' + value + b"}"
    elif where == "event":
        payload = payload.replace(b'"initiating_entity"', b'"x":' + value + b',"i"')
    else:
        payload = payload.replace(f'"{where}":'.encode(), b'"' + where.encode() + b'":' + value
                                  + b',"was":', 1)
    token = (compact(header, payload, jwk, alg) if signed
             else f"{b64(header)}.{b64(payload)}.{b64(b'sig')}")
    verify(token, BIG_VERIFIER)


# Examples per run: mutation 3000, positive control 300 (+ every spec example re-issued),
# total function 1000 text + 1000 bytes + 800 structured + 500 signed junk + 200 nesting;
# 6800 generated examples in all (hypothesis may stop a test early once it has exhausted its
# search space, and runs more when it shrinks a failure).

"""The SET verifier: what it accepts, and the RFC 8935 code of everything it rejects."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import jwt
import orjson
import pytest
from joserfc import jws
from joserfc.jwk import RSAKey

from caep.codec import SetVerifier, sign_set
from caep.errors import ErrorCode, SetError
from caep.events import SessionRevoked
from caep.keys import generate_jwk, jwks_of, private_key, public_jwk
from caep.trust import IssuerConfig, TrustStore

ISS = "https://idp.example.com"
AUD = "https://rp.example.com"
REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
JWK = generate_jwk("RS256", kid="k1")
EC_JWK = generate_jwk("ES256", kid="e1")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS, "aud": AUD, "jti": "jti-1", "iat": int(time.time()),
        "sub_id": {"format": "email", "email": "a@example.com"},
        "events": {REVOKED: {"initiating_entity": "policy"}},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def verifier(**config: Any) -> SetVerifier:
    options: dict[str, Any] = {"iss": ISS, "audience": AUD, "jwks_file": "unused.json"}
    options.update(config)
    cfg = IssuerConfig(**options)
    return SetVerifier(TrustStore.from_jwks(cfg, jwks_of(JWK, EC_JWK)))


def sign(payload: dict[str, Any], jwk: dict[str, Any] = JWK, alg: str = "RS256") -> str:
    return sign_set(payload, private_key(jwk), alg=alg, kid=jwk["kid"])


def sign_exactly(payload: dict[str, Any]) -> str:
    """Sign without `sign_set` filling in a missing iat or jti."""
    return jwt.encode(payload, private_key(JWK), algorithm="RS256",
                      headers={"typ": "secevent+jwt", "kid": "k1"})


def raw_token(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes,
              signature: bytes = b"sig") -> str:
    h = header if isinstance(header, bytes) else orjson.dumps(header)
    p = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return f"{b64(h)}.{b64(p)}.{b64(signature)}"


def code_of(token: Any, v: SetVerifier | None = None) -> ErrorCode:
    with pytest.raises(SetError) as info:
        (v or verifier()).verify(token)
    return info.value.code


def test_valid_set_verifies_with_its_claims() -> None:
    token = sign(claims())
    verified = verifier().verify(token)
    assert verified.iss == ISS
    assert verified.jti == "jti-1"
    assert verified.events == {REVOKED: {"initiating_entity": "policy"}}
    (item,) = verified.items
    assert isinstance(item.event, SessionRevoked)
    assert item.event.initiating_entity == "policy"
    assert item.subject_raw == {"format": "email", "email": "a@example.com"}
    assert item.subject.format == "email"
    assert verified.tenant_for(item) == ISS
    assert verifier().verify(token.encode()).claims == verified.claims


def test_es256_when_configured_and_not_otherwise() -> None:
    token = sign(claims(), EC_JWK, "ES256")
    assert code_of(token) is ErrorCode.INVALID_KEY
    assert verifier(algorithms=["RS256", "ES256"]).verify(token).jti == "jti-1"


def test_set_signed_by_joserfc_verifies() -> None:
    header = {"alg": "RS256", "typ": "secevent+jwt", "kid": "k1"}
    token = jws.serialize_compact(header, orjson.dumps(claims()), RSAKey.import_key(JWK))
    assert verifier().verify(token).jti == "jti-1"


def test_project_signed_set_verifies_with_joserfc() -> None:
    token = sign(claims())
    obj = jws.deserialize_compact(token, RSAKey.import_key(public_jwk(JWK)))
    assert obj.protected["typ"] == "secevent+jwt"
    assert orjson.loads(obj.payload)["jti"] == "jti-1"


def test_forged_signature_is_invalid_key() -> None:
    forger = generate_jwk("RS256", kid="k1")
    assert code_of(sign(claims(), forger)) is ErrorCode.INVALID_KEY


def test_tampered_payload_is_invalid_key() -> None:
    header, _, signature = sign(claims()).split(".")
    tampered = f"{header}.{b64(orjson.dumps(claims(jti='other')))}.{signature}"
    assert code_of(tampered) is ErrorCode.INVALID_KEY


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"aud": "https://other.example.com"}, ErrorCode.INVALID_AUDIENCE),
        ({"aud": None}, ErrorCode.INVALID_AUDIENCE),
        ({"aud": [AUD, "https://other.example.com"]}, ErrorCode.INVALID_AUDIENCE),
        ({"iss": "https://evil.example.com"}, ErrorCode.INVALID_ISSUER),
        ({"iss": None}, ErrorCode.INVALID_REQUEST),
        ({"exp": int(time.time()) + 60}, ErrorCode.INVALID_REQUEST),
        ({"sub": "alice"}, ErrorCode.INVALID_REQUEST),
        ({"jti": None}, ErrorCode.INVALID_REQUEST),
        ({"jti": 7}, ErrorCode.INVALID_REQUEST),
        ({"iat": None}, ErrorCode.INVALID_REQUEST),
        ({"iat": True}, ErrorCode.INVALID_REQUEST),
        ({"iat": int(time.time()) + 3600}, ErrorCode.INVALID_REQUEST),
        ({"events": None}, ErrorCode.INVALID_REQUEST),
        ({"events": {}}, ErrorCode.INVALID_REQUEST),
        ({"events": {REVOKED: "x"}}, ErrorCode.INVALID_REQUEST),
        ({"events": {REVOKED: {}, "urn:other": {}}}, ErrorCode.INVALID_REQUEST),
        ({"sub_id": "alice"}, ErrorCode.INVALID_REQUEST),
    ],
)
def test_claim_violations_have_their_code(overrides: dict[str, Any], code: ErrorCode) -> None:
    assert code_of(sign_exactly(claims(**overrides))) is code


def test_multi_valued_audience_only_when_configured() -> None:
    token = sign(claims(aud=[AUD, "https://other.example.com"]))
    assert verifier(allow_multiple_audiences=True).verify(token).jti == "jti-1"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "RS256", "kid": "k1"},
        {"alg": "RS256", "kid": "k1", "typ": "JWT"},
        {"alg": "RS256", "kid": "k1", "typ": "application/secevent+jwt+x"},
        {"alg": "RS256", "kid": "k1", "typ": "secevent+jwt", "crit": ["exp"]},
        {"alg": "RS256", "kid": 5, "typ": "secevent+jwt"},
        {"typ": "secevent+jwt", "kid": "k1"},
    ],
)
def test_header_violations_are_invalid_request(header: dict[str, Any]) -> None:
    assert code_of(raw_token(header, claims())) is ErrorCode.INVALID_REQUEST


def test_alg_none_and_hmac_key_confusion_are_refused() -> None:
    unsigned = raw_token({"alg": "none", "typ": "secevent+jwt"}, claims()).rsplit(".", 1)[0]
    assert code_of(unsigned + ".") is ErrorCode.INVALID_KEY
    assert code_of(raw_token({"alg": "none", "typ": "secevent+jwt"}, claims())) is (
        ErrorCode.INVALID_KEY)
    header = {"alg": "HS256", "typ": "secevent+jwt", "kid": "k1"}
    public_pem = orjson.dumps(public_jwk(JWK))
    signing_input = raw_token(header, claims()).rsplit(".", 1)[0]
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert code_of(f"{signing_input}.{b64(mac)}") is ErrorCode.INVALID_KEY


def test_unknown_kid_is_invalid_key() -> None:
    other = dict(JWK, kid="k9")
    assert code_of(sign(claims(), other)) is ErrorCode.INVALID_KEY


def test_duplicate_json_members_are_rejected() -> None:
    header = b'{"alg":"RS256","typ":"secevent+jwt","kid":"k1","typ":"secevent+jwt"}'
    assert code_of(raw_token(header, claims())) is ErrorCode.INVALID_REQUEST
    payload = orjson.dumps(claims())[:-1] + b',"iss":"https://evil.example.com"}'
    token = raw_token({"alg": "RS256", "typ": "secevent+jwt", "kid": "k1"}, payload)
    assert code_of(token) is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(
    "token",
    [
        "", "abc", "a.b", "a.b.c.d", "a.b.c.d.e", "!!!.???.***", "eyJ=.eyJ=.sig",
        b"\xff\xfe\x00", 12345, None, ["a"], "é.é.é", "x" * 70000,
        raw_token(b"[1,2]", claims()), raw_token(b"\xff\xfe", claims()),
        raw_token({"alg": "RS256", "typ": "secevent+jwt"}, b"[" * 5000 + b"]" * 5000),
    ],
)
def test_malformed_input_is_invalid_request(token: Any) -> None:
    assert code_of(token) is ErrorCode.INVALID_REQUEST


def test_error_body_is_rfc8935_shaped() -> None:
    with pytest.raises(SetError) as info:
        verifier().verify(sign(claims(aud="https://other.example.com")))
    body = info.value.to_dict()
    assert body["err"] == "invalid_audience"
    assert "audience" in body["description"]


ALL_ALGS = ["RS256", "PS256", "ES256", "EdDSA"]
ALG_KEYS = {alg: generate_jwk(alg, kid=f"k-{alg}") for alg in ALL_ALGS}


def multi_alg_verifier(allowed: list[str]) -> SetVerifier:
    cfg = IssuerConfig(iss=ISS, audience=AUD, jwks_file="unused.json", algorithms=allowed)
    return SetVerifier(TrustStore.from_jwks(cfg, jwks_of(*ALG_KEYS.values())))


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_every_configured_algorithm_verifies_joserfc_tokens_and_ours(alg: str) -> None:
    from joserfc.jwk import import_key

    jwk = ALG_KEYS[alg]
    header = {"alg": alg, "typ": "secevent+jwt", "kid": jwk["kid"]}
    theirs = jws.serialize_compact(header, orjson.dumps(claims()), import_key(jwk),
                                   algorithms=[alg])
    ours = sign_set(claims(), private_key(jwk), alg=alg, kid=jwk["kid"])
    assert multi_alg_verifier(ALL_ALGS).verify(theirs).jti == "jti-1"
    assert multi_alg_verifier(ALL_ALGS).verify(ours).jti == "jti-1"
    others = [a for a in ALL_ALGS if a != alg]
    assert code_of(ours, multi_alg_verifier(others)) is ErrorCode.INVALID_KEY
    public = import_key({k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq",
                                                                  "qi")})
    assert jws.deserialize_compact(ours, public, algorithms=[alg]).protected["alg"] == alg


def test_ecdsa_signature_of_wrong_length_is_invalid_key() -> None:
    jwk = ALG_KEYS["ES256"]
    token = sign_set(claims(), private_key(jwk), alg="ES256", kid=jwk["kid"])
    head, body, signature = token.split(".")
    short = f"{head}.{body}.{b64(base64.urlsafe_b64decode(signature + '==')[:-1])}"
    assert code_of(short, multi_alg_verifier(["ES256"])) is ErrorCode.INVALID_KEY

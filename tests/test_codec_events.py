"""The verifier types what a SET says: events by their models, subjects by RFC 9493 / SSF."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from caep.codec import SetVerifier, sign_set
from caep.errors import ErrorCode, ForeignTenant, SetError
from caep.events import (
    CredentialChange,
    SessionRevoked,
    UnrecognizedEvent,
    Verification,
)
from caep.keys import generate_jwk, jwks_of, private_key
from caep.subjects import subject_key
from caep.trust import IssuerConfig, TrustStore

ISS = "https://idp.example.com"
AUD = "https://rp.example.com"
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
SSF = "https://schemas.openid.net/secevent/ssf/event-type/"
JWK = generate_jwk("RS256", kid="k1")
KEY = private_key(JWK)
EXAMPLES = Path(__file__).parent / "spec_examples"


def verifier(iss: str = ISS, aud: str | list[str] = AUD, **options: Any) -> SetVerifier:
    cfg = IssuerConfig(iss=iss, audience=aud, jwks_file="unused.json", **options)
    return SetVerifier(TrustStore.from_jwks(cfg, jwks_of(JWK)))


def signed(events: dict[str, Any], sub_id: Any = None, **claims: Any) -> str:
    payload: dict[str, Any] = {"iss": ISS, "aud": AUD, "events": events, **claims}
    if sub_id is not None:
        payload["sub_id"] = sub_id
    return sign_set(payload, KEY, kid="k1")


def rejected(token: str, v: SetVerifier | None = None) -> SetError:
    with pytest.raises(SetError) as info:
        (v or verifier()).verify(token)
    return info.value


EMAIL = {"format": "email", "email": "Alice@Example.com"}


def test_events_and_subject_come_back_typed() -> None:
    token = signed({CAEP + "credential-change": {"credential_type": "password",
                                                "change_type": "update"}}, EMAIL)
    (item,) = verifier().verify(token).items
    assert isinstance(item.event, CredentialChange)
    assert item.event.change_type == "update"
    assert item.recognized
    assert item.subject_raw == EMAIL
    lower = {"format": "email", "email": "alice@example.com"}
    same_person = verifier().verify(signed({CAEP + "session-revoked": {}}, lower))
    assert subject_key(item.subject) == subject_key(same_person.items[0].subject)


def test_legacy_in_event_subject_is_the_subject_when_there_is_no_sub_id() -> None:
    token = signed({CAEP + "session-revoked": {"subject": EMAIL}})
    (item,) = verifier().verify(token).items
    assert isinstance(item.event, SessionRevoked)
    assert item.subject_raw == EMAIL


def test_a_set_about_no_subject_is_invalid_request() -> None:
    error = rejected(signed({CAEP + "session-revoked": {}}))
    assert error.code is ErrorCode.INVALID_REQUEST
    assert "no subject" in error.description


@pytest.mark.parametrize(
    ("events", "sub_id", "fragment"),
    [
        ({CAEP + "credential-change": {"credential_type": "password"}}, EMAIL, "change_type"),
        ({CAEP + "session-revoked": {"initiating_entity": "robot"}}, EMAIL, "initiating_entity"),
        ({CAEP + "session-revoked": {}}, {"format": "email"}, "subject"),
        ({CAEP + "session-revoked": {}}, {"format": "complex"}, "subject"),
        ({SSF + "verification": {"state": "abc"}}, EMAIL, "opaque"),
    ],
)
def test_non_conforming_events_and_subjects_are_invalid_request(
    events: dict[str, Any], sub_id: Any, fragment: str
) -> None:
    error = rejected(signed(events, sub_id))
    assert error.code is ErrorCode.INVALID_REQUEST
    assert fragment in error.description


def test_unknown_event_type_is_kept_not_guessed() -> None:
    payload = {"anything": [1, 2, {"x": None}]}
    (item,) = verifier().verify(signed({"https://vendor.example/ev/x": payload}, EMAIL)).items
    assert isinstance(item.event, UnrecognizedEvent)
    assert not item.recognized
    assert item.event.payload == payload


def test_tenant_comes_from_the_subject_else_from_the_issuer() -> None:
    """An issuer with no tenant configured (a multi-tenant IdP) names it in the subject; one
    bound to a tenant speaks for that tenant only."""
    def naming(tenant: str) -> dict[str, Any]:
        return {"format": "complex", "user": EMAIL,
                "tenant": {"format": "opaque", "id": tenant}}

    shared = verifier()
    named = shared.verify(signed({CAEP + "session-revoked": {}}, naming("acme")))
    assert named.tenant_for(named.items[0]) == "acme"
    bound = verifier(tenant="default-tenant")
    without = bound.verify(signed({CAEP + "session-revoked": {}}, EMAIL))
    assert without.tenant_for(without.items[0]) == "default-tenant"
    own = bound.verify(signed({CAEP + "session-revoked": {}}, naming("default-tenant")))
    assert own.tenant_for(own.items[0]) == "default-tenant"
    with pytest.raises(ForeignTenant) as refused:
        bound.verify(signed({CAEP + "session-revoked": {}}, naming("acme")))
    assert refused.value.code.value == "access_denied"


def test_ssf_verification_event_with_opaque_stream_subject() -> None:
    token = signed({SSF + "verification": {"state": "c3RhdGU"}},
                   {"format": "opaque", "id": "f67e39a0a4d34d56b3aa1bc4cff0069f"})
    (item,) = verifier().verify(token).items
    assert isinstance(item.event, Verification)


def spec_sets() -> list[Path]:
    found = []
    for path in sorted(EXAMPLES.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(document, dict) and "events" in document and "iss" in document:
            found.append(path)
    return found


@pytest.mark.parametrize("path", spec_sets(), ids=lambda p: p.stem)
def test_every_spec_example_set_passes_the_whole_verifier(path: Path) -> None:
    """Signed as its issuer would sign it, each example SET verifies with typed events."""
    claims = json.loads(path.read_text(encoding="utf-8"))
    claims["iat"] = int(time.time())
    aud = claims.get("aud", AUD)
    if "aud" not in claims:
        claims["aud"] = aud
    v = verifier(iss=claims["iss"], aud=aud, allow_multiple_audiences=isinstance(aud, list))
    verified = v.verify(sign_set(claims, KEY, kid="k1"))
    assert verified.items
    assert all(item.recognized for item in verified.items), path.name

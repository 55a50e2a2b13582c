"""Event models against every example SET of the specs, generated payloads and junk.

``spec_examples/`` holds each example of CAEP 1.0, RISC 1.0, SSF 1.0 and RFC 9493 (subject
examples only), copied from the specs' sources (openid/sharedsignals at the 2025-08-29 "Prepare
for v1" text; RFC 9493 from draft-ietf-secevent-subject-identifiers-18), one per file named
``<spec>-<section>-<figure anchor>.json``. Fragments (``"sub_id": {...}``) are wrapped in ``{}``
and HTTP request examples keep only their JSON body. One erratum is fixed: RISC §2.3's example
has a trailing comma after ``"sub"``, which is not JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caep.errors import InvalidRequest
from caep.events import (
    ACCOUNT_DISABLED_REASONS,
    ASSURANCE_NAMESPACES,
    CAEP,
    CREDENTIAL_TYPES,
    EVENT_MODELS,
    RISC,
    RISK_PRINCIPALS,
    SSF,
    AccountDisabled,
    AccountPurged,
    AssuranceLevelChange,
    CredentialChange,
    CredentialCompromise,
    DeviceComplianceChange,
    Event,
    IdentifierChanged,
    RiskLevelChange,
    SessionEstablished,
    SessionPresented,
    SessionRevoked,
    StreamUpdated,
    TokenClaimsChange,
    UnrecognizedEvent,
    Verification,
    parse_event,
)
from caep.subjects import ComplexSubject, UnknownFormatSubject, parse_subject

EXAMPLES = Path(__file__).parent / "spec_examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def test_every_spec_section_is_represented() -> None:
    names = {p.name for p in EXAMPLE_FILES}
    sets = [p for p in EXAMPLE_FILES if "events" in _load(p)]
    assert len(sets) == 27
    typed = {t for p in sets for t in _load(p)["events"]}
    assert typed <= set(EVENT_MODELS)
    assert {n.split("-")[0] for n in names} == {"caep", "risc", "ssf", "rfc9493"}


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_spec_example_parses_to_typed_models(path: Path) -> None:
    doc = _load(path)
    subjects = [doc] if "format" in doc else [doc[k] for k in ("sub_id", "subject") if k in doc]
    for payload in doc.get("events", {}).values():
        if "subject" in payload:
            subjects.append(payload["subject"])
    assert subjects, "every example names a subject"
    for wire in subjects:
        subject = parse_subject(wire)
        assert subject.model_dump(mode="json", exclude_none=True) == wire
    for event_type, payload in doc.get("events", {}).items():
        event = parse_event(event_type, payload)
        assert isinstance(event, EVENT_MODELS[event_type])
        assert event.model_dump(mode="json", exclude_none=True) == payload


def test_spec_examples_read_as_the_spec_means() -> None:
    revoked = parse_event(
        CAEP + "session-revoked",
        _load(EXAMPLES / "caep-3.1-session-revoked-example-user-sub.json")["events"][
            CAEP + "session-revoked"
        ],
    )
    assert isinstance(revoked, SessionRevoked)
    assert revoked.initiating_entity == "policy"
    assert revoked.reason_user == {
        "en": "Access attempt from multiple regions.",
        "es-410": "Intento de acceso desde varias regiones.",
    }
    assert revoked.event_timestamp == 1615304991
    custom = _load(EXAMPLES / "caep-3.4-assurance-level-change-examples-custom.json")
    assurance = parse_event(
        CAEP + "assurance-level-change", custom["events"][CAEP + "assurance-level-change"]
    )
    assert isinstance(assurance, AssuranceLevelChange)
    assert (assurance.namespace, assurance.previous_level) == ("Retinal Scan", None)
    changed = _load(EXAMPLES / "risc-2.5-identifier-changed-example.json")
    event = parse_event(RISC + "identifier-changed", changed["events"][RISC + "identifier-changed"])
    assert isinstance(event, IdentifierChanged)
    assert event.new_value == "john.roe@example.com"
    proprietary = _load(EXAMPLES / "ssf-5-subject-custom-type-ex.json")
    assert isinstance(parse_subject(proprietary["sub_id"]), UnknownFormatSubject)
    complex_ex = _load(EXAMPLES / "caep-3.1-session-revoked-example-user-device.json")
    assert isinstance(parse_subject(complex_ex["sub_id"]), ComplexSubject)


def test_registry_covers_the_three_specs() -> None:
    assert len(EVENT_MODELS) == 24
    assert sum(uri.startswith(CAEP) for uri in EVENT_MODELS) == 8
    assert sum(uri.startswith(RISC) for uri in EVENT_MODELS) == 14
    assert sum(uri.startswith(SSF) for uri in EVENT_MODELS) == 2
    for uri, model in EVENT_MODELS.items():
        assert model.event_type == uri
        assert issubclass(model, Event)
    assert Verification.subject_formats == StreamUpdated.subject_formats == frozenset({"opaque"})
    assert SessionRevoked.subject_formats is None


texts = st.text(max_size=16)
lang_maps = st.dictionaries(
    st.from_regex(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}", fullmatch=True), texts, min_size=1
)
numeric_dates = st.integers(0, 2**40) | st.floats(0, 2**40, allow_nan=False)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
legacy_subjects = st.sampled_from(
    [
        _load(p)["sub_id"]
        for p in EXAMPLE_FILES
        if "sub_id" in _load(p) and p.name.startswith(("caep", "risc", "ssf"))
    ]
)
unknown_members = st.dictionaries(texts.map("x-{}".format), json_values, max_size=2)
open_enum = texts.filter(bool)

CAEP_COMMON: dict[str, st.SearchStrategy[Any]] = {
    "subject": legacy_subjects,
    "event_timestamp": numeric_dates,
    "initiating_entity": st.sampled_from(["admin", "user", "policy", "system"]),
    "reason_admin": lang_maps,
    "reason_user": lang_maps,
}
RISC_COMMON: dict[str, st.SearchStrategy[Any]] = {"subject": legacy_subjects}
levels = st.sampled_from(["LOW", "MEDIUM", "HIGH"])
statuses = st.sampled_from(["compliant", "not-compliant"])

PAYLOADS: dict[type[Event], tuple[dict[str, st.SearchStrategy[Any]], ...]] = {
    SessionRevoked: ({}, CAEP_COMMON),
    TokenClaimsChange: (
        {"claims": st.dictionaries(texts, json_values, min_size=1, max_size=3)},
        CAEP_COMMON,
    ),
    CredentialChange: (
        {
            "credential_type": st.sampled_from(CREDENTIAL_TYPES) | open_enum,
            "change_type": st.sampled_from(["create", "revoke", "update", "delete"]),
        },
        CAEP_COMMON
        | {k: texts for k in ("friendly_name", "x509_issuer", "x509_serial", "fido2_aaguid")},
    ),
    AssuranceLevelChange: (
        {"namespace": st.sampled_from(ASSURANCE_NAMESPACES) | open_enum, "current_level": texts},
        CAEP_COMMON
        | {"previous_level": texts, "change_direction": st.sampled_from(["increase", "decrease"])},
    ),
    DeviceComplianceChange: (
        {"previous_status": statuses, "current_status": statuses},
        CAEP_COMMON,
    ),
    SessionEstablished: (
        {},
        CAEP_COMMON | {"fp_ua": texts, "acr": texts, "amr": st.lists(texts), "ext_id": texts},
    ),
    SessionPresented: ({}, CAEP_COMMON | {"fp_ua": texts, "ext_id": texts}),
    RiskLevelChange: (
        {"principal": st.sampled_from(RISK_PRINCIPALS) | open_enum, "current_level": levels},
        CAEP_COMMON | {"risk_reason": texts, "previous_level": levels},
    ),
    AccountDisabled: (
        {},
        RISC_COMMON | {"reason": st.sampled_from(ACCOUNT_DISABLED_REASONS) | open_enum},
    ),
    IdentifierChanged: ({}, RISC_COMMON | {"new-value": texts}),
    CredentialCompromise: (
        {"credential_type": st.sampled_from(CREDENTIAL_TYPES) | open_enum},
        RISC_COMMON
        | {
            "event_timestamp": numeric_dates,
            "reason_admin": lang_maps | texts,
            "reason_user": lang_maps | texts,
        },
    ),
    Verification: ({}, {"state": texts}),
    StreamUpdated: (
        {"status": st.sampled_from(["enabled", "paused", "disabled"])},
        {"reason": texts},
    ),
}
for _model in EVENT_MODELS.values():
    PAYLOADS.setdefault(_model, ({}, RISC_COMMON))


def payloads(model: type[Event]) -> st.SearchStrategy[dict[str, Any]]:
    required, optional = PAYLOADS[model]
    return st.builds(
        lambda defined, unknown: unknown | defined,
        st.fixed_dictionaries(required, optional=optional),
        unknown_members,
    )


@settings(max_examples=60)
@pytest.mark.parametrize("model", list(EVENT_MODELS.values()), ids=lambda m: m.__name__)
@given(data=st.data())
def test_generated_payloads_round_trip(model: type[Event], data: st.DataObject) -> None:
    payload = data.draw(payloads(model))
    event = parse_event(model.event_type, payload)
    assert type(event) is model
    dumped = event.model_dump(mode="json", exclude_none=True)
    assert dumped == payload
    assert parse_event(model.event_type, json.loads(json.dumps(dumped))) == event


@pytest.mark.parametrize(
    ("model", "payload"),
    [
        (CredentialChange, {"credential_type": "smart-card", "change_type": "create"}),
        (AssuranceLevelChange, {"namespace": "Retinal Scan", "current_level": "hi-res-scan"}),
        (RiskLevelChange, {"principal": "WORKLOAD", "current_level": "HIGH"}),
        (AccountDisabled, {"reason": "terms-of-service"}),
        (CredentialCompromise, {"credential_type": "passkey", "reason_admin": "found in a dump"}),
        (SessionRevoked, {"vendor_extension": {"risk": 97}, "event_timestamp": 1.5}),
        (SessionRevoked, {"event_timestamp": None, "reason_user": None}),
    ],
)
def test_values_the_specs_allow_are_accepted(model: type[Event], payload: dict[str, Any]) -> None:
    assert type(parse_event(model.event_type, payload)) is model


@pytest.mark.parametrize(
    ("model", "payload", "expected"),
    [
        (CredentialChange, {"credential_type": "password"}, "change_type: Field required"),
        (CredentialChange, {"credential_type": "pin", "change_type": "rotate"}, "change_type: "),
        (CredentialChange, {"credential_type": 3, "change_type": "create"}, "credential_type: "),
        (SessionRevoked, {"initiating_entity": "robot"}, "initiating_entity: Input should be"),
        (SessionRevoked, {"reason_admin": {}}, "reason_admin: needs at least 1"),
        (SessionRevoked, {"reason_admin": "text"}, "reason_admin: Input should be a valid dict"),
        (SessionRevoked, {"reason_user": {"not a tag": "x"}}, "reason_user.not a tag: "),
        (SessionRevoked, {"reason_user": {"en": 5}}, "reason_user.en: "),
        (SessionRevoked, {"event_timestamp": "1615304991"}, "event_timestamp: must be a JSON num"),
        (SessionRevoked, {"event_timestamp": True}, "event_timestamp: must be a JSON number"),
        (SessionRevoked, {"subject": {"format": "email"}}, "subject.email: Field required"),
        (SessionRevoked, {"subject": "jane"}, 'subject: needs to be a JSON object with a string "'),
        (TokenClaimsChange, {}, "claims: Field required"),
        (TokenClaimsChange, {"claims": {}}, "claims: needs at least 1"),
        (
            DeviceComplianceChange,
            {"previous_status": "compliant", "current_status": "unknown"},
            "current_status: Input should be 'compliant' or 'not-compliant'",
        ),
        (RiskLevelChange, {"principal": "USER", "current_level": "low"}, "current_level: "),
        (RiskLevelChange, {"current_level": "LOW"}, "principal: Field required"),
        (AssuranceLevelChange, {"namespace": "NIST-AAL"}, "current_level: Field required"),
        (
            AssuranceLevelChange,
            {"namespace": "NIST-AAL", "current_level": "2", "change_direction": "up"},
            "change_direction: ",
        ),
        (SessionEstablished, {"amr": "otp"}, "amr: Input should be a valid"),
        (SessionPresented, {"ext_id": 12345}, "ext_id: Input should be a valid string"),
        (IdentifierChanged, {"new-value": ["a"]}, "new-value: Input should be a valid string"),
        (CredentialCompromise, {}, "credential_type: Field required"),
        (CredentialCompromise, {"credential_type": "x", "reason_user": {}}, "reason_user: "),
        (StreamUpdated, {"status": "stopped"}, "status: Input should be 'enabled', 'paused' or"),
        (StreamUpdated, {}, "status: Field required"),
        (Verification, {"state": 1}, "state: Input should be a valid string"),
        (AccountPurged, {"subject": {"format": "complex"}}, "subject: a complex subject needs"),
    ],
)
def test_malformed_payloads_name_the_event_and_field(
    model: type[Event], payload: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_event(model.event_type, payload)
    description = caught.value.description
    assert description.startswith(f"event {model.event_type}: ")
    assert expected in description
    assert caught.value.to_dict() == {"err": "invalid_request", "description": description}


@pytest.mark.parametrize("payload", [None, [], "x", 1, ["a"]])
def test_payload_must_be_an_object(payload: object) -> None:
    with pytest.raises(InvalidRequest, match="payload must be a JSON object"):
        parse_event(CAEP + "session-revoked", payload)


def test_event_type_must_be_a_string() -> None:
    with pytest.raises(InvalidRequest, match="event type must be a string"):
        parse_event(42, {})  # type: ignore[arg-type]


def test_unknown_event_types_are_kept_not_guessed() -> None:
    payload = {"from": {"format": "email", "email": "alice@example.com"}, "n": None}
    event = parse_event("https://secevent.example.com/events/message-interception", payload)
    assert event == UnrecognizedEvent(
        event_type="https://secevent.example.com/events/message-interception", payload=payload
    )
    near_miss = parse_event(CAEP + "session-revoked/", {})
    assert isinstance(near_miss, UnrecognizedEvent)
    with pytest.raises(InvalidRequest, match="urn:x: payload is not JSON data"):
        parse_event("urn:x", {"x": {1, 2}})


def test_models_are_frozen() -> None:
    event = parse_event(CAEP + "session-revoked", {"initiating_entity": "user"})
    with pytest.raises(ValueError, match="frozen"):
        event.initiating_entity = "admin"  # type: ignore[misc]


def test_deep_nesting_is_rejected_cleanly() -> None:
    deep: Any = 0
    for _ in range(100_000):
        deep = [deep]
    for event_type in (CAEP + "token-claims-change", "urn:unknown"):
        with pytest.raises(InvalidRequest) as caught:
            parse_event(event_type, {"claims": {"a": deep}})
        assert len(caught.value.description) <= 600


junk_values = st.one_of(
    json_values,
    st.from_type(type).flatmap(st.from_type),
    st.sets(st.integers(), max_size=2),
    st.binary(max_size=4),
)


@st.composite
def damaged_payloads(draw: st.DrawFn) -> tuple[str, object]:
    model = draw(st.sampled_from(list(EVENT_MODELS.values())))
    payload = draw(payloads(model))
    field = draw(st.sampled_from([*payload, "subject", "claims", "format"]))
    payload[field] = draw(junk_values)
    return model.event_type, payload


@settings(max_examples=400)
@given(
    st.one_of(
        damaged_payloads(),
        st.tuples(st.sampled_from([*EVENT_MODELS, "urn:x"]) | texts, junk_values),
        st.tuples(st.sampled_from(list(EVENT_MODELS)), st.dictionaries(texts, junk_values)),
    )
)
def test_junk_is_an_event_or_invalid_request(case: tuple[str, object]) -> None:
    event_type, payload = case
    try:
        event = parse_event(event_type, payload)
    except InvalidRequest as exc:
        assert event_type in exc.description
    else:
        assert isinstance(event, Event | UnrecognizedEvent)

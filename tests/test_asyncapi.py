"""schemas/asyncapi.yaml is current, valid AsyncAPI 3.0.0, covers exactly the topic settings,
and its schemas accept the records the code really writes."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from caep.activity import parse_activity
from caep.asyncapi import (
    DEFAULT_PATH,
    DEVICE_KEY_EXAMPLE,
    SUBJECT_KEY_EXAMPLE,
    TOPICS,
    build_document,
    render,
)
from caep.codec import SetVerifier, sign_set
from caep.evaluation import Tick, decide, device_key, security_events
from caep.keys import generate_jwk, jwks_of, private_key
from caep.schemas import DEFAULT_DIRECTORY
from caep.settings import Settings
from caep.ssf.auth import ReceiverClient
from caep.ssf.management import create
from caep.trust import IssuerConfig, TrustStore
from caep.wire import encode_input
from streams.app import dead_letter_record
from streams.topics import compacted_topics

VENDOR = Path(__file__).parent / "vendor"
REGENERATE = "make schemas (or: python -m caep.asyncapi)"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def asyncapi_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((VENDOR / "asyncapi-3.0.0.json").read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema,
                                      format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def test_checked_in_document_is_what_the_code_generates() -> None:
    assert DEFAULT_PATH.read_text(encoding="utf-8") == render(build_document()), (
        f"schemas/asyncapi.yaml is out of date: run `{REGENERATE}`")


def test_document_is_valid_asyncapi_3(document: dict[str, Any],
                                      asyncapi_validator: jsonschema.Draft7Validator) -> None:
    errors = [f"{e.json_path}: {e.message[:200]}" for e in asyncapi_validator.iter_errors(document)]
    assert errors == []


def test_the_asyncapi_schema_does_reject_a_broken_document(
        document: dict[str, Any], asyncapi_validator: jsonschema.Draft7Validator) -> None:
    """The check above is not vacuous: AsyncAPI 2's `publish` is no 3.0 action."""
    broken = copy.deepcopy(document)
    next(iter(broken["operations"].values()))["action"] = "publish"
    assert not asyncapi_validator.is_valid(broken)
    broken = copy.deepcopy(document)
    broken["channels"]["decisions"]["adress"] = "typo"
    assert not asyncapi_validator.is_valid(broken)


def test_channels_are_exactly_the_topic_settings(document: dict[str, Any]) -> None:
    defaults = Settings()
    settings = {f"CAEP_{name.upper()}": getattr(defaults, name)
                for name in Settings.model_fields if name.startswith("topic_")
                and isinstance(getattr(defaults, name), str)}
    channels = {c["x-caep-setting"]: c for c in document["channels"].values()}
    assert channels.keys() == settings.keys()
    for setting, channel in channels.items():
        assert channel["address"] == settings[setting]
        assert channel["bindings"]["kafka"]["topic"] == settings[setting]


def test_compacted_channels_match_the_topics_the_engine_compacts(document: dict[str, Any]) -> None:
    compacted = {c["address"] for c in document["channels"].values()
                 if c["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"] == ["compact"]}
    settings = Settings()
    # streams/topics.py compacts the flags; the edge's store compacts its streams topic.
    assert compacted == compacted_topics(settings) | {settings.topic_ssf_streams}


def test_addresses_follow_the_settings_they_are_built_from() -> None:
    document = build_document(Settings(topic_decisions="acme.decisions"))
    assert document["channels"]["decisions"]["address"] == "acme.decisions"


def test_every_operation_names_a_channel_message(document: dict[str, Any]) -> None:
    actions = set()
    for op in document["operations"].values():
        channel_id = op["channel"]["$ref"].removeprefix("#/channels/")
        channel = document["channels"][channel_id]
        for ref in op["messages"]:
            prefix = f"#/channels/{channel_id}/messages/"
            assert ref["$ref"].startswith(prefix)
            assert ref["$ref"].removeprefix(prefix) in channel["messages"]
        actions.add((channel["address"], op["action"]))
    # What the engine takes in and puts out, at least.
    assert {("caep.security-events", "receive"), ("caep.session-activity", "receive"),
            ("caep.decisions", "send"), ("caep.flags", "send"),
            ("caep.dead-letter", "send")} <= actions


def test_every_referenced_schema_file_exists(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    refs = [m["payload"]["schema"]["$ref"] for m in messages.values()
            if "$ref" in m["payload"].get("schema", {})]
    refs += list(messages["securityEventToken"]["x-caep-event-schemas"].values())
    assert len(refs) > 20
    for ref in refs:
        assert (DEFAULT_DIRECTORY / ref).is_file(), ref


# ---- The payload and key schemas accept what the code writes --------------------------------

def _payload_validator(document: dict[str, Any], message: str) -> jsonschema.Validator:
    """A validator for one message's payload: a referenced 2020-12 file, an embedded 2020-12
    schema, or an inline AsyncAPI (draft-07 superset) schema."""
    payload = document["components"]["messages"][message]["payload"]
    if "schemaFormat" not in payload:
        return jsonschema.Draft7Validator(payload)
    assert payload["schemaFormat"] == "application/schema+json;version=draft-2020-12"
    schema = payload["schema"]
    if "$ref" in schema:
        path = DEFAULT_DIRECTORY / schema["$ref"]
        schema = json.loads(path.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def signed() -> dict[str, Any]:
    jwk = generate_jwk()
    cfg = IssuerConfig(iss="https://idp", audience="https://rp", jwks_file="-", tenant="acme")
    verifier = SetVerifier(TrustStore.from_jwks(cfg, jwks_of(jwk)))
    token = sign_set({"iss": "https://idp", "aud": "https://rp",
                      "sub_id": {"format": "email", "email": "Alice@Example.com"},
                      "events": {"https://schemas.openid.net/secevent/caep/event-type/"
                                 "session-revoked": {}}}, private_key(jwk), kid=jwk["kid"])
    return {"token": token, "verified": verifier.verify(token)}


def test_security_event_schemas_accept_a_signed_set(document: dict[str, Any],
                                                    signed: dict[str, Any]) -> None:
    validator = _payload_validator(document, "securityEventToken")
    assert validator.is_valid(signed["token"])
    assert not validator.is_valid(signed["token"] + ".extra")


def test_decision_schema_accepts_a_real_decision(document: dict[str, Any],
                                                 signed: dict[str, Any]) -> None:
    [decision] = decide(signed["verified"], now=0.0)
    record = json.loads(decision.to_json())
    _payload_validator(document, "decision").validate(record)
    assert not _payload_validator(document, "decision").is_valid({**record, "action": "explode"})
    # The key format documented is the one the engine uses.
    assert decision.subject_key == SUBJECT_KEY_EXAMPLE


def test_engine_input_schema_accepts_every_kind_of_input(document: dict[str, Any],
                                                         signed: dict[str, Any]) -> None:
    validator = _payload_validator(document, "engineInput")
    [event] = security_events(signed["verified"])
    activity = parse_activity({"kind": "established", "tenant": "acme",
                               "subject": {"format": "email", "email": "alice@example.com"},
                               "session_id": "s-1", "observed_at": time.time()})
    for item in (event, activity, Tick()):
        validator.validate(json.loads(encode_input(item)))
    assert not validator.is_valid({"type": "surprise"})
    _payload_validator(document, "sessionActivity").validate(
        activity.model_dump(mode="json", exclude_none=True))


def test_device_index_key_and_records(document: dict[str, Any], signed: dict[str, Any]) -> None:
    message = document["components"]["messages"]["deviceIndexRecord"]
    key_schema = jsonschema.Draft7Validator(message["bindings"]["kafka"]["key"])
    assert key_schema.is_valid(device_key("acme", "laptop-7"))
    assert device_key("acme", "dev-42") == DEVICE_KEY_EXAMPLE
    assert not key_schema.is_valid(SUBJECT_KEY_EXAMPLE)
    validator = _payload_validator(document, "deviceIndexRecord")
    validator.validate({"type": "uses", "subject_key": SUBJECT_KEY_EXAMPLE})
    [event] = security_events(signed["verified"])
    validator.validate(json.loads(encode_input(event)))


def test_dead_letter_schema_accepts_both_shapes(document: dict[str, Any]) -> None:
    from caep.errors import InvalidRequest

    validator = _payload_validator(document, "deadLetter")
    for value in (b"not a SET", b"\xff\xfe"):
        record = json.loads(dead_letter_record(InvalidRequest("bad"), topic="t", partition=0,
                                               offset=1, key=None, value=value))
        validator.validate(record)
    assert not validator.is_valid({**record, "err": "teapot"})


def test_ssf_stream_schema_accepts_a_stored_stream_and_a_tombstone(
        document: dict[str, Any]) -> None:
    receiver = ReceiverClient(client_id="rp-1", token_sha256="0" * 64,
                              audience="https://rp.example.com")
    record = create({"delivery": {"method": "urn:ietf:rfc:8936"}}, issuer="https://edge",
                    receiver=receiver, now=1.0)
    validator = _payload_validator(document, "ssfStream")
    validator.validate(json.loads(record.model_dump_json()))
    validator.validate(None)
    assert not validator.is_valid({"owner": "rp-1"})


def test_one_message_per_topic() -> None:
    assert len({t.message for t in TOPICS}) == len({t.setting for t in TOPICS}) == len(TOPICS)

"""End to end on the real broker: SETs in through Kafka, decisions and dead letters out."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from joserfc import jws
from joserfc.jwk import RSAKey

from caep.codec import SetVerifier, sign_set
from caep.evaluation import security_events
from caep.keys import generate_jwk, private_key
from caep.trust import TrustStore
from tests.conftest import (
    ISSUER,
    SESSION_REVOKED,
    Idp,
    Topics,
    WorkerProcess,
    collect,
    produce,
)
from tests.test_attack_corpus import metric_total


def sign_with_joserfc(idp: Idp, claims: dict[str, Any]) -> str:
    """Another JOSE library entirely, as an identity provider might use."""
    key = RSAKey.import_key(idp.jwk)
    header = {"alg": "RS256", "typ": "secevent+jwt", "kid": idp.jwk["kid"]}
    return jws.serialize_compact(header, orjson.dumps(claims), key)


def by_jti(jtis: set[str]) -> Any:
    def until(records: list[dict[str, Any]]) -> bool:
        seen = {r["value"].get("source_jti") for r in records if isinstance(r["value"], dict)}
        return jtis <= seen
    return until


def inputs_with(jti: str, count: int | None = None) -> Any:
    """The engine-input records carrying `jti`; with `count`, whether there are that many."""
    def select(records: list[dict[str, Any]]) -> Any:
        mine = [r for r in records if isinstance(r["value"], dict) and r["value"].get("jti") == jti]
        return mine if count is None else len(mine) >= count
    return select


def test_session_revoked_from_another_jose_library_becomes_a_decision(
    bootstrap: str, idp: Idp, topics: Topics, engine: WorkerProcess
) -> None:
    subject = {
        "format": "complex",
        "user": {"format": "email", "email": "alice@example.com"},
        "session": {"format": "opaque", "id": "sess-alice-1"},
        "tenant": {"format": "opaque", "id": "acme"},
    }
    claims = idp.claims(subject)
    token = sign_with_joserfc(idp, claims)
    published = time.monotonic()
    produce(bootstrap, topics.security_events, [token.encode()])

    records = collect(bootstrap, topics.decisions, by_jti({claims["jti"]}), timeout=5.0)
    mine = [r for r in records if r["value"].get("source_jti") == claims["jti"]]
    assert mine, f"no decision within 5 s; worker said:\n{''.join(engine.output[-30:])}"
    assert time.monotonic() - published < 5.0
    record = mine[0]
    decision = record["value"]
    assert decision["action"] == "revoke_session"
    assert decision["session_id"] == "sess-alice-1"
    assert decision["subject"] == subject
    assert decision["source_jti"] == claims["jti"]
    assert decision["source_iss"] == ISSUER
    assert any(SESSION_REVOKED in reason for reason in decision["reasons"])
    assert any(claims["jti"] in reason for reason in decision["reasons"])
    assert uuid.UUID(decision["decision_id"])
    assert abs(decision["decided_at"] - time.time()) < 60
    assert record["key"] == decision["subject_key"]


def test_subject_without_session_revokes_the_subject_once_however_often_delivered(
    bootstrap: str, idp: Idp, topics: Topics, engine: WorkerProcess
) -> None:
    subject = {"format": "email", "email": "bob@example.com"}
    claims = idp.claims(subject)
    token = idp.sign(claims).encode()
    later = idp.claims(subject, event={"initiating_entity": "user"})
    later["iat"] += 1
    later["events"] = {SESSION_REVOKED: {"event_timestamp": (claims["iat"] + 60) * 1000}}
    sentinel = idp.sign(later).encode()
    # Keyed by subject, as producers should, so the copies come before the sentinel.
    produce(bootstrap, topics.security_events, [token, token, token, sentinel], key=b"bob")

    records = collect(bootstrap, topics.decisions, by_jti({later["jti"]}))
    mine = [r["value"] for r in records if r["value"].get("source_jti") == claims["jti"]]
    assert len(mine) == 1, "a redelivered SET must change things once"
    inputs = collect(bootstrap, topics.engine_input, inputs_with(later["jti"], 1))
    assert len(inputs_with(claims["jti"])(inputs)) == 1, (
        "the (iss, jti) table must drop the copies before evaluation")
    assert mine[0]["action"] == "revoke_subject"
    assert mine[0]["session_id"] is None
    event_time = claims["events"][SESSION_REVOKED]["event_timestamp"] / 1000
    assert mine[0]["established_before"] == event_time


def test_invalid_sets_go_to_dead_letter_with_their_code_and_the_worker_keeps_going(
    bootstrap: str, idp: Idp, topics: Topics, engine: WorkerProcess
) -> None:
    subject = {"format": "email", "email": "mallory@example.com"}
    forger = generate_jwk("RS256", kid=idp.jwk["kid"])
    forged = sign_set(idp.claims(subject), private_key(forger), kid=idp.jwk["kid"])
    wrong_audience = idp.sign(idp.claims(subject, aud="https://other-rp.example.com"))
    plain_jwt = jwt.encode(idp.claims(subject), private_key(idp.jwk), algorithm="RS256",
                           headers={"kid": idp.jwk["kid"]})
    unknown_issuer = idp.sign(idp.claims(subject, iss="https://evil.example.com"))
    garbage = b"\xff\xfe not a token"
    valid_claims = idp.claims({"format": "email", "email": "carol@example.com"})
    cases = [forged.encode(), wrong_audience.encode(), plain_jwt.encode(),
             unknown_issuer.encode(), garbage, idp.sign(valid_claims).encode()]
    produce(bootstrap, topics.security_events, cases, key=b"same-partition")

    letters = collect(bootstrap, topics.dead_letter, lambda r: len(r) >= 5)
    codes = [r["value"]["err"] for r in letters]
    assert codes == ["invalid_key", "invalid_audience", "invalid_request", "invalid_issuer",
                     "invalid_request"]
    assert letters[0]["value"]["value"] == forged
    assert letters[4]["value"]["value_hex"] == garbage.hex()
    assert all(letter["value"]["description"] for letter in letters)

    decisions = collect(bootstrap, topics.decisions, by_jti({valid_claims["jti"]}))
    jtis = {r["value"]["source_jti"] for r in decisions}
    assert valid_claims["jti"] in jtis
    assert engine.process.poll() is None
    forged_jtis = {jwt.decode(t, options={"verify_signature": False})["jti"]
                   for t in (forged, wrong_audience, plain_jwt, unknown_issuer)}
    assert not jtis & forged_jtis


def subject_key_of(idp: Idp, token: bytes) -> bytes:
    """The key the push edge gives a SET's record: its tenant and canonical subject."""
    verified = SetVerifier(TrustStore.from_file(idp.trust_file)).verify(token)
    return security_events(verified)[0].key.encode()


def test_a_set_keyed_by_its_subject_is_evaluated_where_it_arrives(
    bootstrap: str, idp: Idp, topics: Topics, engine: WorkerProcess
) -> None:
    """No hop through engine-input for a record keyed as the edge keys it; one keyed otherwise
    takes the hop, and both change the same subject's state, each once."""
    user = {"format": "opaque", "id": "ivy"}
    first = idp.claims({"format": "complex", "user": user,
                        "session": {"format": "opaque", "id": "ivy-1"}})
    second = idp.claims({"format": "complex", "user": user,
                         "session": {"format": "opaque", "id": "ivy-2"}})
    token = idp.sign(first).encode()
    key = subject_key_of(idp, token)
    counted = httpx.get(f"{engine.web}/metrics", timeout=10).text
    produce(bootstrap, topics.security_events, [token, token, token], key=key)
    collect(bootstrap, topics.decisions, by_jti({first["jti"]}))
    produce(bootstrap, topics.security_events, [idp.sign(second).encode()], key=b"ivy")

    records = collect(bootstrap, topics.decisions, by_jti({second["jti"]}))
    inputs = collect(bootstrap, topics.engine_input, inputs_with(second["jti"], 1))
    assert inputs_with(first["jti"])(inputs) == [], "a SET keyed by its subject took the hop"
    made = [r["value"] for r in records if r["value"]["subject_key"] == key.decode()]
    assert [d["session_id"] for d in made if d["source_jti"] == first["jti"]] == ["ivy-1"], (
        "three copies must change things once")
    assert [d["session_id"] for d in made if d["source_jti"] == second["jti"]] == ["ivy-2"]
    assert {d["source_jti"] for d in made} == {first["jti"], second["jti"]}
    assert metric_total(counted, "caep_evaluated_on_arrival_total") + 1 == metric_total(
        httpx.get(f"{engine.web}/metrics", timeout=10).text, "caep_evaluated_on_arrival_total")


@pytest.mark.parametrize("store", ["rocksdb://", "memory://"])
def test_state_survives_a_worker_restart(bootstrap: str, idp: Idp, tmp_path: Path,
                                         store: str) -> None:
    """RocksDB keeps state on disk; the memory store recovers it from the changelog topics."""
    from tests.conftest import fresh_topics, start_worker, stop_worker

    topics = fresh_topics(bootstrap)
    env = {"CAEP_APP_ID": f"caep-restart-{uuid.uuid4().hex[:8]}", "CAEP_TABLE_STORE": store,
           "CAEP_DATA_DIR": str(tmp_path / "state")}
    subject = {"format": "complex", "user": {"format": "email", "email": "rob@example.com"},
               "session": {"format": "opaque", "id": "rob-1"}}
    revocation = idp.claims(subject)
    first = start_worker(bootstrap, idp.trust_file, topics, **env)
    try:
        first.wait_ready()
        produce(bootstrap, topics.security_events, [idp.sign(revocation).encode()], key=b"rob")
        collect(bootstrap, topics.decisions, by_jti({revocation["jti"]}))
    finally:
        assert stop_worker(first) == 0
    if store.startswith("rocksdb"):
        assert any((tmp_path / "state").rglob("*")), "RocksDB wrote nothing"

    second = start_worker(bootstrap, idp.trust_file, topics, **env)
    try:
        second.wait_ready()
        sentinel = idp.claims({"format": "email", "email": "rob@example.com"})
        produce(bootstrap, topics.security_events,
                [idp.sign(revocation).encode(), idp.sign(sentinel).encode()], key=b"rob")
        records = collect(bootstrap, topics.decisions, by_jti({sentinel["jti"]}))
        again = [r for r in records if r["value"]["source_jti"] == revocation["jti"]]
        assert len(again) == 1, "the restarted worker must remember what it already applied"
        inputs = collect(bootstrap, topics.engine_input, inputs_with(sentinel["jti"], 1))
        assert len(inputs_with(revocation["jti"])(inputs)) == 1, (
            "the restarted worker must remember the (iss, jti) pairs it took in")
    finally:
        stop_worker(second)


def test_a_pair_is_forgotten_after_the_replay_window_and_the_state_still_applies_it_once(
        bootstrap: str, idp: Idp) -> None:
    from tests.conftest import fresh_topics, start_worker, stop_worker

    topics = fresh_topics(bootstrap)
    worker = start_worker(bootstrap, idp.trust_file, topics, CAEP_REPLAY_WINDOW_SECONDS="1")
    subject = {"format": "email", "email": "rita@example.com"}
    revocation = idp.sign(idp.claims(subject)).encode()
    first_jti = jwt.decode(revocation, options={"verify_signature": False})["jti"]
    try:
        worker.wait_ready()
        produce(bootstrap, topics.security_events, [revocation], key=b"rita")
        collect(bootstrap, topics.decisions, by_jti({first_jti}))
        time.sleep(1.5)  # let the one-second window pass: the subject of this test is time
        # A record of the same partition (same key) makes the worker forget the old pair.
        later = idp.claims({"format": "email", "email": "rita@example.com"})
        last = idp.claims({"format": "email", "email": "rita@example.com"})
        produce(bootstrap, topics.security_events,
                [idp.sign(later).encode(), revocation, idp.sign(last).encode()], key=b"rita")
        inputs = collect(bootstrap, topics.engine_input, inputs_with(last["jti"], 1))
        assert len(inputs_with(first_jti)(inputs)) == 2, (
            "past the window the pair is forgotten, so the copy reaches evaluation")
        records = collect(bootstrap, topics.decisions, by_jti({last["jti"]}))
        assert len([r for r in records if r["value"]["source_jti"] == first_jti]) == 1, (
            "the subject's own memory of applied SETs still applies it once")
    finally:
        stop_worker(worker)

"""The pure SSF logic of caep/ssf/: no broker, no HTTP."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from caep.decisions import Action, Decision
from caep.events import parse_event
from caep.ssf import management, mapping, matching
from caep.ssf.auth import EdgeClients, ReceiverClient, bearer_token, token_hash
from caep.ssf.models import POLL, PUSH, transmitter_metadata
from caep.ssf.pollqueue import PollQueue
from caep.subjects import parse_subject

EXAMPLES = Path(__file__).parent / "spec_examples"
RECEIVER = ReceiverClient(client_id="rp", token_sha256=token_hash("t"),
                          audience="https://rp.example.com")


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    return loaded


@pytest.mark.parametrize(("number", "expected"), [(1, True), (2, True), (3, False)])
def test_ssf_8_1_3_1_subject_matching_examples(number: int, expected: bool) -> None:
    receiver = example(f"ssf-8.1.3.1-subject-matching-{number}-receiver.json")
    transmitter = example(f"ssf-8.1.3.1-subject-matching-{number}-transmitter.json")
    assert matching.subjects_match(receiver, transmitter) is expected
    assert matching.subjects_match(transmitter, receiver) is expected


def test_simple_subjects_match_only_when_identical() -> None:
    alice = {"format": "email", "email": "alice@example.com"}
    assert matching.subjects_match(alice, dict(alice))
    assert not matching.subjects_match(alice, {"format": "email", "email": "bob@example.com"})
    assert not matching.subjects_match(alice, {"format": "complex", "user": alice})


def stream(**changes: Any) -> Any:
    record = management.create({"delivery": {"method": POLL}}, issuer="https://tr.example",
                               receiver=RECEIVER, now=1.0, stream_id="s1")
    return record.model_copy(update=changes)


def test_default_subjects_all_and_none() -> None:
    add = example("ssf-8.1.3.2-figaddreq-body.json")["subject"]
    remove = example("ssf-8.1.3.3-figremovereq-body.json")["subject"]
    parse_subject(add)
    parse_subject(remove)
    record = stream()
    revoked = mapping.SESSION_REVOKED
    assert matching.wants(record, revoked, add)
    removed = matching.remove_subject(record, remove, 2.0)
    assert not matching.wants(removed, revoked, remove)
    assert matching.wants(removed, revoked, add)
    readded = matching.add_subject(removed, remove, 3.0)
    assert matching.wants(readded, revoked, remove) and readded.subjects_removed == []
    assert not matching.wants(record, revoked, add, default_all=False)
    assert matching.wants(matching.add_subject(record, add, 2.0), revoked, add,
                          default_all=False)
    assert not matching.wants(record, "urn:example:other", add)


def test_create_defaults_to_poll_and_intersects_events() -> None:
    record = management.create({"events_requested": [
        mapping.SESSION_REVOKED, "urn:example:secevent:events:type_2"]},
        issuer="https://tr.example", receiver=RECEIVER, now=5.0)
    config = record.config
    assert config.delivery.method == POLL
    assert config.delivery.endpoint_url == f"https://tr.example/ssf/poll/{config.stream_id}"
    assert config.events_delivered == [mapping.SESSION_REVOKED]
    assert config.aud == "https://rp.example.com" and record.owner == "rp"
    everything = management.create({}, issuer="https://tr.example", receiver=RECEIVER, now=5)
    assert everything.config.events_delivered == list(management.EVENTS_SUPPORTED)


def test_update_keeps_what_is_missing_and_replace_deletes_it() -> None:
    record = management.create(
        {"delivery": {"method": PUSH, "endpoint_url": "https://rp.example.com/e"},
         "description": "d", "events_requested": [mapping.SESSION_REVOKED]},
        issuer="https://tr.example", receiver=RECEIVER, now=1.0)
    sid = record.stream_id
    updated = management.update(record, {"stream_id": sid, "description": "e"},
                                issuer="https://tr.example", receiver=RECEIVER, now=2.0)
    assert updated.config.delivery == record.config.delivery
    assert updated.config.events_requested == [mapping.SESSION_REVOKED]
    assert updated.config.description == "e"
    replaced = management.replace(record, {"stream_id": sid}, issuer="https://tr.example",
                                  receiver=RECEIVER, now=2.0)
    assert replaced.config.description is None and replaced.config.delivery.method == POLL
    with pytest.raises(management.SsfError) as refused:
        management.update(record, {"stream_id": sid, "iss": "https://x"},
                          issuer="https://tr.example", receiver=RECEIVER, now=2.0)
    assert refused.value.status == 400


def test_poll_queue_semantics() -> None:
    queue = PollQueue(max_held=3, redeliver_after=10)
    for jti in "abcd":
        queue.offer(jti, f"token-{jti}")
    assert queue.dropped == 1 and list(queue.waiting) == ["b", "c", "d"]  # bounded
    queue.offer("b", "again")
    assert len(queue) == 3
    sets, more = queue.take(2, now=0)
    assert sets == {"b": "token-b", "c": "token-c"} and more
    assert queue.take(0, now=1) == ({}, True)
    queue.settle(["b"], {"c": ("invalid_key", None)})
    assert queue.rejected == {"c": ("invalid_key", None)}
    sets, more = queue.take(None, now=1)
    assert sets == {"d": "token-d"} and not more
    assert queue.take(None, now=5) == ({}, False)
    assert queue.take(None, now=11) == ({"d": "token-d"}, False)  # not acknowledged: again
    queue.settle(["d", "unknown"], {})
    assert len(queue) == 0
    queue.offer("e", "token-e")
    queue.offer("f", "token-f")
    queue.take(1, now=20)
    assert queue.withdraw() == [("f", "token-f")]  # handed-out SETs stay outstanding
    assert list(queue.outstanding) == ["e"] and not queue.waiting


def test_a_poll_set_is_offered_at_most_max_deliveries_times() -> None:
    queue = PollQueue(max_held=10, redeliver_after=1, max_deliveries=3)
    queue.offer("a", "token-a")
    offered = [queue.take(None, now=float(t))[0] for t in range(0, 8, 2)]
    assert offered == [{"a": "token-a"}] * 3 + [{}]
    assert queue.drain_abandoned() == ["a"] and queue.drain_abandoned() == []
    assert len(queue) == 0


def make_decision(action: Action, **extra: Any) -> Decision:
    values: dict[str, Any] = {
        "decision_id": str(uuid.uuid4()), "action": action, "tenant": "acme",
        "subject": {"format": "iss_sub", "iss": "https://idp.example", "sub": "u1"},
        "subject_key": "acme|x", "session_id": "sess-9", "rule": "r", "reasons": ["why"],
        "source": "credential-change", "decided_at": time.time()}
    values.update(extra)
    return Decision(**values)


@pytest.mark.parametrize(("action", "extra", "event_type"), [
    (Action.REVOKE_SESSION, {}, mapping.SESSION_REVOKED),
    (Action.REVOKE_SUBJECT, {"session_id": None}, mapping.SESSION_REVOKED),
    (Action.STEP_UP, {"required_acr": "urn:acr:mfa", "max_age": 300},
     mapping.ASSURANCE_LEVEL_CHANGE),
    (Action.SET_FLAGS, {"flags": {"downloads.enabled": False}}, mapping.TOKEN_CLAIMS_CHANGE),
])
def test_decisions_map_to_conforming_caep_events(action: Action, extra: dict[str, Any],
                                                 event_type: str) -> None:
    decision = make_decision(action, **extra)
    event = mapping.event_for(decision)
    assert event is not None and event.event_type == event_type
    parse_event(event.event_type, event.payload)  # conforms to the CAEP 1.0 model
    assert event.payload["reason_admin"]["en"]  # CAEP interop profile: never empty
    parse_subject(event.subject)
    claims = mapping.set_claims(event, issuer="https://tr", audience="https://rp",
                                stream_id="s1", now=decision.decided_at)
    assert claims["txn"] == decision.decision_id
    assert claims == mapping.set_claims(event, issuer="https://tr", audience="https://rp",
                                        stream_id="s1", now=decision.decided_at)
    other = mapping.set_claims(event, issuer="https://tr", audience="https://rp",
                               stream_id="s2", now=decision.decided_at)
    assert other["jti"] != claims["jti"]  # one jti per decision and stream
    if action is Action.REVOKE_SESSION:
        assert event.subject == {"format": "complex", "user": decision.subject,
                                 "session": {"format": "opaque", "id": "sess-9"}}
    if action is Action.REVOKE_SUBJECT:
        assert event.subject == decision.subject


def test_not_transmitted_decisions() -> None:
    assert mapping.event_for(make_decision(Action.NOTIFY)) is None
    assert mapping.event_for(make_decision(Action.REVOKE_SESSION, enforced=False)) is None
    assert mapping.event_for(make_decision(Action.SET_FLAGS, flags={})) is None


def test_bearer_tokens_are_looked_up_by_hash() -> None:
    clients = EdgeClients(receiver=(RECEIVER,))
    assert bearer_token("Bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token(None) is None
    assert clients.receiver_for("Bearer t") == RECEIVER
    assert clients.receiver_for("bearer t") == RECEIVER
    assert clients.receiver_for("Bearer t2") is None
    assert clients.transmitter_for("Bearer t") is None
    with pytest.raises(ValueError, match="listed twice"):
        EdgeClients(receiver=(RECEIVER, RECEIVER))


def test_metadata_omits_nothing_the_profile_requires() -> None:
    wire = transmitter_metadata("https://tr.example.com").to_wire()
    for name in ("spec_version", "issuer", "jwks_uri", "delivery_methods_supported",
                 "configuration_endpoint", "status_endpoint", "verification_endpoint",
                 "authorization_schemes"):
        assert wire[name], name


def test_offsets_are_committable_only_up_to_the_first_unsettled_record() -> None:
    from caep.ssf.offsets import OffsetTracker

    tracker = OffsetTracker()
    tracker.seen("p0", 0, 0)  # nothing to send: settled at once
    assert tracker.committable() == {"p0": 1}
    tracker.seen("p0", 1, 2)  # two streams want it
    tracker.seen("p0", 2, 1)
    tracker.seen("p1", 7, 1)
    assert tracker.committable() == {"p0": 1, "p1": 7}
    tracker.settled("p0", 2)  # a later record settled first: still held back by offset 1
    tracker.settled("p0", 1)
    assert tracker.committable() == {"p0": 1, "p1": 7}
    tracker.settled("p0", 1)
    tracker.settled("p0", 1)  # settling more than was queued changes nothing
    assert tracker.committable() == {"p0": 3, "p1": 7}
    tracker.settled("p1", 7)
    assert tracker.committable() == {"p0": 3, "p1": 8} and tracker.outstanding() == 0


def test_events_requested_members_not_understood_are_ignored() -> None:
    """SSF §8.1.1: the Transmitter MUST ignore array values it does not understand (a
    non-string member too); only a value that is not an array is refused."""
    record = management.create(
        {"events_requested": [mapping.SESSION_REVOKED, 7, {"x": 1}, None,
                              "urn:example:secevent:events:type_2"]},
        issuer="https://tr.example", receiver=RECEIVER, now=1.0)
    assert record.config.events_requested == [mapping.SESSION_REVOKED,
                                              "urn:example:secevent:events:type_2"]
    assert record.config.events_delivered == [mapping.SESSION_REVOKED]
    with pytest.raises(management.SsfError):
        management.create({"events_requested": mapping.SESSION_REVOKED},
                          issuer="https://tr.example", receiver=RECEIVER, now=1.0)


def test_a_queue_that_may_not_redeliver_hands_out_only_what_waits() -> None:
    """A paused poll stream (SSF §8.1.2.1: nothing is transmitted) must not offer again a SET
    it handed out before the pause; it stays outstanding and comes back once allowed."""
    queue = PollQueue(max_held=10, redeliver_after=1)
    queue.offer("a", "token-a")
    assert queue.take(None, now=0)[0] == {"a": "token-a"}
    queue.offer("u", "stream-updated")
    assert queue.take(None, now=5, redeliver=False) == ({"u": "stream-updated"}, False)
    assert queue.take(None, now=6, redeliver=False) == ({}, False)
    assert queue.take(None, now=7) == ({"a": "token-a", "u": "stream-updated"}, False)

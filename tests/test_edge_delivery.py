"""Decisions on the broker become signed CAEP SETs on relying parties' streams: by push
(retried, per-subject order kept) and by poll (RFC 8936), held while paused, dropped while
disabled, with stream-updated and verification events."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson

from caep.settings import Settings
from streams.kafka_io import publish
from tests.conftest import Idp, observe
from tests.edge_support import (
    RP_TOKEN,
    RecordingReceiver,
    RunningEdge,
    bearer,
    decision,
    edge_settings,
    edge_verifier,
    running_edge,
)

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
SSF = "https://schemas.openid.net/secevent/ssf/event-type/"
PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"
ALICE = {"format": "email", "email": "alice@example.com"}
BOB = {"format": "email", "email": "bob@example.com"}


def produce(settings: Settings, *records: bytes) -> None:
    """Keyed by subject, as the engine keys its decisions."""
    keyed = [(orjson.loads(r)["subject_key"].encode(), r) for r in records]
    asyncio.run(publish(settings.bootstrap or "", settings.topic_decisions, keyed))


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def event_types(tokens: list[str]) -> list[str]:
    return [next(iter(claims(t)["events"])) for t in tokens]


def create_stream(edge: RunningEdge, body: dict[str, Any]) -> str:
    answer = httpx.post(f"{edge.url}/ssf/stream", json=body, headers=bearer(RP_TOKEN),
                        timeout=10)
    assert answer.status_code == 201, answer.text
    stream_id: str = answer.json()["stream_id"]
    return stream_id


def set_status(edge: RunningEdge, stream_id: str, status: str) -> None:
    answer = httpx.post(f"{edge.url}/ssf/status", headers=bearer(RP_TOKEN), timeout=10,
                        json={"stream_id": stream_id, "status": status})
    assert answer.status_code == 200, answer.text


def poll(edge: RunningEdge, stream_id: str, body: dict[str, Any],
         timeout: float = 30) -> dict[str, Any]:
    answer = httpx.post(f"{edge.url}/ssf/poll/{stream_id}", json=body,
                        headers=bearer(RP_TOKEN), timeout=timeout)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


def test_push_sends_each_decision_as_a_verifiable_caep_set(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path)
    receiver = RecordingReceiver()
    with receiver.running(), running_edge(settings) as edge:
        stream_id = create_stream(edge, {"delivery": {
            "method": PUSH, "endpoint_url": receiver.url,
            "authorization_header": "Bearer rp-inbox-secret"}})
        flags = decision(ALICE, "set_flags", flags={"downloads.enabled": False})
        produce(settings,
                decision(ALICE, "revoke_session"),
                decision(BOB, "revoke_subject", session_id=None),
                decision(ALICE, "step_up", required_acr="urn:acr:mfa", max_age=0),
                flags,
                decision(ALICE, "notify"),
                decision(ALICE, "revoke_session", enforced=False))
        delivery = edge.edge.delivery
        observe(lambda: delivery.decisions_read >= 6 and not delivery.lanes, 15,
                 "six decisions read, every push lane idle")
        verifier = edge_verifier(edge.url)
    assert len(receiver.received) == 4  # notify and monitor-mode decisions are not sent
    assert set(receiver.authorization) == {"Bearer rp-inbox-secret"}
    verified = {next(iter(v.events)): v for v in map(verifier.verify, receiver.received)}
    revoked = verified[CAEP + "session-revoked"]
    assert revoked.claims["aud"] == "https://rp1.example.com"
    assert revoked.header["typ"] == "secevent+jwt" and revoked.header["alg"] == "RS256"
    subjects = [claims(t)["sub_id"] for t in receiver.received
                if CAEP + "session-revoked" in claims(t)["events"]]
    assert {"format": "complex", "user": ALICE,
            "session": {"format": "opaque", "id": "sess-1"}} in subjects
    assert BOB in subjects  # a subject-wide revocation is about the subject
    step_up = verified[CAEP + "assurance-level-change"].events[CAEP + "assurance-level-change"]
    assert step_up["change_direction"] == "decrease"
    assert step_up["required_acr"] == "urn:acr:mfa"
    changed = verified[CAEP + "token-claims-change"]
    assert changed.events[CAEP + "token-claims-change"]["claims"] == {"downloads.enabled": False}
    assert changed.claims["txn"] == orjson.loads(flags)["decision_id"]
    assert stream_id


def test_failed_pushes_are_retried_and_one_subjects_order_is_kept(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path,
                             edge_push_backoff_seconds=0.05)
    receiver = RecordingReceiver(
        fail_first=3, should_fail=lambda t: claims(t)["sub_id"].get("user") == ALICE)
    with receiver.running(), running_edge(settings) as edge:
        create_stream(edge, {"delivery": {"method": PUSH, "endpoint_url": receiver.url}})
        alice = [decision(ALICE, "revoke_session", session_id=f"s{i}") for i in range(4)]
        produce(settings, *alice, decision(BOB, "revoke_subject", session_id=None))
        observe(lambda: len(receiver.received) >= 5, 20,
                 f"five SETs pushed ({receiver.attempts} attempts, {receiver.received!r:.60})")
    assert receiver.failed == 3
    sessions = [claims(t)["sub_id"]["session"]["id"] for t in receiver.received
                if "session" in claims(t)["sub_id"]]
    assert sessions == ["s0", "s1", "s2", "s3"]


def test_push_retries_back_off_exponentially_honour_retry_after_and_stop_at_a_4xx(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    """One decision, three push streams. A receiver that keeps answering 503 (no
    Retry-After) is tried `edge_push_max_attempts` times, the waits doubling from
    `edge_push_backoff_seconds`; one answering 429 with `Retry-After: 1` is retried after
    that second, not after the backoff; one answering 400 is tried once (RFC 8935 §2.3: the
    SET itself was refused). Streams without an `authorization_header` get no
    Authorization header."""
    backoff = 0.25
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path,
                             edge_push_backoff_seconds=backoff, edge_push_max_attempts=5)
    failing = RecordingReceiver(fail_first=10**6, retry_after=None)
    slow = RecordingReceiver(fail_first=1, fail_status=429, retry_after="1")
    refusing = RecordingReceiver(fail_first=10**6, fail_status=400, retry_after=None)
    with failing.running(), slow.running(), refusing.running(), \
            running_edge(settings) as edge:
        ids = [create_stream(edge, {"delivery": {"method": PUSH, "endpoint_url": r.url}})
               for r in (failing, slow, refusing)]
        produce(settings, decision(ALICE, "revoke_session"))
        delivery = edge.edge.delivery
        observe(lambda: delivery.given_up.get(ids[0]) == 1 and len(slow.received) == 1
                and delivery.given_up.get(ids[2]) == 1, 20,
                "the failing stream given up, the slow one delivered, the refusing one done")
    assert failing.attempts == 5
    gaps = [b - a for a, b in zip(failing.times, failing.times[1:], strict=False)]
    for n, gap in enumerate(gaps):
        assert gap >= backoff * 2**n * 0.95, gaps  # 0.25, 0.5, 1, 2 s at least
    assert gaps[0] < 1.0, gaps  # the first wait is the backoff, the last one 8 times it
    assert slow.times[1] - slow.times[0] >= 0.95
    assert refusing.attempts == 1
    assert {*failing.authorization, *slow.authorization, *refusing.authorization} == {None}


def test_push_lanes_of_a_receiver_that_is_down_stay_bounded(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    """A receiver that does not answer must not make the edge hold its SETs without end:
    a stream's push lanes keep at most `edge_max_held_events` SETs (the one being pushed and
    the newest), the others are given up and their decisions settled, so offsets move on."""
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path, edge_max_held_events=3,
                             edge_push_backoff_seconds=30, edge_push_max_attempts=2)
    receiver = RecordingReceiver(fail_first=10**6, retry_after=None)
    with receiver.running(), running_edge(settings) as edge:
        stream_id = create_stream(edge, {"delivery": {"method": PUSH,
                                                      "endpoint_url": receiver.url}})
        produce(settings, *[decision(ALICE, "revoke_session", session_id=f"s{i}")
                            for i in range(10)])
        delivery = edge.edge.delivery
        observe(lambda: delivery.decisions_read >= 10, 15, "ten decisions read")
        queued = [item for (sid, _), lane in delivery.lanes.items() if sid == stream_id
                  for item in lane]
        assert len(queued) == 3 and delivery.given_up[stream_id] == 7
        assert delivery.offsets.outstanding() == 3
        sessions = [claims(item.token)["sub_id"]["session"]["id"] for item in queued]
    assert sessions == ["s0", "s8", "s9"]  # the one being pushed, then the newest, in order


def test_paused_holds_disabled_drops_and_status_changes_are_announced(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path)
    receiver = RecordingReceiver()
    with receiver.running(), running_edge(settings) as edge:
        stream_id = create_stream(edge, {"delivery": {"method": PUSH,
                                                      "endpoint_url": receiver.url}})
        set_status(edge, stream_id, "paused")
        observe(lambda: len(receiver.received) >= 1, 10, "stream-updated (paused)")
        delivery = edge.edge.delivery
        produce(settings, decision(ALICE, "revoke_session", session_id="held"))
        observe(lambda: delivery.decisions_read >= 1, 10, "the decision read")
        assert len(delivery.held[stream_id]) == 1  # held, not pushed
        assert event_types(receiver.received) == [SSF + "stream-updated"]
        set_status(edge, stream_id, "enabled")
        observe(lambda: len(receiver.received) >= 3, 10, "enabled, then the held SET")
        set_status(edge, stream_id, "disabled")
        observe(lambda: len(receiver.received) >= 4, 10, "stream-updated (disabled)")
        produce(settings, decision(ALICE, "revoke_session", session_id="dropped"))
        observe(lambda: delivery.decisions_read >= 2, 10, "the second decision read")
        observe(lambda: not delivery.lanes, 5, "every push lane idle")
        assert stream_id not in delivery.held
        verifier = edge_verifier(edge.url)
    assert event_types(receiver.received) == [
        SSF + "stream-updated", SSF + "stream-updated", CAEP + "session-revoked",
        SSF + "stream-updated"]
    statuses = [claims(t)["events"].get(SSF + "stream-updated", {}).get("status")
                for t in receiver.received]
    assert statuses == ["paused", "enabled", None, "disabled"]
    for token in receiver.received:
        verified = verifier.verify(token)
        if SSF + "stream-updated" in verified.events:
            assert verified.claims["sub_id"] == {"format": "opaque", "id": stream_id}
    assert claims(receiver.received[2])["sub_id"]["session"]["id"] == "held"


def test_verification_echoes_state_and_removed_subjects_get_nothing(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path)
    receiver = RecordingReceiver()
    with receiver.running(), running_edge(settings) as edge:
        stream_id = create_stream(edge, {
            "delivery": {"method": PUSH, "endpoint_url": receiver.url},
            "events_requested": [CAEP + "session-revoked"]})
        answer = httpx.post(f"{edge.url}/ssf/verify", headers=bearer(RP_TOKEN), timeout=10,
                            json={"stream_id": stream_id, "state": "VGhpcyBpcyBhbiBleGFtcGxl"})
        assert answer.status_code == 204
        observe(lambda: len(receiver.received) >= 1, 10, "verification SET")
        removed = httpx.post(f"{edge.url}/ssf/subjects:remove", headers=bearer(RP_TOKEN),
                             json={"stream_id": stream_id, "subject": BOB}, timeout=10)
        assert removed.status_code == 204
        produce(settings, decision(BOB, "revoke_subject", session_id=None),
                decision(ALICE, "step_up", required_acr="urn:acr:mfa"),
                decision(ALICE, "revoke_session", session_id="last"))
        observe(lambda: len(receiver.received) >= 2, 10, "alice's revocation")
        delivery = edge.edge.delivery
        observe(lambda: delivery.decisions_read >= 3 and not delivery.lanes, 10,
                 "all three decisions read, every push lane idle")
        verifier = edge_verifier(edge.url)
    first = verifier.verify(receiver.received[0])
    assert first.events == {SSF + "verification": {"state": "VGhpcyBpcyBhbiBleGFtcGxl"}}
    assert first.claims["sub_id"] == {"format": "opaque", "id": stream_id}
    assert len(receiver.received) == 2  # bob was removed; step-up was not requested
    assert claims(receiver.received[1])["sub_id"]["session"]["id"] == "last"


def test_poll_delivery_with_max_events_ack_set_errs_and_long_poll(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path,
                             edge_poll_redeliver_seconds=1.0, edge_poll_max_wait_seconds=10)
    with running_edge(settings) as edge:
        stream_id = create_stream(edge, {"events_requested": [CAEP + "session-revoked"]})
        assert poll(edge, stream_id, {"returnImmediately": True}) == {
            "sets": {}, "moreAvailable": False}
        produce(settings, *[decision(ALICE, "revoke_session", session_id=f"p{i}")
                            for i in range(3)])
        observe(lambda: len(edge.edge.delivery.polls.get(stream_id, ())) >= 3, 10,
                 "three SETs queued for polling")
        first = poll(edge, stream_id, {"maxEvents": 2, "returnImmediately": True})
        assert len(first["sets"]) == 2 and first["moreAvailable"] is True
        verifier = edge_verifier(edge.url)
        for jti, token in first["sets"].items():
            assert verifier.verify(token).jti == jti
        acked = poll(edge, stream_id, {"ack": list(first["sets"]), "maxEvents": 0,
                                       "returnImmediately": True})
        assert acked["sets"] == {} and acked["moreAvailable"] is True
        second = poll(edge, stream_id, {"returnImmediately": True})
        (last_jti,) = second["sets"]
        assert claims(second["sets"][last_jti])["sub_id"]["session"]["id"] == "p2"
        time.sleep(1.2)  # not acknowledged: offered again
        again = poll(edge, stream_id, {"returnImmediately": True})
        assert list(again["sets"]) == [last_jti]
        rejected = poll(edge, stream_id, {"setErrs": {last_jti: {
            "err": "invalid_key", "description": "not for us"}}, "returnImmediately": True})
        assert rejected == {"sets": {}, "moreAvailable": False}
        assert edge.edge.delivery.polls[stream_id].rejected[last_jti][0] == "invalid_key"

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            waiting = pool.submit(poll, edge, stream_id, {"returnImmediately": False})
            time.sleep(0.5)
            produce(settings, decision(ALICE, "revoke_session", session_id="long"))
            long_poll = waiting.result(20)
        assert time.monotonic() - started < 9
        (token,) = long_poll["sets"].values()
        assert claims(token)["sub_id"]["session"]["id"] == "long"


def test_a_paused_poll_stream_hands_out_nothing_but_its_status_changes(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path)
    with running_edge(settings) as edge:
        stream_id = create_stream(edge, {})
        produce(settings, decision(ALICE, "revoke_session", session_id="queued"))
        observe(lambda: len(edge.edge.delivery.polls.get(stream_id, ())) >= 1, 10,
                 "one SET queued for polling")
        set_status(edge, stream_id, "paused")
        paused = poll(edge, stream_id, {"returnImmediately": True})
        assert [claims(t)["events"] for t in paused["sets"].values()] == [
            {SSF + "stream-updated": {"status": "paused"}}]
        set_status(edge, stream_id, "enabled")
        resumed = poll(edge, stream_id, {"returnImmediately": True, "ack": list(paused["sets"])})
    tokens = list(resumed["sets"].values())
    assert event_types(tokens) == [SSF + "stream-updated", CAEP + "session-revoked"]
    assert claims(tokens[1])["sub_id"]["session"]["id"] == "queued"


def test_a_set_handed_out_before_a_pause_is_not_offered_again_while_paused(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    """SSF §8.1.2.1: a paused stream transmits nothing. A SET polled (not acknowledged) just
    before the pause is not redelivered while paused, however long it waits; once the
    stream is enabled it is offered again."""
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path,
                             edge_poll_redeliver_seconds=0.3)
    with running_edge(settings) as edge:
        stream_id = create_stream(edge, {})
        produce(settings, decision(ALICE, "revoke_session", session_id="before-pause"))
        observe(lambda: len(edge.edge.delivery.polls.get(stream_id, ())) >= 1, 10,
                "one SET queued for polling")
        (handed_out,) = poll(edge, stream_id, {"returnImmediately": True})["sets"]
        set_status(edge, stream_id, "paused")
        time.sleep(0.6)  # twice the redelivery time
        paused = poll(edge, stream_id, {"returnImmediately": True})
        assert [claims(t)["events"] for t in paused["sets"].values()] == [
            {SSF + "stream-updated": {"status": "paused"}}]
        time.sleep(0.6)
        assert poll(edge, stream_id, {"returnImmediately": True,
                                      "ack": list(paused["sets"])}) == {
            "sets": {}, "moreAvailable": False}
        set_status(edge, stream_id, "enabled")
        resumed = poll(edge, stream_id, {"returnImmediately": True})
    assert handed_out in resumed["sets"]
    assert claims(resumed["sets"][handed_out])["sub_id"]["session"]["id"] == "before-pause"


def test_sets_not_yet_settled_are_sent_again_after_a_restart(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    """Decision offsets are committed only once their SETs are settled: what a stopped edge
    had not delivered (push failing, poll not acknowledged) is sent again, same jti."""
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path,
                             edge_push_backoff_seconds=0.05, edge_push_max_attempts=1000)
    receiver = RecordingReceiver(fail_first=10**6)
    with receiver.running():
        with running_edge(settings) as edge:
            create_stream(edge, {"delivery": {"method": PUSH, "endpoint_url": receiver.url}})
            polled_id = create_stream(edge, {})
            produce(settings, decision(ALICE, "revoke_session", session_id="restart"))
            observe(lambda: receiver.attempts >= 1, 10, "a (failing) push attempt")
            first_poll = poll(edge, polled_id, {"returnImmediately": False})
            (polled_jti,) = first_poll["sets"]  # handed out, never acknowledged
        pushed_jti = claims(receiver.attempted[0])["jti"]
        receiver.fail_first = 0
        with running_edge(settings) as edge:
            observe(lambda: len(receiver.received) >= 1, 10, "the push, after the restart")
            again = poll(edge, polled_id, {"returnImmediately": False})
            assert list(again["sets"]) == [polled_jti]
            poll(edge, polled_id, {"ack": [polled_jti], "maxEvents": 0})
            committed = edge.edge.delivery.offsets
            observe(lambda: committed.outstanding() == 0, 5, "everything settled")
            delivery = edge.edge.delivery
            observe(lambda: dict(delivery._committed) == {
                tp: offset for tp, offset in committed.committable().items()},
                10, "the settled offsets committed")  # on the consumer's next round
        with running_edge(settings) as edge:
            time.sleep(0.7)  # a decision read again would be queued by now
            assert edge.edge.delivery.decisions_read == 0
            assert poll(edge, polled_id, {"returnImmediately": True})["sets"] == {}
    assert [claims(t)["jti"] for t in receiver.received] == [pushed_jti]

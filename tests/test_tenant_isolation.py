"""Tenant isolation (issue 10, item 8), with real records on the real broker.

Two tenants, each with its own identity provider (issuer A -> tenant-a, audience AUD_A; issuer
B -> tenant-b, audience AUD_B), and the same user name and the same session id (`sess-1`) in
both, so any mix-up by name shows. One engine worker; one relying service per tenant, each a
`caep.client.Subscriber` scoped to its tenant with an OpenFeature `CaepProvider`, both running
before the first SET, so every change is a live delivery.

What must hold (0 cross-tenant deliveries):

- a SET for the other tenant's audience, signed with the other tenant's issuer, an untrusted
  issuer, or a multi-tenant `aud` (multi-valued, not allowed by the trust file) is refused
  with its RFC 8935 code on the dead-letter topic and changes nothing;
- every decision is in the tenant of the issuer that caused it, whatever the record key the
  SET came with (a valid SET of A replayed under B's record keys revokes only in tenant-a);
- tenant-a's subscriber never delivers a tenant-b change and answers nothing of tenant-b
  (`is_revoked`, flags), and vice versa, although session ids collide;
- an OpenFeature evaluation of tenant-b's session from tenant-a's service gets the default or
  fail-closed value with `scope: tenant not served`, never tenant-b's flags;
- an issuer bound to tenant-a (`tenant = "tenant-a"`) cannot reach tenant-b's sessions by
  naming tenant-b in a complex subject's `tenant` member.

Figures go to `$CAEP_REPORT_DIR/tenant-isolation.json` (default: the test's tmp dir), with a
summary line such as `tenant isolation: 7 attacks refused, 0 cross-tenant decisions, ...`.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus
from openfeature.provider.no_op_provider import NoOpProvider

from caep.client import CaepProvider, Change, Subscriber
from caep.codec import sign_set
from caep.keys import generate_jwk, jwks_of, private_key
from caep.settings import Settings
from streams.kafka_io import publish
from tests.conftest import collect, fresh_topics, start_worker, stop_worker, until
from tests.edge_support import topic_size
from tests.test_attack_corpus import inputs_taken, records_on

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
ISS_A, AUD_A, TENANT_A = "https://idp.tenant-a.example", "https://rp.tenant-a.example", "tenant-a"
ISS_B, AUD_B, TENANT_B = "https://idp.tenant-b.example", "https://rp.tenant-b.example", "tenant-b"
KEY_A = generate_jwk("RS256", kid="a-1")
KEY_B = generate_jwk("RS256", kid="b-1")
ROGUE = generate_jwk("RS256", kid="a-1")
TENANT_OF = {ISS_A: TENANT_A, ISS_B: TENANT_B}


def subject(email: str, tenant: str, session: str | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"format": "complex",
                             "user": {"format": "email", "email": email},
                             "tenant": {"format": "opaque", "id": tenant}}
    if session is not None:
        value["session"] = {"format": "opaque", "id": session}
    return value


def key_of(email: str, tenant: str) -> bytes:
    return (f'{tenant}|{{"format":"complex","tenant":{{"format":"opaque","id":"{tenant}"}},'
            f'"user":{{"email":"{email}","format":"email"}}}}').encode()


def set_of(iss: str, aud: Any, sub: dict[str, Any], event: str = "session-revoked",
           payload: dict[str, Any] | None = None, jwk: dict[str, Any] | None = None) -> bytes:
    claims = {"iss": iss, "aud": aud, "jti": uuid.uuid4().hex, "iat": int(time.time()),
              "sub_id": sub,
              "events": {CAEP + event: payload or {"initiating_entity": "policy",
                                                   "event_timestamp": int(time.time() * 1000)}}}
    signer = jwk or (KEY_A if iss == ISS_A else KEY_B)
    return sign_set(claims, private_key(signer), kid=signer["kid"]).encode()


def jti_of(token: bytes) -> str:
    import base64

    payload = token.split(b".")[1]
    return str(orjson.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
               ["jti"])


def activity(tenant: str, email: str, session_id: str) -> bytes:
    return orjson.dumps({"kind": "established", "tenant": tenant,
                         "subject": subject(email, tenant), "session_id": session_id,
                         "observed_at": time.time(), "device_id": f"dev-{session_id}",
                         "ip": "203.0.113.10", "activity_id": uuid.uuid4().hex})


@dataclass
class Observed:
    refused: dict[str, str] = field(default_factory=dict)  # case -> err on the dead letter
    expected_codes: dict[str, str] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    flags: list[dict[str, Any]] = field(default_factory=list)
    changes: dict[str, list[Change]] = field(default_factory=dict)
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    openfeature: dict[str, dict[str, Any]] = field(default_factory=dict)
    jtis: dict[str, str] = field(default_factory=dict)
    taken_in_after_attacks: int = 0
    figures: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def observed(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    directory = tmp_path_factory.mktemp("tenants")
    (directory / "a.jwks.json").write_bytes(orjson.dumps(jwks_of(KEY_A)))
    (directory / "b.jwks.json").write_bytes(orjson.dumps(jwks_of(KEY_B)))
    trust = directory / "trust.toml"
    trust.write_text(
        f'[[issuer]]\niss = "{ISS_A}"\naudience = "{AUD_A}"\njwks_file = "a.jwks.json"\n'
        f'tenant = "{TENANT_A}"\n\n'
        f'[[issuer]]\niss = "{ISS_B}"\naudience = "{AUD_B}"\njwks_file = "b.jwks.json"\n'
        f'tenant = "{TENANT_B}"\n', encoding="utf-8")
    topics = fresh_topics(bootstrap)
    worker = start_worker(bootstrap, trust, topics)
    try:
        worker.wait_ready()
        try:
            result = asyncio.run(asyncio.wait_for(_scenario(bootstrap, topics, worker.web), 150))
        except Exception as exc:
            raise AssertionError(f"{exc!r}\n{_diagnosis(bootstrap, topics, worker)}") from exc
        result.figures["worker_alive"] = worker.process.poll() is None
    finally:
        stop_worker(worker)
        for domain in (TENANT_A, TENANT_B):
            api.set_provider(NoOpProvider(), f"isolation-{domain}")
    _report(result, tmp_path_factory.mktemp("tenant-report"))
    yield result


def _diagnosis(bootstrap: str, topics: Any, worker: Any) -> str:
    """What the broker and the worker show, for a failure that only load brings out."""
    import httpx

    sizes = {name: (topic_size(bootstrap, name), count)
             for name, count in records_on(bootstrap, topics.names()).items()}
    try:
        metrics = "\n".join(line for line in httpx.get(f"{worker.web}/metrics", timeout=5)
                            .text.splitlines() if line.startswith(("caep_events_in",
                                                                    "caep_consumer_lag")))
    except Exception as exc:
        metrics = f"/metrics: {exc!r}"
    return (f"topic sizes (end offsets, records read): {sizes}\n"
            f"worker alive: {worker.process.poll() is None}\n"
            f"{metrics}\nthe worker said:\n" + "".join(worker.output[-25:]))


async def _scenario(bootstrap: str, topics: Any, web: str | None) -> Observed:
    out = Observed()
    settings = Settings(bootstrap=bootstrap, topic_decisions=topics.decisions,
                        topic_flags=topics.flags)
    subscribers = {t: Subscriber(settings, tenants=[t]) for t in (TENANT_A, TENANT_B)}
    for tenant, sub in subscribers.items():
        out.changes[tenant] = []
        sub.on_change(out.changes[tenant].append)
        await sub.start()
        api.set_provider(CaepProvider(sub), f"isolation-{tenant}")
    try:
        # sessions: alice has sess-1 in both tenants; bob (B) and carol (B) one each
        sessions = [(TENANT_A, "alice@shared.example", "sess-1"),
                    (TENANT_B, "alice@shared.example", "sess-1"),
                    (TENANT_B, "bob@b.example", "sess-b2"),
                    (TENANT_B, "carol@b.example", "sess-c3")]
        for tenant, email, sid in sessions:
            await publish(bootstrap, topics.session_activity,
                          [(key_of(email, tenant), activity(tenant, email, sid))])
        taken = await asyncio.to_thread(collect, bootstrap, topics.engine_input,
                                        lambda r: len(r) >= len(sessions), 60)
        assert len(taken) == len(sessions), "the sessions did not reach engine-input"

        alice_b = subject("alice@shared.example", TENANT_B, "sess-1")
        attacks = {
            # A's IdP (valid signature) aimed at tenant-b's relying service
            "aud-of-other-tenant": (set_of(ISS_A, AUD_B, alice_b), "invalid_audience"),
            "aud-multi-tenant-a-and-b": (set_of(ISS_A, [AUD_A, AUD_B], alice_b),
                                         "invalid_audience"),
            "aud-multi-tenant-b-and-a": (set_of(ISS_B, [AUD_B, AUD_A], alice_b),
                                         "invalid_audience"),
            # signed with A's key, claiming to be B
            "iss-of-other-tenant-signed-by-a": (
                set_of(ISS_B, AUD_B, alice_b, jwk=KEY_A), "invalid_key"),
            "iss-untrusted": (set_of("https://idp.tenant-c.example", AUD_B, alice_b),
                              "invalid_issuer"),
            "iss-a-signed-by-rogue-key-with-a-kid": (
                set_of(ISS_A, AUD_A, subject("alice@shared.example", TENANT_A, "sess-1"),
                       jwk=ROGUE), "invalid_key"),
            "aud-missing-tenant-b-subject": (set_of(ISS_B, None, alice_b), "invalid_audience"),
        }
        for case, (token, code) in attacks.items():
            out.jtis[case] = jti_of(token)
            out.expected_codes[token.decode()] = code
            await publish(bootstrap, topics.security_events,
                          [(key_of("alice@shared.example", TENANT_B), token)])
        letters = await asyncio.to_thread(
            collect, bootstrap, topics.dead_letter, lambda r: len(r) >= len(attacks), 60)
        by_value = {letter["value"]["value"]: letter["value"]["err"] for letter in letters}
        for case, (token, _code) in attacks.items():
            out.refused[case] = by_value.get(token.decode(), "NOT REFUSED")
        out.taken_in_after_attacks = await asyncio.to_thread(
            inputs_taken, bootstrap, topics.engine_input, web) - len(sessions)

        # legitimate SETs: A revokes its alice's sess-1, delivered twice under tenant-b's record
        # keys (replayed across tenants); B restricts bob's session (device out of compliance)
        revoke_a = set_of(ISS_A, AUD_A, subject("alice@shared.example", TENANT_A, "sess-1"))
        out.jtis["a-revokes-its-alice"] = jti_of(revoke_a)
        await publish(bootstrap, topics.security_events,
                      [(key_of("alice@shared.example", TENANT_B), revoke_a),
                       (key_of("bob@b.example", TENANT_B), revoke_a)])
        restrict_b = set_of(ISS_B, AUD_B, subject("bob@b.example", TENANT_B, "sess-b2"),
                            "device-compliance-change",
                            {"previous_status": "compliant", "current_status": "not-compliant",
                             "event_timestamp": int(time.time() * 1000)})
        out.jtis["b-restricts-bob"] = jti_of(restrict_b)
        # issuer A names tenant-b in the subject's tenant member (A is bound to tenant-a)
        inject = set_of(ISS_A, AUD_A, subject("carol@b.example", TENANT_B, "sess-c3"))
        out.jtis["a-names-tenant-b-in-subject"] = jti_of(inject)
        await publish(bootstrap, topics.security_events,
                      [(key_of("bob@b.example", TENANT_B), restrict_b),
                       (key_of("carol@b.example", TENANT_B), inject)])

        sub_a, sub_b = subscribers[TENANT_A], subscribers[TENANT_B]
        await until(lambda: sub_a.is_revoked("sess-1") and sub_b.flags("sess-b2").get(
            "downloads.enabled") is False, 60, "A's revocation and B's restriction delivered")
        # the injection is decided (or dead-lettered) right after; its input is the last one
        await _injection_settled(bootstrap, topics, out)
        out.decisions = [r["value"] for r in await asyncio.to_thread(
            collect, bootstrap, topics.decisions, lambda r: False, 3)]
        out.flags = [r["value"] for r in await asyncio.to_thread(
            collect, bootstrap, topics.flags, lambda r: False, 2)]
        await asyncio.sleep(0)  # changes already applied are in `out.changes`

        for tenant, sub in subscribers.items():
            out.views[tenant] = {
                "sess-1 revoked": sub.is_revoked("sess-1"),
                "sess-1 revoked in tenant-b": sub.is_revoked("sess-1", TENANT_B),
                "sess-1 revoked in tenant-a": sub.is_revoked("sess-1", TENANT_A),
                "sess-b2 flags": sub.flags("sess-b2"),
                "sess-b2 flags entry": sub.session_flags("sess-b2") is not None,
                "sess-c3 revoked": sub.is_revoked("sess-c3"),
                "other tenant records dropped": sub.view.counters.other_tenant,
            }
        for tenant in (TENANT_A, TENANT_B):
            client = api.get_client(f"isolation-{tenant}")
            await until(lambda c=client: c.get_provider_status() is ProviderStatus.READY, 10,
                        "provider READY")
            answers = {}
            for label, context in (
                    ("sess-b2 as tenant-b", EvaluationContext("sess-b2", {"tenant": TENANT_B})),
                    ("sess-b2", EvaluationContext("sess-b2")),
                    ("sess-1", EvaluationContext("sess-1")),
                    ("sess-1 as tenant-b", EvaluationContext("sess-1", {"tenant": TENANT_B})),
                    ("sess-c3", EvaluationContext("sess-c3"))):
                details = client.get_boolean_details("downloads.enabled", True, context)
                answers[label] = {"value": details.value, "reason": str(details.reason),
                                  "variant": details.variant,
                                  "metadata": dict(details.flag_metadata)}
            out.openfeature[tenant] = answers
    finally:
        for sub in subscribers.values():
            await sub.stop()
    return out


async def _injection_settled(bootstrap: str, topics: Any, out: Observed) -> None:
    """Until the injection (the last SET) is decided or on the dead-letter topic."""
    jti = out.jtis["a-names-tenant-b-in-subject"]

    def decided(records: list[dict[str, Any]]) -> bool:
        return any(d["value"].get("source_jti") == jti for d in records)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        records = await asyncio.to_thread(collect, bootstrap, topics.decisions, decided, 1.0)
        if decided(records):
            return
        letters = await asyncio.to_thread(collect, bootstrap, topics.dead_letter,
                                          lambda r: len(r) > len(out.refused), 1.0)
        if len(letters) > len(out.refused):
            return
    raise AssertionError("the tenant-member injection was neither decided nor refused")


def _cross_tenant(decisions: list[dict[str, Any]], exclude: set[str]) -> list[dict[str, Any]]:
    return [d for d in decisions if d.get("source_iss") in TENANT_OF
            and d.get("source_jti") not in exclude and d["tenant"] != TENANT_OF[d["source_iss"]]]


def _report(out: Observed, tmp_path: Path) -> None:
    injection = out.jtis["a-names-tenant-b-in-subject"]
    cross = _cross_tenant(out.decisions, exclude={injection})
    injected = [d for d in out.decisions if d.get("source_jti") == injection]
    foreign_changes = {t: sum(c.tenant != t for c in changes)
                       for t, changes in out.changes.items()}
    out.figures.update({
        "attacks": len(out.refused),
        "refused": out.refused,
        "attacks_taken_in": out.taken_in_after_attacks,
        "decisions": Counter(f"{d['tenant']}:{d['action']}" for d in out.decisions),
        "cross_tenant_decisions": len(cross) + len(injected),
        "cross_tenant_decisions_by_tenant_member_injection": len(injected),
        "tenant_member_injection_decisions": [
            {k: d.get(k) for k in ("tenant", "action", "session_id", "source_iss")}
            for d in injected],
        "live_changes": {t: len(c) for t, c in out.changes.items()},
        "cross_tenant_deliveries": foreign_changes,
        "views": out.views,
        "openfeature": out.openfeature,
    })
    out.figures["summary"] = (
        f"tenant isolation: {sum(v != 'NOT REFUSED' for v in out.refused.values())}/"
        f"{len(out.refused)} attacks refused, {len(cross) + len(injected)} cross-tenant "
        f"decisions ({len(injected)} by a subject tenant member), "
        f"{sum(foreign_changes.values())} cross-tenant subscriber deliveries")
    directory = Path(os.environ.get("CAEP_REPORT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tenant-isolation.json"
    path.write_text(orjson.dumps(out.figures, option=orjson.OPT_INDENT_2,
                                 default=str).decode(), encoding="utf-8")
    print(f"\n{out.figures['summary']} (report {path})")


def test_wrong_aud_wrong_iss_and_multi_tenant_aud_are_refused_with_their_code(
    observed: Observed,
) -> None:
    expected = {
        "aud-of-other-tenant": "invalid_audience",
        "aud-multi-tenant-a-and-b": "invalid_audience",
        "aud-multi-tenant-b-and-a": "invalid_audience",
        "iss-of-other-tenant-signed-by-a": "invalid_key",
        "iss-untrusted": "invalid_issuer",
        "iss-a-signed-by-rogue-key-with-a-kid": "invalid_key",
        "aud-missing-tenant-b-subject": "invalid_audience",
    }
    assert observed.refused == expected
    assert observed.taken_in_after_attacks == 0
    assert observed.figures["worker_alive"]


def test_every_decision_is_in_its_issuers_tenant(observed: Observed) -> None:
    injection = observed.jtis["a-names-tenant-b-in-subject"]
    assert not _cross_tenant(observed.decisions, exclude={injection})
    revoked = [d for d in observed.decisions
               if d.get("source_jti") == observed.jtis["a-revokes-its-alice"]]
    assert revoked, "A's revocation was not decided"
    assert {(d["tenant"], d["action"], d["session_id"]) for d in revoked} == {
        (TENANT_A, "revoke_session", "sess-1")}, "replayed under B's keys: still only tenant-a"
    restricted = [d for d in observed.decisions
                  if d.get("source_jti") == observed.jtis["b-restricts-bob"]]
    assert restricted and all(d["tenant"] == TENANT_B for d in restricted)
    assert all(record["tenant"] == TENANT_B for record in observed.flags
               if record["session_id"] == "sess-b2")


def test_a_tenants_subscriber_delivers_and_answers_nothing_of_another_tenant(
    observed: Observed,
) -> None:
    for tenant, changes in observed.changes.items():
        assert changes, f"{tenant}'s subscriber saw no live change: the test would prove nothing"
        assert all(change.tenant == tenant for change in changes), (tenant, changes)
    a, b = observed.views[TENANT_A], observed.views[TENANT_B]
    assert a["sess-1 revoked"] and a["sess-1 revoked in tenant-a"]
    assert not a["sess-1 revoked in tenant-b"]
    assert not b["sess-1 revoked"], "tenant-a's revocation of sess-1 reached tenant-b's view"
    assert not b["sess-1 revoked in tenant-a"]
    assert a["sess-b2 flags"]["downloads.enabled"] is True, "tenant-b's flags leaked to A"
    assert not a["sess-b2 flags entry"]
    assert b["sess-b2 flags"]["downloads.enabled"] is False
    assert a["other tenant records dropped"] > 0 and b["other tenant records dropped"] > 0


def test_openfeature_of_another_tenants_session_gets_no_value_of_that_tenant(
    observed: Observed,
) -> None:
    a, b = observed.openfeature[TENANT_A], observed.openfeature[TENANT_B]
    named = a["sess-b2 as tenant-b"]
    assert named["metadata"].get("scope") == "tenant not served"
    assert named["reason"] == str(Reason.DEFAULT)
    assert named["variant"] == "fail-closed"
    unnamed = a["sess-b2"]  # A's service looks in tenant-a only: B's restriction is not there
    assert (unnamed["value"], unnamed["reason"]) == (True, str(Reason.DEFAULT))
    assert a["sess-1"]["value"] is False and a["sess-1"]["metadata"].get("revoked")
    assert a["sess-1 as tenant-b"]["metadata"].get("scope") == "tenant not served"
    assert (b["sess-1"]["value"], b["sess-1"]["reason"]) == (True, str(Reason.DEFAULT)), (
        "tenant-a's revocation of its sess-1 changed tenant-b's answer for its own sess-1")
    assert b["sess-b2"]["value"] is False and b["sess-b2"]["variant"] == "session"


def test_an_issuer_bound_to_a_tenant_cannot_reach_another_tenant_through_the_subject(
    observed: Observed,
) -> None:
    """Issuer A's trust entry says `tenant = "tenant-a"`, yet a complex subject's `tenant`
    member takes precedence (`VerifiedSet.tenant_for`), so A can revoke tenant-b's sessions.
    Expected: refused (dead letter) when the member names a tenant other than the issuer's
    configured one, and no decision or view change in tenant-b."""
    jti = observed.jtis["a-names-tenant-b-in-subject"]
    injected = [d for d in observed.decisions if d.get("source_jti") == jti]
    assert not injected, (
        f"issuer {ISS_A} (tenant-a) decided in tenant-b: "
        f"{[(d['tenant'], d['action'], d['session_id']) for d in injected]}")
    assert not observed.views[TENANT_B]["sess-c3 revoked"]
    assert observed.openfeature[TENANT_B]["sess-c3"]["value"] is True

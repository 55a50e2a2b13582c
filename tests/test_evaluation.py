"""The pure evaluation core: every signal and every action, with no broker."""

from __future__ import annotations

from typing import Any

import pytest

from caep.activity import SessionActivity, parse_activity
from caep.decisions import Action, Decision
from caep.errors import ConfigError, InvalidRequest
from caep.evaluation import SecurityEvent, Tick, evaluate, next_deadline
from caep.events import CAEP, EVENT_MODELS, RISC
from caep.policy import default_policy_text, load_policy, parse_policy
from caep.state import SubjectState
from caep.wire import decode_input, encode_input

POLICY = load_policy()
MONITOR = parse_policy(default_policy_text().replace('mode = "enforce"', 'mode = "monitor"', 1))
USER = {"format": "email", "email": "alice@example.com"}
KEY = "acme|alice"
T0 = 1_800_000_000.0


def activity(kind: str, session: str, at: float, **extra: Any) -> SessionActivity:
    return SessionActivity.model_validate({"kind": kind, "tenant": "acme", "subject": USER,
                                           "session_id": session, "observed_at": at, **extra})


def set_event(name: str, payload: dict[str, Any] | None = None, *, session: str | None = None,
              device: str | None = None, at: float = T0, jti: str = "j1",
              prefix: str = CAEP) -> SecurityEvent:
    event_type = prefix + name
    model = EVENT_MODELS[event_type]
    return SecurityEvent(tenant="acme", subject=USER, key=KEY, event_type=event_type,
                         event=model.model_validate(payload or {}), iss="https://idp",
                         jti=jti, occurred_at=at, session_id=session, device_id=device)


def run(state: SubjectState | None, *items: Any, now: float = T0,
        policy: Any = POLICY) -> tuple[SubjectState, list[Decision]]:
    decisions: list[Decision] = []
    assert items
    for item in items:
        state, made = evaluate(state, item, policy, now, tenant="acme", key=KEY, subject=USER)
        decisions += made
    assert state is not None
    return state, decisions


def established(*sessions: str, at: float = T0 - 100, **extra: Any) -> SubjectState:
    state, _ = run(None, *[activity("established", s, at, **extra) for s in sessions])
    return state


def actions(decisions: list[Decision]) -> list[tuple[str, str | None]]:
    return [(d.action.value, d.session_id) for d in decisions]


def test_session_revoked_revokes_that_session_and_explains_itself() -> None:
    state, decisions = run(established("s1", "s2"), set_event("session-revoked", session="s1"))
    assert actions(decisions) == [("revoke_session", "s1")]
    assert state.sessions["s1"].status == "revoked"
    assert state.sessions["s2"].status == "active"
    (decision,) = decisions
    assert decision.rule == "idp-revoked-session"
    assert f"event {CAEP}session-revoked" in decision.reasons
    assert "jti j1" in decision.reasons and decision.jtis == ["j1"]


def test_a_session_revoked_before_it_was_seen_never_becomes_active() -> None:
    state, decisions = run(None, set_event("session-revoked", session="s9"),
                           activity("established", "s9", T0 + 10),
                           activity("presented", "s9", T0 + 20))
    assert state.sessions["s9"].status == "revoked"
    assert actions(decisions) == [("revoke_session", "s9")]


def test_subject_revocation_applies_to_sessions_established_before_it_whatever_the_order() -> None:
    state, decisions = run(established("old"), set_event("session-revoked", at=T0),
                           activity("established", "late-report-of-old-login", T0 - 50),
                           activity("established", "new", T0 + 50))
    assert state.sessions["old"].status == "revoked"
    assert state.sessions["late-report-of-old-login"].status == "revoked"
    assert state.sessions["new"].status == "active"
    assert decisions[0].action is Action.REVOKE_SUBJECT
    assert decisions[0].established_before == T0


@pytest.mark.parametrize(("name", "payload", "prefix", "rule"), [
    ("credential-change", {"credential_type": "password", "change_type": "update"}, CAEP,
     "credential-changed"),
    ("account-disabled", {}, RISC, "idp-revoked-all-sessions"),
    ("account-purged", {}, RISC, "idp-revoked-all-sessions"),
    ("sessions-revoked", {}, RISC, "idp-revoked-all-sessions"),
    ("credential-compromise", {"credential_type": "password"}, RISC, "credential-compromised"),
    ("account-credential-change-required", {}, RISC, "credential-changed"),
])
def test_subject_wide_events_revoke_every_session_established_before(
        name: str, payload: dict[str, Any], prefix: str, rule: str) -> None:
    state, decisions = run(established("a", "b"), set_event(name, payload, prefix=prefix))
    assert {s.status for s in state.sessions.values()} == {"revoked"}
    assert decisions[0].action is Action.REVOKE_SUBJECT and decisions[0].rule == rule
    assert sorted(d.session_id for d in decisions[1:]) == ["a", "b"]


def test_new_device_mid_session_restricts_flags() -> None:
    state = established("s1", device_id="laptop")
    state, decisions = run(state, activity("presented", "s1", T0, device_id="phone"))
    (decision,) = decisions
    assert decision.action is Action.SET_FLAGS
    assert decision.flags is not None and decision.flags["downloads.enabled"] is False
    assert decision.band == "medium"
    assert [s.name for s in decision.signals] == ["new_device"]
    assert dict(state.sessions["s1"].flags)["downloads.enabled"] is False


def test_user_agent_change_and_new_device_together_require_step_up() -> None:
    state = established("s1", device_id="laptop", user_agent="Firefox/140")
    state, decisions = run(state, activity("presented", "s1", T0, device_id="phone",
                                           user_agent="curl/8"))
    assert {d.action for d in decisions} == {Action.STEP_UP, Action.SET_FLAGS}
    step_up = next(d for d in decisions if d.action is Action.STEP_UP)
    assert step_up.required_acr == "urn:caep-engine:acr:mfa" and step_up.max_age == 300
    assert step_up.band == "high" and step_up.score == 75
    assert state.sessions["s1"].required_acr == "urn:caep-engine:acr:mfa"
    state, decisions = run(state, activity("presented", "s1", T0 + 1,
                                           acr="urn:caep-engine:acr:mfa"))
    assert state.sessions["s1"].required_acr is None
    assert decisions == []


def test_impossible_travel_is_a_signal() -> None:
    state = established("s1", geo={"lat": 48.85, "lon": 2.35})
    state, decisions = run(state, activity("presented", "s1", T0 - 40,
                                           geo={"lat": 40.71, "lon": -74.0}))
    assert any(s.name == "impossible_travel" for d in decisions for s in d.signals)
    assert state.sessions["s1"].risk == 60


def test_ip_change_alone_stays_low() -> None:
    state = established("s1", ip="192.0.2.1")
    state, decisions = run(state, activity("presented", "s1", T0, ip="192.0.2.2"))
    assert decisions == [] and state.sessions["s1"].risk == 10


def test_idp_risk_high_then_low() -> None:
    state, decisions = run(established("s1"), set_event(
        "risk-level-change", {"principal": "USER", "current_level": "HIGH"}))
    assert {d.action for d in decisions} == {Action.STEP_UP, Action.SET_FLAGS}
    _, decisions = run(state, set_event(
        "risk-level-change", {"principal": "USER", "current_level": "LOW"}, jti="j2"))
    assert actions(decisions) == [("set_flags", "s1")]
    assert decisions[0].flags is not None and decisions[0].flags["downloads.enabled"] is True


def test_score_decays_and_flags_come_back() -> None:
    state = established("s1", device_id="laptop")
    state, _ = run(state, activity("presented", "s1", T0, device_id="phone"))
    later = T0 + 2 * POLICY.scoring.half_life_seconds
    state, decisions = run(state, activity("presented", "s1", later, device_id="phone"),
                           now=later)
    assert actions(decisions) == [("set_flags", "s1")]
    assert decisions[0].band == "low"


def test_assurance_drop_requires_step_up() -> None:
    _, decisions = run(established("s1"), set_event(
        "assurance-level-change", {"namespace": "NIST-AAL", "current_level": "nist-aal1",
                                   "previous_level": "nist-aal2", "change_direction": "decrease"},
        session="s1"))
    assert actions(decisions) == [("step_up", "s1")]
    assert decisions[0].max_age == 0
    _, increase = run(established("s1"), set_event(
        "assurance-level-change", {"namespace": "NIST-AAL", "current_level": "nist-aal3",
                                   "change_direction": "increase"}, session="s1"))
    assert increase == []


def test_device_out_of_compliance_restricts_the_sessions_on_that_device_only() -> None:
    state = established("on-laptop", device_id="laptop")
    state, _ = run(state, activity("established", "on-phone", T0 - 100, device_id="phone"))
    state, decisions = run(state, set_event(
        "device-compliance-change", {"previous_status": "compliant",
                                     "current_status": "not-compliant"}, device="laptop"))
    assert {d.session_id for d in decisions} == {"on-laptop"}
    flags = dict(state.sessions["on-laptop"].flags)
    assert flags["admin.console"] is False and flags["downloads.enabled"] is False
    assert dict(state.sessions["on-phone"].flags)["admin.console"] is True


def test_token_claims_change_re_evaluates_without_acting_on_a_small_change() -> None:
    state, decisions = run(established("s1"), set_event(
        "token-claims-change", {"claims": {"role": "ro-admin"}}, session="s1"))
    assert decisions == [] and state.sessions["s1"].risk == 5


def test_revoking_a_session_revokes_every_session_acting_for_it() -> None:
    state = established("user")
    state, _ = run(state, activity("established", "agent", T0 - 90, parent_session_id="user",
                                   act={"sub": "agent-7"}),
                   activity("established", "sub-agent", T0 - 80, parent_session_id="agent"),
                   activity("established", "other", T0 - 70))
    state, decisions = run(state, set_event("session-revoked", session="user"))
    assert sorted(d.session_id or "" for d in decisions) == ["agent", "sub-agent", "user"]
    assert state.sessions["other"].status == "active"
    assert state.sessions["agent"].actor == "agent-7"
    state, decisions = run(state, activity("established", "late-agent", T0 + 5,
                                           parent_session_id="sub-agent"))
    assert actions(decisions) == [("revoke_session", "late-agent")]


def test_jit_elevation_expires_without_any_event() -> None:
    state = established("s1", at=T0, elevated_until=T0 + 60)
    assert dict(state.sessions["s1"].flags)["elevated"] is True
    assert next_deadline(state, POLICY) == T0 + 60
    state, decisions = run(state, Tick(), now=T0 + 61)
    assert actions(decisions) == [("set_flags", "s1")]
    assert decisions[0].flags is not None and decisions[0].flags["elevated"] is False
    assert decisions[0].rule == "elevation-expired"
    assert run(state, Tick(), now=T0 + 62)[1] == []


def test_idle_and_absolute_lifetimes_end_sessions_on_time() -> None:
    state = established("idle", at=T0)
    state, decisions = run(state, Tick(), now=T0 + POLICY.lifetimes.idle_seconds)
    assert actions(decisions) == [("revoke_session", "idle")]
    assert decisions[0].rule == "session-lifetime" and decisions[0].source == "idle-timeout"


def test_monitor_mode_reports_without_enforcing() -> None:
    state = established("s1")
    state, decisions = run(state, set_event("session-revoked", session="s1"), policy=MONITOR)
    assert [(d.action.value, d.enforced) for d in decisions] == [("revoke_session", False)]
    assert state.sessions["s1"].status == "active"


def test_the_same_input_twice_changes_nothing_the_second_time() -> None:
    event = set_event("session-revoked", session="s1")
    first, decisions = run(established("s1"), event)
    again, repeated = run(first, event)
    assert repeated == [] and again == first
    _, same = run(established("s1"), event)
    assert [d.decision_id for d in same] == [d.decision_id for d in decisions]


def test_state_round_trips_compactly() -> None:
    state = established("s1", "s2", device_id="laptop", ip="192.0.2.1",
                        user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0")
    state, _ = run(state, activity("presented", "s1", T0, device_id="phone"))
    assert SubjectState.from_bytes(state.to_bytes()) == state
    assert len(state.to_bytes()) / len(state.sessions) < 1024


def test_wire_records_round_trip_and_junk_is_refused() -> None:
    for item in (set_event("session-revoked", session="s1"), activity("presented", "s1", T0),
                 Tick()):
        assert decode_input(encode_input(item)) == item
    for junk in (b"", b"[]", b'{"type":"event"}', b'{"type":"nope"}', b"\xff"):
        with pytest.raises(InvalidRequest):
            decode_input(junk)


@pytest.mark.parametrize(("raw", "fragment"), [
    (b"{}", "kind"),
    (b'{"kind":"presented","tenant":"t","subject":{"format":"email"},"session_id":"s",'
     b'"observed_at":1}', "subject"),
    (b'{"kind":"flying","tenant":"t","subject":{},"session_id":"s","observed_at":1}', "kind"),
    (b"[1]", "object"),
    (b"not json", "JSON"),
])
def test_bad_session_activity_is_invalid_request(raw: bytes, fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        parse_activity(raw)


@pytest.mark.parametrize(("text", "fragment"), [
    ("mode = [", "not valid TOML"),
    ('[[rule]]\nname = "x"\non = ["no-such-event"]\naction = "notify"', "unknown event name"),
    ('[[rule]]\nname = "x"\non = ["session-revoked"]\naction = "step_up"', "needs `acr`"),
    ('[[rule]]\nname = "x"\naction = "notify"', "needs `on` or `band`"),
    ('[[rule]]\nname = "x"\non = ["session-revoked"]\naction = "set_flags"\nflags = {a = 1}',
     "no default"),
    ('[[rule]]\nname = "x"\non = ["session-revoked"]\naction = "notify"\n'
     '[[rule]]\nname = "x"\non = ["session-revoked"]\naction = "notify"', "unique"),
    ('[scoring.bands]\nmedium = 90\nhigh = 50', "bands must"),
    ('colour = "blue"', "Extra inputs"),
])
def test_bad_policies_are_one_clear_error(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_policy(text)


def test_missing_policy_file(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.toml")


def test_subject_risk_reported_before_a_session_exists_applies_to_it() -> None:
    state, decisions = run(None, set_event(
        "risk-level-change", {"principal": "USER", "current_level": "HIGH"}))
    assert decisions == []
    state, decisions = run(state, activity("established", "s1", T0 + 1))
    assert {d.action for d in decisions} == {Action.STEP_UP, Action.SET_FLAGS}
    assert state.sessions["s1"].signals[0].name == "idp_risk_high"
    assert SubjectState.from_bytes(state.to_bytes()) == state


def test_heartbeats_do_not_push_applied_sets_out_of_memory() -> None:
    revoked = set_event("session-revoked", session="s1")
    state, _ = run(established("s1", "s2", device_id="laptop"), revoked)
    for n in range(400):
        state, decisions = run(state, activity("presented", "s2", T0 + n, device_id="laptop"))
        assert decisions == []
    again, decisions = run(state, revoked)
    assert decisions == [] and again == state
    twice, decisions = run(again, activity("presented", "s2", T0 + 500, device_id="phone",
                                           user_agent="Edge"))
    repeat, more = run(twice, activity("presented", "s2", T0 + 500, device_id="phone",
                                       user_agent="Edge"))
    assert more == [] and repeat.sessions["s2"].risk == twice.sessions["s2"].risk


def test_notify_rules_report_without_changing_anything() -> None:
    policy = parse_policy(default_policy_text() + '''
[[rule]]
name = "tell-the-soc"
on = ["account-enabled"]
action = "notify"
''')
    state = established("s1")
    after, decisions = run(state, set_event("account-enabled", prefix=RISC), policy=policy)
    assert [(d.action, d.rule) for d in decisions] == [(Action.NOTIFY, "tell-the-soc")]
    assert after.sessions == state.sessions


def test_a_parent_learned_after_its_delegate_still_cuts_the_delegate_off() -> None:
    """Found by the property tests: the chain s2 -> s1 -> s0 learned out of order."""
    state, _ = run(None, activity("established", "s0", T0 - 100),
                   activity("established", "s2", T0 - 100, parent_session_id="s1"),
                   activity("ended", "s1", T0 - 100, parent_session_id="s0"))
    assert state.sessions["s1"].status == "ended"
    assert state.sessions["s2"].status == "revoked", "its parent ended"
    state, _ = run(None, activity("established", "s0", T0 - 100),
                   activity("established", "s2", T0 - 100, parent_session_id="s1"),
                   activity("established", "s1", T0 - 100, parent_session_id="s0"),
                   set_event("session-revoked", session="s0"))
    assert {s.session_id: s.status for s in state.sessions.values()} == {
        "s0": "revoked", "s1": "revoked", "s2": "revoked"}


def test_delegates_of_a_session_that_ended_do_not_outlive_it() -> None:
    state, decisions = run(None, activity("established", "s2", T0 - 100),
                           activity("established", "s3", T0 - 99, parent_session_id="s2"),
                           activity("ended", "s2", T0 - 98))
    assert state.sessions["s3"].status == "revoked"
    assert actions(decisions)[-1] == ("revoke_session", "s3")
    monitored, reported = run(None, activity("established", "s2", T0 - 100),
                              activity("established", "s3", T0 - 99, parent_session_id="s2"),
                              activity("ended", "s2", T0 - 98), policy=MONITOR)
    assert monitored.sessions["s3"].status == "active"
    assert [(d.action, d.session_id, d.enforced) for d in reported] == [
        (Action.REVOKE_SESSION, "s3", False)]
    _, repeated = run(monitored, activity("presented", "s3", T0 - 97), policy=MONITOR)
    assert repeated == [], "monitor mode reports a fact once, not on every input"

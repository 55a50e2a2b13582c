"""The relying service's in-memory view: pure, so proven without a broker."""

from __future__ import annotations

import random
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caep.client.middleware import Principal, check
from caep.client.view import ChangeKind, SessionView, principal_key
from caep.decisions import Action, Decision, SessionFlags
from caep.errors import ConfigError, InvalidRequest
from caep.policy import load_policy, parse_policy

POLICY = load_policy()
LIFETIME = POLICY.lifetimes.absolute_seconds
T0 = 1_800_000_000.0
USER = {"format": "email", "email": "ann@example.com"}


def decision(action: Action, sid: str | None = "s1", tenant: str = "acme", at: float = T0,
             **extra: Any) -> bytes:
    return Decision(decision_id=str(uuid.uuid4()), action=action, tenant=tenant,
                    subject=extra.pop("subject", USER), subject_key=f"{tenant}|k",
                    session_id=sid, reasons=["test"], source="test", decided_at=at,
                    **extra).to_json()


def flags_record(sid: str, flags: dict[str, Any], tenant: str = "acme",
                 at: float = T0) -> bytes:
    return SessionFlags(session_id=sid, tenant=tenant, subject_key=f"{tenant}|k", flags=flags,
                        updated_at=at).to_json()


def test_a_view_serves_only_the_tenants_it_names() -> None:
    with pytest.raises(ConfigError, match="tenants"):
        SessionView([], POLICY)
    with pytest.raises(ConfigError):
        SessionView(["", ""], POLICY)


def test_revocations_of_other_tenants_are_counted_and_never_answered() -> None:
    view = SessionView(["acme"], POLICY)
    assert view.apply_decision(decision(Action.REVOKE_SESSION, "s1", "globex"), T0) is None
    assert view.apply_flags(flags_record("s1", {"downloads.enabled": False}, "globex"),
                            T0) is None
    assert view.apply_decision(decision(Action.STEP_UP, "s1", "globex", required_acr="mfa"),
                               T0) is None
    assert view.counters.other_tenant == 3
    assert len(view) == 0
    assert not view.is_revoked("s1")
    assert not view.is_revoked("s1", "globex")
    assert view.required_acr("s1") is None
    assert view.flags("s1") == POLICY.flags

    change = view.apply_decision(decision(Action.REVOKE_SESSION, "s1", "acme"), T0)
    assert change is not None and change.kind is ChangeKind.SESSION_REVOKED
    assert view.is_revoked("s1") and view.is_revoked("s1", "acme")
    assert not view.is_revoked("s1", "globex"), "a tenant not served is never answered for"
    assert not view.is_revoked("s2")


def test_monitor_mode_decisions_change_nothing() -> None:
    view = SessionView(["acme"], POLICY)
    assert view.apply_decision(decision(Action.REVOKE_SESSION, enforced=False), T0) is None
    assert view.apply_decision(decision(Action.SET_FLAGS, enforced=False,
                                        flags={"downloads.enabled": False}), T0) is None
    assert view.counters.monitor == 2 and not view.is_revoked("s1")
    assert view.flags("s1") == POLICY.flags


def test_step_up_latest_wins_and_reports_acr_and_max_age() -> None:
    view = SessionView(["acme"], POLICY)
    view.apply_decision(decision(Action.STEP_UP, required_acr="urn:mfa", max_age=300, at=T0),
                        T0)
    view.apply_decision(decision(Action.STEP_UP, required_acr="urn:old", max_age=5,
                                 at=T0 - 10), T0)
    step = view.step_up("s1")
    assert step is not None and (step.acr, step.max_age, step.decided_at) == (
        "urn:mfa", 300, T0)
    assert view.required_acr("s1") == "urn:mfa"
    assert view.counters.unchanged == 1


def test_revoking_a_session_turns_its_security_flags_to_their_safe_value() -> None:
    policy = parse_policy('[flags]\n"downloads.enabled" = true\n"theme" = "light"\n'
                          '[security_flags]\n"downloads.enabled" = false\n')
    view = SessionView(["acme"], policy)
    change = view.apply_flags(flags_record("s1", {"downloads.enabled": True, "theme": "dark"}),
                              T0)
    assert change is not None and change.flags_changed == {"theme"}
    change = view.apply_decision(decision(Action.REVOKE_SESSION), T0 + 1)
    assert change is not None and change.flags_changed == {"downloads.enabled"}
    assert view.flags("s1") == {"downloads.enabled": False, "theme": "dark"}


def test_a_flags_record_missing_a_newer_policy_flag_falls_back_to_its_default() -> None:
    view = SessionView(["acme"], POLICY)
    change = view.apply_flags(flags_record("s1", {"downloads.enabled": False}), T0)
    assert change is not None and change.flags_changed == {"downloads.enabled"}
    assert view.flags("s1") == {**POLICY.flags, "downloads.enabled": False}


def test_subject_revocation_covers_sessions_established_before_it_only() -> None:
    view = SessionView(["acme"], POLICY)
    complex_subject = {"format": "complex", "user": {"format": "email",
                                                     "email": "ANN@example.com"},
                       "tenant": {"format": "opaque", "id": "acme"}}
    change = view.apply_decision(decision(Action.REVOKE_SUBJECT, None, subject=complex_subject,
                                          established_before=T0 - 5, at=T0), T0)
    assert change is not None and change.kind is ChangeKind.SUBJECT_REVOKED
    assert view.is_revoked_subject(USER, established_at=T0 - 6)
    assert view.is_revoked_subject(USER, established_at=T0 - 5)
    assert not view.is_revoked_subject(USER, established_at=T0 - 4)
    assert view.is_revoked_subject(USER), "unknown establishment time: fail closed"
    assert not view.is_revoked_subject({"format": "email", "email": "bob@example.com"})
    assert not view.is_revoked_subject(USER, tenant="globex")
    with pytest.raises(InvalidRequest):
        view.is_revoked_subject({"format": "email"})


def test_principal_key_matches_a_complex_subject_to_its_user() -> None:
    session_scoped = {"format": "complex", "user": USER,
                      "session": {"format": "opaque", "id": "s1"}}
    assert principal_key(session_scoped) == principal_key(USER)
    assert principal_key({"format": "email", "email": "Ann@Example.com"}) == principal_key(USER)


def test_a_record_that_arrives_after_its_sessions_lifetime_is_not_kept() -> None:
    view = SessionView(["acme"], POLICY)
    assert view.apply_decision(decision(Action.REVOKE_SESSION, "s0"),
                               T0 + view.retention - 1) is not None
    view = SessionView(["acme"], POLICY)
    late = T0 + view.retention
    assert view.apply_decision(decision(Action.REVOKE_SESSION), late) is None
    assert view.apply_flags(flags_record("s1", {"downloads.enabled": False}), late) is None
    assert view.counters.expired == 2 and len(view) == 0


JUNK_DECISIONS = [
    b"", b"not json", b"[]", b"null", b'{"action": "revoke_session"}',
    b'{"decision_id": 1}', b"\xff\xfe", b'{"a":' * 10_000,
    orjson.dumps({**orjson.loads(decision(Action.REVOKE_SESSION)), "decided_at": "soon"}),
    orjson.dumps({**orjson.loads(decision(Action.REVOKE_SESSION)), "action": "explode"}),
    decision(Action.REVOKE_SESSION, None),
    decision(Action.STEP_UP),  # no required_acr
    decision(Action.SET_FLAGS),  # no flags
    decision(Action.REVOKE_SUBJECT, None, subject={"format": "email"}),  # no address
]


@pytest.mark.parametrize("value", [*JUNK_DECISIONS, None])
def test_malformed_decisions_are_counted_and_skipped(value: bytes | None) -> None:
    view = SessionView(["acme"], POLICY)
    assert view.apply_decision(value, T0) is None
    assert view.counters.malformed == 1 and len(view) == 0


def test_unknown_members_from_a_newer_engine_are_ignored() -> None:
    view = SessionView(["acme"], POLICY)
    newer = orjson.dumps({**orjson.loads(decision(Action.REVOKE_SESSION)), "new_member": 1})
    assert view.apply_decision(newer, T0) is not None and view.is_revoked("s1")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_no_bytes_make_the_view_raise(value: bytes) -> None:
    view = SessionView(["acme"], POLICY)
    view.apply_decision(value, T0)
    view.apply_flags(value, T0)
    assert view.counters.malformed + view.counters.applied + view.counters.other_tenant >= 1


# -- properties over sequences of records ----------------------------------------------------

TENANTS = ["acme", "globex"]
SIDS = ["s1", "s2", "s3"]
times = st.integers(min_value=0, max_value=2).map(lambda i: T0 + i * 1000.0)


@st.composite
def records(draw: st.DrawFn) -> tuple[str, bytes]:
    tenant, sid, at = draw(st.sampled_from(TENANTS)), draw(st.sampled_from(SIDS)), draw(times)
    kind = draw(st.sampled_from(["revoke", "step_up", "flags", "set_flags", "subject",
                                 "monitor", "junk"]))
    flags = {"downloads.enabled": draw(st.booleans()), "admin.console": draw(st.booleans()),
             "elevated": False}
    if kind == "revoke":
        return "decisions", decision(Action.REVOKE_SESSION, sid, tenant, at)
    if kind == "step_up":
        return "decisions", decision(Action.STEP_UP, sid, tenant, at,
                                     required_acr=draw(st.sampled_from(["mfa", "hwk"])),
                                     max_age=draw(st.sampled_from([None, 0, 300])))
    if kind == "flags":
        return "flags", flags_record(sid, flags, tenant, at)
    if kind == "set_flags":
        return "decisions", decision(Action.SET_FLAGS, sid, tenant, at, flags=flags)
    if kind == "subject":
        user = {"format": "email", "email": f"{sid}@example.com"}
        return "decisions", decision(Action.REVOKE_SUBJECT, None, tenant, at, subject=user,
                                     established_before=at - draw(st.sampled_from([0, 50])))
    if kind == "monitor":
        return "decisions", decision(Action.REVOKE_SESSION, sid, tenant, at, enforced=False)
    return draw(st.sampled_from(["decisions", "flags"])), draw(st.binary(max_size=20))


def feed(view: SessionView, items: list[tuple[str, bytes]], now: float) -> None:
    for topic, value in items:
        if topic == "flags":
            view.apply_flags(value, now)
        else:
            view.apply_decision(value, now)


def answers(view: SessionView) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tenant in [*TENANTS, None]:
        for sid in SIDS:
            out[f"{tenant}/{sid}"] = (
                view.is_revoked(sid, tenant), view.step_up(sid, tenant),
                dict(view.flags(sid, tenant)),
                [view.is_revoked_subject({"format": "email", "email": f"{sid}@example.com"},
                                         tenant, established_at=T0 + i * 500.0)
                 for i in range(10)])
    return out


def test_ties_are_broken_by_content_so_every_replica_converges() -> None:
    a = flags_record("s1", {"downloads.enabled": False})
    b = flags_record("s1", {"downloads.enabled": True})
    c = decision(Action.STEP_UP, required_acr="mfa", max_age=0)
    d = decision(Action.STEP_UP, required_acr="hwk", max_age=0)
    one, other = SessionView(["acme"], POLICY), SessionView(["acme"], POLICY)
    feed(one, [("flags", a), ("flags", b), ("decisions", c), ("decisions", d)], T0)
    feed(other, [("flags", b), ("flags", a), ("decisions", d), ("decisions", c)], T0)
    assert answers(one) == answers(other)


@settings(max_examples=150, deadline=None)
@given(st.lists(records(), max_size=25), st.randoms(use_true_random=False))
def test_any_order_and_any_repetition_give_the_same_answers(
        items: list[tuple[str, bytes]], rnd: random.Random) -> None:
    now = T0 + 5000
    first = SessionView(["acme"], POLICY)
    feed(first, items, now)
    shuffled = items + rnd.sample(items, k=len(items) // 2)
    rnd.shuffle(shuffled)
    second = SessionView(["acme"], POLICY)
    feed(second, shuffled, now)
    assert answers(first) == answers(second)


@settings(max_examples=150, deadline=None)
@given(st.lists(records(), max_size=25))
def test_other_tenants_records_change_no_answer(items: list[tuple[str, bytes]]) -> None:
    now = T0 + 5000
    mine = [(t, v) for t, v in items if b'"tenant":"globex"' not in v]
    theirs = len(items) - len(mine)
    with_theirs, without = SessionView(["acme"], POLICY), SessionView(["acme"], POLICY)
    feed(with_theirs, items, now)
    feed(without, mine, now)
    assert answers(with_theirs) == answers(without)
    assert with_theirs.counters.other_tenant == theirs


@settings(max_examples=150, deadline=None)
@given(st.lists(records(), max_size=25), st.integers(min_value=0, max_value=6))
def test_eviction_drops_exactly_the_entries_past_their_sessions_lifetime(
        items: list[tuple[str, bytes]], step: int) -> None:
    fed_at = T0 + 5000
    view = SessionView(["acme"], POLICY)
    feed(view, items, fed_at)
    later = T0 + LIFETIME + step * 1000.0 - 500
    fresh = SessionView(["acme"], POLICY)  # what a view started at `later` would hold
    feed(fresh, items, later)
    view.evict(later)
    assert len(view) == len(fresh)
    assert answers(view) == answers(fresh)
    view.evict(T0 + 10 * LIFETIME)
    assert len(view) == 0 and not view._expiry


@settings(max_examples=150, deadline=None)
@given(st.lists(records(), max_size=25))
def test_each_change_names_exactly_the_flags_whose_effective_value_changed(
        items: list[tuple[str, bytes]]) -> None:
    view = SessionView(["acme"], POLICY)
    for topic, value in items:
        before = {sid: dict(view.flags(sid, "acme")) for sid in SIDS}
        if topic == "flags":
            change = view.apply_flags(value, T0 + 5000)
        else:
            change = view.apply_decision(value, T0 + 5000)
        for sid in SIDS:
            after = dict(view.flags(sid, "acme"))
            moved = {k for k in before[sid] | after if before[sid].get(k) != after.get(k)}
            if change is not None and change.session_id == sid:
                assert change.flags_changed == moved
            else:
                assert not moved


def test_policy_security_flags_need_a_default_of_the_same_type() -> None:
    with pytest.raises(ConfigError, match="no default"):
        parse_policy('[security_flags]\n"x" = false\n')
    with pytest.raises(ConfigError, match="not of the type"):
        parse_policy('[flags]\n"x" = true\n[security_flags]\n"x" = "off"\n')
    assert parse_policy('[flags]\n"x" = 1.5\n[security_flags]\n"x" = 0\n').security_flags == {
        "x": 0}
    assert set(POLICY.security_flags) <= set(POLICY.flags)



# -- eviction never lets a revoked session back in ---------------------------------------------


def refused(view: SessionView, now: float, **principal: Any) -> bool:
    return check(Principal(**principal), view, now) is not None


def test_a_revoked_session_stays_refused_until_the_longest_session_could_have_ended() -> None:
    """No token of a revoked session gets in again: one without auth_time (nothing to hold
    against the lifetime), one authenticated the second the session was revoked, one of a
    subject revoked long after `established_before`; until `max_session_lifetime` (plus the
    clock skew) after the decision. Then the memory is released."""
    view = SessionView(["acme"], POLICY, max_session_lifetime=3 * LIFETIME)
    assert view.retention == 3 * LIFETIME + view.clock_skew
    view.apply_decision(decision(Action.REVOKE_SESSION, "s1", at=T0), T0)
    view.apply_decision(decision(Action.REVOKE_SUBJECT, None, established_before=T0 - LIFETIME / 2,
                                 at=T0), T0)
    bound = T0 + view.retention
    for now in (T0 + LIFETIME / 2 + 1, T0 + LIFETIME + 1, T0 + 2 * LIFETIME, bound - 1):
        assert view.evict(now) == 0
        assert refused(view, now, session_id="s1"), now - T0
        assert refused(view, now, session_id="s2", subject=USER), now - T0
    assert view.evict(bound) == 2 and len(view) == 0 and not view._expiry
    assert view.counters.evicted == 2
    assert not refused(view, bound, session_id="s1")


def test_by_default_a_revocation_outlives_every_token_the_middleware_still_accepts() -> None:
    view = SessionView(["acme"], POLICY)
    view.apply_decision(decision(Action.REVOKE_SESSION, "s1", at=T0), T0)
    view.apply_decision(decision(Action.REVOKE_SUBJECT, None, established_before=T0 - 600,
                                 at=T0), T0)
    # Within the middleware's 5 s leeway a token authenticated at T0 is not past its lifetime.
    now = T0 + LIFETIME + 2
    view.evict(now)
    assert refused(view, now, session_id="s1", auth_time=T0)
    assert refused(view, now, session_id="s2", subject=USER)  # no auth_time: fail closed
    assert refused(view, now, session_id="s2", subject=USER, auth_time=T0 - 600)
    assert view.max_session_lifetime == LIFETIME and view.clock_skew >= 5.0
    later = T0 + view.retention
    view.evict(later)
    assert len(view) == 0
    assert refused(view, later, session_id="s1", auth_time=T0), "by its lifetime, now"


def test_a_session_lifetime_shorter_than_the_policys_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least the policy's absolute lifetime"):
        SessionView(["acme"], POLICY, max_session_lifetime=LIFETIME - 1)
    with pytest.raises(ConfigError, match="clock_skew"):
        SessionView(["acme"], POLICY, clock_skew=-1)


def test_a_session_id_two_served_tenants_restricted_fails_closed_without_a_tenant() -> None:
    view = SessionView(["acme", "globex"], POLICY)
    view.apply_flags(flags_record("s1", {"downloads.enabled": False}, "acme"), T0)
    view.apply_flags(flags_record("s1", {"downloads.enabled": True, "admin.console": False},
                                  "globex"), T0)
    assert view.flags("s1") == {**POLICY.flags, **POLICY.security_flags}
    assert view.flags("s1", "globex") == {**POLICY.flags, "admin.console": False}
    assert view.ambiguous("s1") and not view.ambiguous("s1", "acme")


def test_flags_are_a_copy_the_caller_may_change() -> None:
    policy = parse_policy('[flags]\n"layout" = { columns = 2 }\n')
    view = SessionView(["acme"], policy)
    mine = view.flags("s1")
    mine["layout"]["columns"] = 9  # type: ignore[index]
    assert view.flags("s1") == {"layout": {"columns": 2}} == policy.flags

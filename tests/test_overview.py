"""The operator's figures (`caep.overview`) and the worker's JSON log lines (`streams.logs`)."""

from __future__ import annotations

import json
import logging
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from caep.decisions import Action, Decision
from caep.overview import BandCounts, apply_change, band_counts, by_tenant, timeline
from caep.policy import load_policy
from caep.state import Session, Signal, SubjectState
from streams.logs import JsonFormatter, logging_config

SCORING = load_policy().scoring
BANDS = ("low", "medium", "high", "critical")

sessions = st.builds(
    Session, session_id=st.sampled_from(["a", "b", "c", "d"]),
    status=st.sampled_from(["active", "revoked", "ended"]),
    risk=st.floats(min_value=0, max_value=100))
states = st.builds(
    lambda tenant, subject, found: SubjectState(
        tenant=tenant, key=f"{tenant}|{subject}",
        sessions={s.session_id: s for s in found}),
    st.sampled_from(["acme", "globex"]), st.sampled_from(["alice", "bob", "carol"]),
    st.lists(sessions, max_size=4))


@settings(max_examples=300)
@given(st.lists(states, max_size=30))
def test_counts_kept_by_differences_equal_a_recount(evaluations: list[SubjectState]) -> None:
    """However many evaluations, adding each one's difference gives what a full rescan of the
    latest state of every subject gives."""
    totals: BandCounts = Counter()
    latest: dict[str, SubjectState] = {}
    for after in evaluations:
        apply_change(totals, latest.get(after.key), after, SCORING)
        latest[after.key] = after
    recount: BandCounts = Counter()
    for state in latest.values():
        recount.update(band_counts(state, SCORING))
    assert totals == +recount
    assert all(count > 0 for count in totals.values())


def test_only_active_sessions_are_counted_in_the_band_of_their_score() -> None:
    state = SubjectState(tenant="acme", key="acme|alice", sessions={
        "calm": Session("calm", risk=0.0), "hot": Session("hot", risk=95.0),
        "gone": Session("gone", status="revoked", risk=95.0),
        "done": Session("done", status="ended")})
    assert band_counts(state, SCORING) == Counter({("acme", "low"): 1, ("acme", "critical"): 1})
    assert by_tenant(band_counts(state, SCORING), BANDS, ["globex"]) == {
        "acme": {"low": 1, "medium": 0, "high": 0, "critical": 1},
        "globex": {"low": 0, "medium": 0, "high": 0, "critical": 0}}


def _decision(session_id: str | None, at: float, key: str = "acme|alice") -> Decision:
    return Decision(decision_id=f"d-{session_id}-{at}", action=Action.REVOKE_SESSION,
                    tenant="acme", subject={"format": "email", "email": "alice@example.com"},
                    subject_key=key, session_id=session_id, rule="risk-critical-revoke",
                    reasons=["score 95 is in band critical"], source="risk-level-change",
                    decided_at=at)


def test_a_timeline_interleaves_signals_and_the_decisions_about_the_session() -> None:
    session = Session("s1", established_at=10.0, risk=70.0, risk_at=30.0, signals=(
        Signal("new_device", 40.0, 20.0, "activity:s1"),
        Signal("idp_risk_high", 40.0, 30.0, "jti:abc")))
    state = SubjectState(tenant="acme", key="acme|alice", sessions={"s1": session})
    decisions = [_decision("s1", 31.0), _decision("s2", 25.0), _decision(None, 5.0),
                 _decision("s1", 32.0, key="acme|bob")]
    found = timeline(state, "s1", decisions, SCORING, now=30.0)
    assert found is not None
    assert [(e["kind"], e["at"]) for e in found["events"]] == [
        ("decision", 5.0), ("signal", 20.0), ("signal", 30.0), ("decision", 31.0)]
    assert found["score"] == 70.0 and found["band"] == "high"
    assert found["events"][-1]["reasons"] == ["score 95 is in band critical"]
    assert timeline(state, "nope", decisions, SCORING, now=30.0) is None


def test_json_log_lines_carry_the_correlation_fields() -> None:
    record = logging.LogRecord("caep.worker", logging.INFO, __file__, 1, "decision %s", ("x",),
                               None)
    record.decision_id, record.jti = "d-1", "jti-1"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "decision x"
    assert (line["decision_id"], line["jti"], line["level"]) == ("d-1", "jti-1", "info")
    assert line["time"].endswith("Z")
    config = logging_config("info", "json")
    assert config["root"]["level"] == "INFO"
    assert config["formatters"]["main"]["()"].endswith("JsonFormatter")


def test_the_board_counts_each_rule_in_enforce_and_in_monitor_mode() -> None:
    from streams.dashboard import Board

    board = Board(load_policy(), lag=lambda: [("t.engine-input", 0, 3)])
    enforced = _decision("s1", 1.0)
    watched = enforced.model_copy(update={"decision_id": "d-m", "enforced": False})
    board.decided([enforced, watched, watched.model_copy(update={"decision_id": "d-m2"})])
    overview = board.overview()
    assert overview["rules"] == {"risk-critical-revoke": {"enforced": 1, "monitor": 2}}
    assert overview["lag"] == [{"topic": "t.engine-input", "partition": 0, "lag": 3}]
    assert [d.decision_id for d in board.recent] == [enforced.decision_id, "d-m", "d-m2"]

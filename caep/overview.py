"""What an operator sees of the engine's state: live sessions by tenant and risk band, and one
session's timeline. Pure functions of the state, so the dashboard, the metrics and the tests
read the same figures.

A session's band here is the band of its score at its last re-score (`Session.risk`), not
decayed to the present: that keeps the counts a function of the state alone, so they can be
kept up to date by adding and subtracting each evaluation's difference instead of rescanning.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from caep.decisions import Decision
from caep.policy import Scoring
from caep.scoring import current_risk
from caep.state import SubjectState

BandCounts = Counter[tuple[str, str]]  # (tenant, band) -> live sessions


def band_counts(state: SubjectState | None, scoring: Scoring) -> BandCounts:
    """Live (active) sessions of one subject, by tenant and band at their last re-score."""
    counts: BandCounts = Counter()
    if state is None:
        return counts
    for session in state.sessions.values():
        if session.active:
            counts[(state.tenant, scoring.band(session.risk))] += 1
    return counts


def apply_change(totals: BandCounts, before: SubjectState | None, after: SubjectState | None,
                 scoring: Scoring) -> None:
    """Bring `totals` from counting `before` to counting `after` (one subject's evaluation)."""
    totals.update(band_counts(after, scoring))
    totals.subtract(band_counts(before, scoring))
    for key in [k for k, v in totals.items() if v <= 0]:
        del totals[key]


def by_tenant(totals: BandCounts, bands: Iterable[str],
              tenants: Iterable[str] = ()) -> dict[str, dict[str, int]]:
    """{tenant: {band: live sessions}} with every band present, for the tenants counted and
    `tenants` (known ones whose sessions all ended show zeros rather than vanish), sorted."""
    order = list(bands)
    names = sorted({tenant for tenant, _band in totals} | set(tenants))
    table = {tenant: dict.fromkeys(order, 0) for tenant in names}
    for (tenant, band), count in totals.items():
        table[tenant][band] = count
    return table


def timeline(state: SubjectState, session_id: str, decisions: Iterable[Decision],
             scoring: Scoring, now: float) -> dict[str, Any] | None:
    """One session as the dashboard shows it: its facts, its signals and the decisions about
    it (or its whole subject), oldest first; None if the subject has no such session."""
    session = state.sessions.get(session_id)
    if session is None:
        return None
    risk = current_risk(session, scoring, now)
    entries: list[dict[str, Any]] = [
        {"at": s.at, "kind": "signal", "name": s.name, "weight": s.weight, "source": s.source}
        for s in session.signals
    ]
    entries += [
        {"at": d.decided_at, "kind": "decision", "action": d.action.value, "rule": d.rule,
         "enforced": d.enforced, "reasons": d.reasons, "decision_id": d.decision_id,
         "score": d.score, "band": d.band, "jtis": d.jtis}
        for d in decisions
        if d.subject_key == state.key and d.session_id in (session_id, None)
    ]
    entries.sort(key=lambda entry: entry["at"])
    return {
        "subject_key": state.key, "tenant": state.tenant, "session_id": session_id,
        "status": session.status, "established_at": session.established_at,
        "last_seen": session.last_seen, "parent": session.parent, "devices": list(session.devices),
        "ip": session.ip, "user_agent": session.user_agent,
        "score": round(risk, 2), "band": scoring.band(risk),
        "flags": dict(session.flags), "required_acr": session.required_acr,
        "revoked_at": session.revoked_at, "events": entries,
    }

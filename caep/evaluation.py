"""Where a verified event becomes decisions. Pure: no I/O, time is an argument."""

from __future__ import annotations

from typing import Any

import orjson

from caep.codec import VerifiedSet
from caep.decisions import Action, Decision, decision_id

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"


def _subject_key(tenant: str, subject: dict[str, Any]) -> str:
    return tenant + "|" + orjson.dumps(subject, option=orjson.OPT_SORT_KEYS).decode()


def _session_id(subject: dict[str, Any]) -> str | None:
    session = subject.get("session") if subject.get("format") == "complex" else None
    if isinstance(session, dict) and isinstance(session.get("id"), str):
        return str(session["id"])
    return None


def decide(verified: VerifiedSet, now: float) -> list[Decision]:
    """Decisions for one verified SET."""
    decisions: list[Decision] = []
    for event_type in verified.events:
        if event_type != SESSION_REVOKED:
            continue
        subject = verified.subject_of(event_type)
        if subject is None:
            continue
        session_id = _session_id(subject)
        action = Action.REVOKE_SESSION if session_id else Action.REVOKE_SUBJECT
        decisions.append(
            Decision(
                decision_id=decision_id(
                    iss=verified.iss, jti=verified.jti, action=action, session_id=session_id
                ),
                action=action,
                tenant=verified.tenant,
                subject=subject,
                subject_key=_subject_key(verified.tenant, subject),
                session_id=session_id,
                reasons=[f"event {event_type}", f"jti {verified.jti}"],
                source_jti=verified.jti,
                source_iss=verified.iss,
                decided_at=now,
            )
        )
    return decisions

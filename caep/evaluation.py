"""Where a verified event becomes decisions. Pure: no I/O, time is an argument."""

from __future__ import annotations

from caep.codec import SubjectEvent, VerifiedSet
from caep.decisions import Action, Decision, decision_id
from caep.events import SessionRevoked
from caep.subjects import session_id_of, subject_key


def partition_key(tenant: str, item: SubjectEvent) -> str:
    """Tenant plus canonical subject: all of one subject's records land in one partition."""
    return f"{tenant}|{subject_key(item.subject)}"


def decide(verified: VerifiedSet, now: float) -> list[Decision]:
    """Decisions for one verified SET."""
    decisions: list[Decision] = []
    for item in verified.items:
        if not isinstance(item.event, SessionRevoked):
            continue
        session_id = session_id_of(item.subject)
        action = Action.REVOKE_SESSION if session_id else Action.REVOKE_SUBJECT
        tenant = verified.tenant_for(item)
        decisions.append(
            Decision(
                decision_id=decision_id(
                    iss=verified.iss, jti=verified.jti, action=action, session_id=session_id
                ),
                action=action,
                tenant=tenant,
                subject=item.subject_raw,
                subject_key=partition_key(tenant, item),
                session_id=session_id,
                reasons=[f"event {item.event_type}", f"jti {verified.jti}"],
                source_jti=verified.jti,
                source_iss=verified.iss,
                decided_at=now,
            )
        )
    return decisions

"""The engine's decisions as CAEP SETs for relying parties.

| decision | CAEP event |
| --- | --- |
| revoke_session | session-revoked about the session (a complex subject with `session`) |
| revoke_subject | session-revoked about the subject: all its sessions (CAEP §3.1's user example) |
| step_up | assurance-level-change, `change_direction: decrease`, with the required `acr` |
| set_flags | token-claims-change with the session's new flags as `claims` |

Monitor-mode decisions (`enforced: false`) and `notify` are not transmitted. The `jti` is
derived from the decision and the stream, so a decision delivered again after a restart is
the same SET for the receiver; `txn` (SSF §4.1.7) carries the decision id.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from caep.decisions import Action, Decision
from caep.events import CAEP, SSF

SESSION_REVOKED = CAEP + "session-revoked"
ASSURANCE_LEVEL_CHANGE = CAEP + "assurance-level-change"
TOKEN_CLAIMS_CHANGE = CAEP + "token-claims-change"
VERIFICATION = SSF + "verification"
STREAM_UPDATED = SSF + "stream-updated"
#: assurance-level-change `namespace` for the engine's acr values (CAEP §3.4 allows any
#: value agreed between the parties).
ACR_NAMESPACE = "urn:caep-engine:acr"
JTI_NAMESPACE = uuid.UUID("0b9b3c7e-1f0e-4a3c-8d55-5a1f2c7d9e10")


@dataclass(frozen=True)
class OutgoingEvent:
    """One CAEP event to transmit: its type, payload and subject (`sub_id`)."""

    event_type: str
    payload: dict[str, Any]
    subject: dict[str, Any]
    subject_key: str
    tenant: str
    decision_id: str
    decided_at: float


def session_subject(subject: Mapping[str, Any], session_id: str | None) -> dict[str, Any]:
    """The decision's subject, narrowed to the session when the decision names one."""
    if session_id is None:
        return dict(subject)
    session = {"format": "opaque", "id": session_id}
    if subject.get("format") == "complex":
        return {**subject, "session": subject.get("session", session)}
    return {"format": "complex", "user": dict(subject), "session": session}


def _common(decision: Decision) -> dict[str, Any]:
    """CAEP §2 claims; `reason_admin` always set (the CAEP interoperability profile requires
    it non-empty for session-revoked)."""
    if decision.rule:
        reason = f"caep-engine rule {decision.rule}"
    else:
        reason = decision.reasons[0] if decision.reasons else f"caep-engine {decision.action}"
    return {"event_timestamp": math.floor(decision.decided_at),
            "initiating_entity": "policy", "reason_admin": {"en": reason}}


def event_for(decision: Decision) -> OutgoingEvent | None:
    """The CAEP event a decision becomes, or None when it is not transmitted."""
    if not decision.enforced:
        return None
    payload = _common(decision)
    subject = session_subject(decision.subject, decision.session_id)
    if decision.action is Action.REVOKE_SESSION:
        event_type = SESSION_REVOKED
    elif decision.action is Action.REVOKE_SUBJECT:
        event_type, subject = SESSION_REVOKED, dict(decision.subject)
    elif decision.action is Action.STEP_UP:
        event_type = ASSURANCE_LEVEL_CHANGE
        payload.update({"namespace": ACR_NAMESPACE, "current_level": "insufficient",
                        "change_direction": "decrease"})
        if decision.required_acr is not None:
            payload["required_acr"] = decision.required_acr
        if decision.max_age is not None:
            payload["max_age"] = decision.max_age
    elif decision.action is Action.SET_FLAGS and decision.flags:
        event_type = TOKEN_CLAIMS_CHANGE
        payload["claims"] = dict(decision.flags)
    else:
        return None
    return OutgoingEvent(event_type=event_type, payload=payload, subject=subject,
                         subject_key=decision.subject_key, tenant=decision.tenant,
                         decision_id=decision.decision_id, decided_at=decision.decided_at)


def set_claims(event: OutgoingEvent, *, issuer: str, audience: str | list[str],
               stream_id: str, now: float) -> dict[str, Any]:
    """SET claims (RFC 8417, SSF §4) for one stream, ready to sign."""
    return {
        "iss": issuer,
        "aud": audience,
        "jti": uuid.uuid5(JTI_NAMESPACE, f"{event.decision_id}|{stream_id}").hex,
        "iat": math.floor(now),
        "txn": event.decision_id,
        "sub_id": event.subject,
        "events": {event.event_type: event.payload},
    }


def stream_subject(stream_id: str) -> dict[str, str]:
    """SSF §8.1.4.1 and §8.1.5: a stream's own events are about the stream, as `opaque`."""
    return {"format": "opaque", "id": stream_id}


def verification_claims(*, issuer: str, audience: str | list[str], stream_id: str,
                        state: str | None, now: float) -> dict[str, Any]:
    """SSF §8.1.4.1 Verification SET (`state` echoed when the receiver gave one)."""
    payload = {"state": state} if state is not None else {}
    return {"iss": issuer, "aud": audience, "jti": uuid.uuid4().hex, "iat": math.floor(now),
            "sub_id": stream_subject(stream_id), "events": {VERIFICATION: payload}}


def stream_updated_claims(*, issuer: str, audience: str | list[str], stream_id: str,
                          status: str, reason: str | None, now: float) -> dict[str, Any]:
    """SSF §8.1.5 Stream Updated SET."""
    payload: dict[str, Any] = {"status": status}
    if reason is not None:
        payload["reason"] = reason
    return {"iss": issuer, "aud": audience, "jti": uuid.uuid4().hex, "iat": math.floor(now),
            "sub_id": stream_subject(stream_id), "events": {STREAM_UPDATED: payload}}

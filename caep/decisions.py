"""What the engine decides, as published on `caep.decisions`."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

DECISION_NAMESPACE = uuid.UUID("5f0c2a57-6e1b-4f7e-9a43-caeb0e0d1d5e")


class Action(StrEnum):
    REVOKE_SESSION = "revoke_session"
    REVOKE_SUBJECT = "revoke_subject"
    STEP_UP = "step_up"
    SET_FLAGS = "set_flags"
    NOTIFY = "notify"


class Decision(BaseModel):
    """One decision. `decision_id` is derived from its cause, so redelivery repeats the id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision_id: str
    action: Action
    tenant: str
    subject: dict[str, Any] = Field(description="The RFC 9493 subject as received.")
    subject_key: str = Field(description="Canonical subject key; the Kafka record key.")
    session_id: str | None = None
    reasons: list[str]
    source_jti: str
    source_iss: str
    enforced: bool = True
    decided_at: float = Field(description="Unix time (seconds) the decision was made.")

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


def decision_id(*, iss: str, jti: str, action: Action, session_id: str | None) -> str:
    """Deterministic: the same event deciding the same thing always yields the same id."""
    return str(uuid.uuid5(DECISION_NAMESPACE, f"{iss}\x1f{jti}\x1f{action}\x1f{session_id or ''}"))

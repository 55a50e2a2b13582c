"""What the engine decides, as published on `caep.decisions`, and the flags on `caep.flags`."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue

DECISION_NAMESPACE = uuid.UUID("5f0c2a57-6e1b-4f7e-9a43-caeb0e0d1d5e")


class Action(StrEnum):
    REVOKE_SESSION = "revoke_session"
    REVOKE_SUBJECT = "revoke_subject"
    STEP_UP = "step_up"
    SET_FLAGS = "set_flags"
    NOTIFY = "notify"


class SignalWeight(BaseModel):
    """One signal behind a decision and how much it weighed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    weight: float
    source: str


class Decision(BaseModel):
    """One decision, explaining itself. `decision_id` is derived from its cause, so the same
    event redelivered yields the same id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision_id: str
    action: Action
    tenant: str
    subject: dict[str, Any] = Field(description="The RFC 9493 subject as received.")
    subject_key: str = Field(description="Tenant and canonical subject; the Kafka record key.")
    session_id: str | None = None
    rule: str | None = Field(default=None, description="The policy rule that fired.")
    reasons: list[str]
    source: str = Field(description="The event that caused it: event name or activity kind.")
    source_jti: str | None = Field(default=None, description="The SET's jti, for SET causes.")
    source_iss: str | None = None
    jtis: list[str] = Field(default_factory=list, description="SETs behind the signals.")
    score: float | None = None
    band: str | None = None
    signals: list[SignalWeight] = Field(default_factory=list)
    required_acr: str | None = None
    max_age: int | None = None
    flags: dict[str, JsonValue] | None = None
    established_before: float | None = Field(
        default=None, description="revoke_subject: sessions established before this are revoked.")
    enforced: bool = True
    decided_at: float = Field(description="Unix time (seconds) the decision was made.")

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


class SessionFlags(BaseModel):
    """The current feature flags of one session: the latest value on compacted `caep.flags`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str
    tenant: str
    subject_key: str
    flags: dict[str, JsonValue]
    updated_at: float

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


def decision_id(*, cause: str, action: Action, session_id: str | None, rule: str | None) -> str:
    """Deterministic: the same cause deciding the same thing always yields the same id."""
    name = f"{cause}\x1f{action}\x1f{session_id or ''}\x1f{rule or ''}"
    return str(uuid.uuid5(DECISION_NAMESPACE, name))

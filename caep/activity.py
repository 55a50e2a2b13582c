"""What relying services report about their sessions, on `caep.session-activity` (JSON).

The subject is the principal the session belongs to. An AI agent or other delegated identity
acting for a user reports under that user's subject, naming the user's session in
`parent_session_id` and itself in the RFC 8693 `act` claim, so a user and every session acting
for them live in one partition and revoking the user's session reaches them all.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, JsonValue, ValidationError

from caep.errors import InvalidRequest
from caep.subjects import describe_validation_error, parse_subject, partition_key, subject_key

ActivityKind = Literal["established", "presented", "ended"]
Text = Annotated[str, Field(min_length=1, max_length=1024)]


class Geo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class SessionActivity(BaseModel):
    """One fact about a session: it was established, presented (a request or heartbeat), ended."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ActivityKind
    tenant: Text
    subject: dict[str, JsonValue] = Field(description="RFC 9493 / SSF subject of the principal.")
    session_id: Text
    observed_at: float = Field(ge=0, description="Unix time in seconds.")
    device_id: Text | None = None
    ip: IPvAnyAddress | None = None
    user_agent: Text | None = None
    geo: Geo | None = None
    parent_session_id: Text | None = Field(
        default=None, description="The session this one acts on behalf of (delegation)."
    )
    act: dict[str, JsonValue] | None = Field(
        default=None, description="RFC 8693 actor claim of the delegated identity."
    )
    acr: Text | None = None
    amr: tuple[Text, ...] | None = None
    elevated_until: float | None = Field(
        default=None, ge=0, description="Just-in-time elevated privileges end at this time."
    )
    activity_id: Text | None = Field(
        default=None, description="Unique id; redelivered copies with the same id apply once."
    )

    @cached_property
    def key(self) -> str:
        """Tenant plus canonical subject, the partition key; parsing the subject raises
        InvalidRequest for one no RFC 9493 / SSF format describes."""
        return partition_key(self.tenant, subject_key(parse_subject(self.subject)))

    def dedupe_key(self) -> str:
        """The identity of this fact for idempotent processing."""
        if self.activity_id is not None:
            return f"activity:{self.activity_id}"
        return f"activity:{self.kind}:{self.session_id}:{self.observed_at!r}"


def parse_activity(raw: bytes | str | Any) -> SessionActivity:
    """Validate one session-activity record; any failure is InvalidRequest."""
    try:
        data = orjson.loads(raw) if isinstance(raw, bytes | str) else raw
    except orjson.JSONDecodeError:
        raise InvalidRequest("session activity is not valid UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("session activity must be a JSON object")
    try:
        activity = SessionActivity.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(f"session activity: {describe_validation_error(exc)}") from None
    except Exception as exc:  # e.g. RecursionError: the contract is InvalidRequest for any input
        raise InvalidRequest(f"session activity could not be read ({type(exc).__name__})") from None
    if not math.isfinite(activity.observed_at):
        raise InvalidRequest("session activity: observed_at must be finite")
    activity.key  # noqa: B018  parsed once here, kept for partitioning
    return activity

"""SSF 1.0 and RFC 8936 wire objects, as the edge reads and writes them.

Request bodies are parsed strictly where the spec fixes a type (a `stream_id` is a string, a
`status` one of three values) and leniently where it asks receivers' data to be ignored (SSF
§8.1.1: a Transmitter "MUST ignore any array values that it does not understand" in
`events_requested`). Members a body does not define are ignored, as JSON APIs do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool, StrictInt, StrictStr

PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"
DELIVERY_METHODS = (PUSH, POLL)
SPEC_VERSION = "1_0"
OAUTH = "urn:ietf:rfc:6749"

StreamStatus = Literal["enabled", "paused", "disabled"]
NonEmpty = Annotated[StrictStr, Field(min_length=1)]


class Delivery(BaseModel):
    """SSF §6.1: `method`, the receiver's `endpoint_url` (push) or ours (poll), and for push
    an optional `authorization_header` we send with every request."""

    model_config = ConfigDict(extra="allow", frozen=True)

    method: NonEmpty
    endpoint_url: StrictStr | None = None
    authorization_header: StrictStr | None = None


class StreamConfiguration(BaseModel):
    """SSF §8.1.1: a stream's configuration as the receiver sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream_id: str
    iss: str
    aud: str | list[str]
    delivery: Delivery
    events_supported: list[str]
    events_requested: list[str] | None = None
    events_delivered: list[str]
    description: str | None = None
    min_verification_interval: int | None = None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class StreamRecord(BaseModel):
    """What the edge keeps per stream (the value on the compacted streams topic): the
    configuration, its owner, its status and its subjects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: StreamConfiguration
    owner: str = Field(description="client_id of the receiver that created it")
    status: StreamStatus = "enabled"
    reason: str | None = None
    subjects_added: list[dict[str, JsonValue]] = Field(default_factory=list)
    subjects_removed: list[dict[str, JsonValue]] = Field(default_factory=list)
    created_at: float
    updated_at: float

    @property
    def stream_id(self) -> str:
        return self.config.stream_id


class StatusBody(BaseModel):
    """SSF §8.1.2.2 request (and §8.1.2.1 response)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    stream_id: NonEmpty
    status: StreamStatus
    reason: StrictStr | None = None


class SubjectBody(BaseModel):
    """SSF §8.1.3.2/§8.1.3.3: add or remove a subject."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    stream_id: NonEmpty
    subject: dict[str, JsonValue]
    verified: StrictBool | None = None


class VerificationBody(BaseModel):
    """SSF §8.1.4.2: request a verification event, `state` echoed back."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    stream_id: NonEmpty
    state: StrictStr | None = None


class SetError(BaseModel):
    """RFC 8936 §2.4 `setErrs` member value."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    err: StrictStr
    description: StrictStr | None = None


class PollRequest(BaseModel):
    """RFC 8936 §2.4 poll request."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    max_events: Annotated[StrictInt, Field(ge=0)] | None = Field(default=None, alias="maxEvents")
    return_immediately: StrictBool = Field(default=False, alias="returnImmediately")
    ack: list[StrictStr] = Field(default_factory=list)
    set_errs: dict[str, SetError] = Field(default_factory=dict, alias="setErrs")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


class PollResponse(BaseModel):
    """RFC 8936 §2.5 poll response: SETs by `jti`, and whether more are waiting."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    sets: dict[str, str]
    more_available: bool = Field(default=False, alias="moreAvailable")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class AuthorizationScheme(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    spec_urn: str


class TransmitterMetadata(BaseModel):
    """SSF §7.1 Transmitter Configuration Metadata, with the CAEP interoperability profile's
    required members (spec_version, delivery_methods_supported, jwks_uri, configuration,
    status and verification endpoints, authorization_schemes with OAuth 2.0)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    spec_version: str | None = None
    issuer: str
    jwks_uri: str | None = None
    delivery_methods_supported: list[str] | None = None
    configuration_endpoint: str | None = None
    status_endpoint: str | None = None
    add_subject_endpoint: str | None = None
    remove_subject_endpoint: str | None = None
    verification_endpoint: str | None = None
    critical_subject_members: list[str] | None = None
    authorization_schemes: list[AuthorizationScheme] | None = None
    default_subjects: Literal["ALL", "NONE"] | None = None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def transmitter_metadata(issuer: str) -> TransmitterMetadata:
    """The edge's own metadata; every endpoint lives under the issuer."""
    return TransmitterMetadata(
        spec_version=SPEC_VERSION,
        issuer=issuer,
        jwks_uri=f"{issuer}/ssf/jwks.json",
        delivery_methods_supported=list(DELIVERY_METHODS),
        configuration_endpoint=f"{issuer}/ssf/stream",
        status_endpoint=f"{issuer}/ssf/status",
        add_subject_endpoint=f"{issuer}/ssf/subjects:add",
        remove_subject_endpoint=f"{issuer}/ssf/subjects:remove",
        verification_endpoint=f"{issuer}/ssf/verify",
        authorization_schemes=[AuthorizationScheme(spec_urn=OAUTH)],
        default_subjects="ALL",
    )

"""The event vocabulary: one model per event type of CAEP 1.0, RISC 1.0 and SSF 1.0.

Spec decisions, so a reader need not re-derive them:

* Payload members an event does not define are kept, never interpreted: SSF §4.2.3 lets
  Transmitters add fields "anywhere in the SET, including the event object" and says Receivers
  "MUST ignore any fields they do not understand". Keeping them (``extra="allow"``) makes the
  model dump back to the wire payload.
* Enumerations are closed only where the spec says "MUST be one of": ``initiating_entity``
  (CAEP §2), ``change_type`` (§3.3), ``change_direction`` (§3.4), compliance status (§3.5), risk
  levels (§3.8) and stream ``status`` (SSF §8.1.2.1, §8.1.5). They are open strings, with the
  known values as constants and JSON Schema ``examples``, where the spec admits others:
  ``credential_type`` ("or any other credential type supported mutually", §3.3, which RISC §2.7
  reuses), ``namespace`` ("Any other value", §3.4), ``principal`` ("or any other entity", §3.8),
  and RISC §2.3 ``reason``, whose "Possible values" is not a MUST: rejecting an
  account-disabled event over a new reason would drop a security signal.
* CAEP and RISC events accept the in-event ``subject`` that SSF §3.1.1 still allows for them;
  SSF's own event types must not use it (SSF §3.1.2), so theirs is an ignored extra.
* RISC §2.7 ``reason_admin``/``reason_user`` are untyped ("The reason why ..."): both a CAEP §2
  language map and a plain string are accepted.
* An optional claim sent as JSON ``null`` is read as absent.
* :attr:`Event.subject_formats` records the spec's constraints on the SET's subject, which lives
  outside the event payload: SSF §8.1.4.1 and §8.1.5 require ``opaque``; RISC §2.5 and §2.6 say
  "email or phone", where RFC 9493 names the latter ``phone_number``, so both names are allowed.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    PlainValidator,
    StrictStr,
    StringConstraints,
    Tag,
    ValidationError,
    WithJsonSchema,
)

from caep.errors import InvalidRequest
from caep.subjects import KeepsUnknownMembers, Subject, describe_validation_error

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
SSF = "https://schemas.openid.net/secevent/ssf/event-type/"

CREDENTIAL_TYPES: tuple[str, ...] = (
    "password",
    "pin",
    "x509",
    "fido2-platform",
    "fido2-roaming",
    "fido-u2f",
    "verifiable-credential",
    "phone-voice",
    "phone-sms",
    "app",
)
"""CAEP §3.3 credential types; others "supported mutually" are allowed."""
ASSURANCE_NAMESPACES: tuple[str, ...] = (
    "RFC8176",
    "RFC6711",
    "ISO-IEC-29115",
    "NIST-IAL",
    "NIST-AAL",
    "NIST-FAL",
)
"""CAEP §3.4 namespaces; custom ones agreed between the parties are allowed."""
RISK_PRINCIPALS: tuple[str, ...] = ("USER", "DEVICE", "SESSION", "TENANT", "ORG_UNIT", "GROUP")
"""CAEP §3.8 principals; "any other entity" is allowed."""
ACCOUNT_DISABLED_REASONS: tuple[str, ...] = ("hijacking", "bulk-account")
"""RISC §2.3 "Possible values"."""

InitiatingEntity = Literal["admin", "user", "policy", "system"]
ChangeType = Literal["create", "revoke", "update", "delete"]
ChangeDirection = Literal["increase", "decrease"]
ComplianceStatus = Literal["compliant", "not-compliant"]
RiskLevel = Literal["LOW", "MEDIUM", "HIGH"]
StreamStatus = Literal["enabled", "paused", "disabled"]


def _numeric_date(value: object) -> int | float:
    """A JSON number, kept as int or float so it dumps back unchanged."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number of seconds since 1970-01-01T00:00:00Z")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


NumericDate = Annotated[
    int | float, PlainValidator(_numeric_date), WithJsonSchema({"type": "number"})
]
LanguageTag = Annotated[
    str, StringConstraints(strict=True, pattern=r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")
]
LanguageMap = Annotated[dict[LanguageTag, StrictStr], Field(min_length=1)]
"""CAEP §2: one or more BCP 47 language tag -> message pairs."""
ReasonText = Annotated[
    Annotated[LanguageMap, Tag("[map]")] | Annotated[StrictStr, Tag("[text]")],
    Discriminator(lambda v: "[map]" if isinstance(v, dict) else "[text]"),
]


class Event(KeepsUnknownMembers):
    """A typed event payload: the value of one member of a SET's ``events`` claim."""

    event_type: ClassVar[str]
    subject_formats: ClassVar[frozenset[str] | None] = None


class CaepEvent(Event):
    """CAEP §2's optional claims, common to every CAEP event."""

    subject: Subject | None = None
    event_timestamp: NumericDate | None = None
    initiating_entity: InitiatingEntity | None = None
    reason_admin: LanguageMap | None = None
    reason_user: LanguageMap | None = None


class SessionRevoked(CaepEvent):
    """CAEP §3.1: the session identified by the subject has been revoked."""

    event_type = CAEP + "session-revoked"


class TokenClaimsChange(CaepEvent):
    """CAEP §3.2: a claim in a token identified by the subject has changed."""

    event_type = CAEP + "token-claims-change"
    claims: dict[str, JsonValue] = Field(min_length=1)


class CredentialChange(CaepEvent):
    """CAEP §3.3: a credential was created, changed, revoked or deleted."""

    event_type = CAEP + "credential-change"
    credential_type: StrictStr = Field(examples=list(CREDENTIAL_TYPES))
    change_type: ChangeType
    friendly_name: StrictStr | None = None
    x509_issuer: StrictStr | None = None
    x509_serial: StrictStr | None = None
    fido2_aaguid: StrictStr | None = None


class AssuranceLevelChange(CaepEvent):
    """CAEP §3.4: the authentication assurance level changed since login."""

    event_type = CAEP + "assurance-level-change"
    namespace: StrictStr = Field(examples=list(ASSURANCE_NAMESPACES))
    current_level: StrictStr
    previous_level: StrictStr | None = None
    change_direction: ChangeDirection | None = None


class DeviceComplianceChange(CaepEvent):
    """CAEP §3.5: a device's compliance status changed."""

    event_type = CAEP + "device-compliance-change"
    previous_status: ComplianceStatus
    current_status: ComplianceStatus


class SessionEstablished(CaepEvent):
    """CAEP §3.6: the Transmitter established a new session for the subject."""

    event_type = CAEP + "session-established"
    fp_ua: StrictStr | None = None
    acr: StrictStr | None = None
    amr: tuple[StrictStr, ...] | None = None
    ext_id: StrictStr | None = None


class SessionPresented(CaepEvent):
    """CAEP §3.7: the Transmitter observed the session at ``event_timestamp``."""

    event_type = CAEP + "session-presented"
    fp_ua: StrictStr | None = None
    ext_id: StrictStr | None = None


class RiskLevelChange(CaepEvent):
    """CAEP §3.8: the subject's assessed risk level changed."""

    event_type = CAEP + "risk-level-change"
    risk_reason: StrictStr | None = None
    principal: StrictStr = Field(examples=list(RISK_PRINCIPALS))
    current_level: RiskLevel
    previous_level: RiskLevel | None = None


class RiscEvent(Event):
    """A RISC 1.0 event; RISC defines no claims common to its events."""

    subject: Subject | None = None


class AccountCredentialChangeRequired(RiscEvent):
    """RISC §2.1: the account was required to change a credential."""

    event_type = RISC + "account-credential-change-required"


class AccountPurged(RiscEvent):
    """RISC §2.2: the account has been permanently deleted."""

    event_type = RISC + "account-purged"


class AccountDisabled(RiscEvent):
    """RISC §2.3: the account has been disabled, possibly for a stated reason."""

    event_type = RISC + "account-disabled"
    reason: StrictStr | None = Field(default=None, examples=list(ACCOUNT_DISABLED_REASONS))


class AccountEnabled(RiscEvent):
    """RISC §2.4: the account has been enabled."""

    event_type = RISC + "account-enabled"


class IdentifierChanged(RiscEvent):
    """RISC §2.5: the subject's email or phone identifier (the old value) has changed."""

    event_type = RISC + "identifier-changed"
    subject_formats = frozenset({"email", "phone_number", "phone"})
    new_value: StrictStr | None = Field(default=None, alias="new-value")


class IdentifierRecycled(RiscEvent):
    """RISC §2.6: the subject's email or phone identifier now belongs to a new user."""

    event_type = RISC + "identifier-recycled"
    subject_formats = frozenset({"email", "phone_number", "phone"})


class CredentialCompromise(RiscEvent):
    """RISC §2.7: a credential of the subject was found to be compromised."""

    event_type = RISC + "credential-compromise"
    credential_type: StrictStr = Field(examples=list(CREDENTIAL_TYPES))
    event_timestamp: NumericDate | None = None
    reason_admin: ReasonText | None = None
    reason_user: ReasonText | None = None


class OptIn(RiscEvent):
    """RISC §2.8.1: the account opted in to RISC event exchange."""

    event_type = RISC + "opt-in"


class OptOutInitiated(RiscEvent):
    """RISC §2.8.2: the account asked to opt out; events still flow for a while."""

    event_type = RISC + "opt-out-initiated"


class OptOutCancelled(RiscEvent):
    """RISC §2.8.3: the account cancelled its opt-out and is opted in again."""

    event_type = RISC + "opt-out-cancelled"


class OptOutEffective(RiscEvent):
    """RISC §2.8.4: the account is now opted out of RISC event exchange."""

    event_type = RISC + "opt-out-effective"


class RecoveryActivated(RiscEvent):
    """RISC §2.9: the account activated a recovery flow."""

    event_type = RISC + "recovery-activated"


class RecoveryInformationChanged(RiscEvent):
    """RISC §2.10: the account changed some of its recovery information."""

    event_type = RISC + "recovery-information-changed"


class SessionsRevoked(RiscEvent):
    """RISC §2.11, deprecated in favour of CAEP session-revoked: all sessions were revoked."""

    event_type = RISC + "sessions-revoked"


class Verification(Event):
    """SSF §8.1.4.1: confirms end-to-end delivery; ``state`` echoes the Receiver's request."""

    event_type = SSF + "verification"
    subject_formats = frozenset({"opaque"})
    state: StrictStr | None = None


class StreamUpdated(Event):
    """SSF §8.1.5: the Transmitter changed the stream's status on its own."""

    event_type = SSF + "stream-updated"
    subject_formats = frozenset({"opaque"})
    status: StreamStatus
    reason: StrictStr | None = None


EVENT_MODELS: dict[str, type[Event]] = {
    model.event_type: model
    for model in (
        SessionRevoked,
        TokenClaimsChange,
        CredentialChange,
        AssuranceLevelChange,
        DeviceComplianceChange,
        SessionEstablished,
        SessionPresented,
        RiskLevelChange,
        AccountCredentialChangeRequired,
        AccountPurged,
        AccountDisabled,
        AccountEnabled,
        IdentifierChanged,
        IdentifierRecycled,
        CredentialCompromise,
        OptIn,
        OptOutInitiated,
        OptOutCancelled,
        OptOutEffective,
        RecoveryActivated,
        RecoveryInformationChanged,
        SessionsRevoked,
        Verification,
        StreamUpdated,
    )
}


class UnrecognizedEvent(BaseModel):
    """An event type this engine does not define, kept verbatim and never guessed at."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: str
    payload: dict[str, JsonValue]


def parse_event(event_type: str, payload: object) -> Event | UnrecognizedEvent:
    """The typed model for one ``events`` member; any failure is InvalidRequest."""
    if not isinstance(event_type, str):
        raise InvalidRequest(f"an event type must be a string URI, not {type(event_type).__name__}")
    if not isinstance(payload, dict):
        raise InvalidRequest(
            f"event {event_type}: the payload must be a JSON object (RFC 8417 §2.2), "
            f"not {type(payload).__name__}"
        )
    model = EVENT_MODELS.get(event_type)
    try:
        if model is None:
            return UnrecognizedEvent(event_type=event_type, payload=payload)
        return model.model_validate(payload)
    except ValidationError as exc:
        problem = describe_validation_error(exc)
    except Exception as exc:  # e.g. RecursionError: the contract is InvalidRequest for any input
        problem = f"could not be read ({type(exc).__name__})"
    if model is None:
        raise InvalidRequest(f"event {event_type}: payload is not JSON data: {problem}")
    raise InvalidRequest(f"event {event_type}: {problem}")

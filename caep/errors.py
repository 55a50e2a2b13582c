"""One error hierarchy for the whole engine.

Every rejection of input carries an RFC 8935 error code, so the edges (HTTP push, poll, the
dead-letter topic, the CLI) can report it without translating exception types one by one.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """The error codes of RFC 8935 section 2.4 (registered in the IANA SET errors registry)."""

    INVALID_REQUEST = "invalid_request"
    INVALID_KEY = "invalid_key"
    INVALID_ISSUER = "invalid_issuer"
    INVALID_AUDIENCE = "invalid_audience"
    AUTHENTICATION_FAILED = "authentication_failed"
    ACCESS_DENIED = "access_denied"


class CaepError(Exception):
    """Base of every error the engine raises on purpose."""

    code: ErrorCode = ErrorCode.INVALID_REQUEST

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    def to_dict(self) -> dict[str, str]:
        """The RFC 8935 error body: ``{"err": CODE, "description": ...}``."""
        return {"err": self.code.value, "description": self.description}


class ConfigError(CaepError):
    """A configuration file or setting is unusable; raised at start-up, never per event."""


class SetError(CaepError):
    """A Security Event Token was rejected. Subclasses fix the RFC 8935 code."""


class InvalidRequest(SetError):
    """Not a well-formed SET, or its event payload does not conform to the event's definition."""

    code = ErrorCode.INVALID_REQUEST


class InvalidKey(SetError):
    """The signing key is unknown or unacceptable, or the signature does not verify."""

    code = ErrorCode.INVALID_KEY


class InvalidIssuer(SetError):
    """The SET's issuer is not one the trust configuration accepts."""

    code = ErrorCode.INVALID_ISSUER


class InvalidAudience(SetError):
    """The SET's audience is not the one configured for its issuer."""

    code = ErrorCode.INVALID_AUDIENCE


class ForeignTenant(SetError):
    """The SET's issuer is bound to one tenant and the SET names another."""

    code = ErrorCode.ACCESS_DENIED


class AuthenticationFailed(CaepError):
    """The transmitter could not be authenticated (e.g. a bad bearer token at the push edge)."""

    code = ErrorCode.AUTHENTICATION_FAILED


class AccessDenied(CaepError):
    """The transmitter is authenticated but not allowed to send this SET."""

    code = ErrorCode.ACCESS_DENIED


class BrokerError(CaepError):
    """The Kafka-protocol broker could not be started or reached."""

"""Subject identifiers: RFC 9493 formats, the SSF 1.0 additional formats and complex subjects.

Spec decisions, so a reader need not re-derive them:

* Members of a simple identifier are closed: RFC 9493 §3 says a Subject Identifier "MUST NOT
  contain any members prohibited or not described by its Identifier Format", so the RFC 9493 and
  SSF §3.5 formats are ``extra="forbid"``. Required members "MUST NOT be null or empty".
* Unknown formats are *kept*, as :class:`UnknownFormatSubject`. RFC 9493 §3 allows
  Collision-Resistant Names as formats and SSF §3.4 allows "a proprietary subject identifier
  format that is agreed to between parties" (SSF §5 even shows ``catalog_item``). Rejecting them
  would reject conforming SETs; their members are kept verbatim and never interpreted.
* Complex subjects (SSF §3.3) have the optional members user, device, session, application,
  tenant, org_unit and group, and "Additional Subject Member names MAY be used": extra members
  are kept, but each must itself be a subject identifier. At least one member is required
  ("one or more Simple Subject Members"). A member may be any non-complex identifier, including
  ``aliases`` (an RFC 9493 identifier); ``aliases`` may not nest (RFC 9493 §3.2.8).
* An explicit ``null`` for an optional complex member is read as absent.
* ``phone_number`` must be E.164 with its ``+`` prefix once the visual separators
  space, ``-``, ``.``, ``(`` and ``)`` are removed: SSF §5 itself prints ``+1 206 555 0123``.
  The wire value is kept; only :func:`subject_key` drops the separators.

:func:`subject_key` is the canonical identity string used as the Kafka partition key:

* A simple identifier's key is its canonical JSON (keys sorted, no whitespace) after this
  normalisation, and nothing else: email lowercased as a whole and NFC-normalised (the domain
  is case-insensitive by RFC 1034; RFC 9493 §3.2.2.1 notes most providers also fold the local
  part's case; dots and ``+tags`` are provider-specific and left alone); the scheme of ``uri``,
  ``account`` and ``did`` values and the host of an ``acct`` URI lowercased; phone separators
  removed; IP addresses in compressed form, sorted and de-duplicated; ``aliases`` identifiers
  sorted and de-duplicated. Issuers, ``sub``, opaque ids and unknown formats are compared
  exactly, as SSF §8.1.3.1 matches simple subjects only when "exactly identical".
* A complex subject's key is that of its *principal* member: ``user`` if present, else the first
  present of device, session, application, org_unit, group (SSF §3.3 order), else the first
  extra member by name. With a ``tenant`` the key is the canonical JSON of
  ``{"format": "complex", "tenant": ..., <principal name>: ...}``; without one it is the
  principal's own key, so ``{"format":"complex","user":U}`` and ``U`` share a partition. A
  tenant-only subject keys on the tenant. Other members (session, device, ...) never change a
  user-level key, so all sessions of one user land in one partition.
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails

from caep.errors import InvalidRequest

NonEmptyStr = Annotated[str, StringConstraints(strict=True, min_length=1)]


def _validated(check: Callable[[str], bool], requirement: str) -> AfterValidator:
    def validate(value: str) -> str:
        if not check(value):
            raise ValueError(requirement)
        return value

    return AfterValidator(validate)


def _is_email(value: str) -> bool:
    local, at, domain = value.rpartition("@")
    return bool(at and local and domain) and not any(ch.isspace() for ch in domain)


_PHONE_SEPARATORS = str.maketrans("", "", " -.()")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_ACCT_URI = re.compile(r"(?i:acct):[^@\s/?#]+@[^@\s/?#]+")
_DID_URL = re.compile(r"(?i:did):[a-z0-9]+:\S+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


EmailAddress = Annotated[
    NonEmptyStr,
    _validated(_is_email, "must be an addr-spec, like user@example.com (RFC 9493 §3.2.2)"),
]
PhoneNumber = Annotated[
    NonEmptyStr,
    _validated(
        lambda v: _E164.fullmatch(v.translate(_PHONE_SEPARATORS)) is not None,
        "must be E.164 with its international prefix, like +12065550100 (RFC 9493 §3.2.5)",
    ),
]
AcctUri = Annotated[
    NonEmptyStr,
    _validated(
        lambda v: _ACCT_URI.fullmatch(v) is not None,
        'must be an "acct" URI like acct:user@host (RFC 9493 §3.2.1, RFC 7565)',
    ),
]
DidUrl = Annotated[
    NonEmptyStr,
    _validated(
        lambda v: _DID_URL.fullmatch(v) is not None,
        "must be a DID URL like did:example:123456 (RFC 9493 §3.2.6)",
    ),
]
AbsoluteUri = Annotated[
    NonEmptyStr,
    _validated(
        lambda v: _URI.fullmatch(v) is not None,
        "must be a URI with a scheme (RFC 9493 §3.2.7, RFC 3986)",
    ),
]
IpAddress = Annotated[
    NonEmptyStr, _validated(_is_ip, "must be an IPv4 or IPv6 address (SSF §3.5.3, RFC 4001)")
]


def _lower_scheme(uri: str) -> str:
    scheme, _, rest = uri.partition(":")
    return f"{scheme.lower()}:{rest}"


class _Identifier(BaseModel):
    """A simple subject identifier whose members RFC 9493 §3 closes to those its format defines."""

    model_config = ConfigDict(frozen=True, extra="forbid", serialize_by_alias=True)

    def canonical(self) -> dict[str, JsonValue]:
        """The wire form with the normalisation :func:`subject_key` documents applied."""
        return self.model_dump(mode="json", exclude_none=True)


class AccountSubject(_Identifier):
    """RFC 9493 §3.2.1: an account at a service provider, as an ``acct`` URI."""

    format: Literal["account"]
    uri: AcctUri

    def canonical(self) -> dict[str, JsonValue]:
        """``acct`` scheme and host are case-insensitive; the userpart is kept."""
        userpart, _, host = self.uri[len("acct:") :].rpartition("@")
        return {"format": self.format, "uri": f"acct:{userpart}@{host.lower()}"}


class EmailSubject(_Identifier):
    """RFC 9493 §3.2.2: an email address (RFC 5322 addr-spec)."""

    format: Literal["email"]
    email: EmailAddress

    def canonical(self) -> dict[str, JsonValue]:
        """Case-folded (lowercase) and NFC; see the module docstring for why only that."""
        return {"format": self.format, "email": unicodedata.normalize("NFC", self.email).lower()}


class IssSubSubject(_Identifier):
    """RFC 9493 §3.2.3: an ``iss``/``sub`` pair, as in an OpenID Connect ID Token."""

    format: Literal["iss_sub"]
    iss: NonEmptyStr
    sub: NonEmptyStr


class OpaqueSubject(_Identifier):
    """RFC 9493 §3.2.4: a string with no semantics beyond identifying the subject."""

    format: Literal["opaque"]
    id: NonEmptyStr


class PhoneNumberSubject(_Identifier):
    """RFC 9493 §3.2.5: a full E.164 telephone number."""

    format: Literal["phone_number"]
    phone_number: PhoneNumber

    def canonical(self) -> dict[str, JsonValue]:
        """Visual separators removed: ``+1 206 555 0123`` is ``+12065550123``."""
        return {
            "format": self.format,
            "phone_number": self.phone_number.translate(_PHONE_SEPARATORS),
        }


class DidSubject(_Identifier):
    """RFC 9493 §3.2.6: a Decentralized Identifier URL (possibly a bare DID)."""

    format: Literal["did"]
    url: DidUrl

    def canonical(self) -> dict[str, JsonValue]:
        """Only the ``did`` scheme is folded; method-specific ids are case-sensitive."""
        return {"format": self.format, "url": _lower_scheme(self.url)}


class UriSubject(_Identifier):
    """RFC 9493 §3.2.7: any URI; no assumption about scheme or reachability."""

    format: Literal["uri"]
    uri: AbsoluteUri

    def canonical(self) -> dict[str, JsonValue]:
        """Only the scheme is folded (RFC 3986 §3.1); the rest is scheme-specific."""
        return {"format": self.format, "uri": _lower_scheme(self.uri)}


class JwtIdSubject(_Identifier):
    """SSF §3.5.1: a JWT, by its ``iss`` and ``jti`` claims."""

    format: Literal["jwt_id"]
    iss: NonEmptyStr
    jti: NonEmptyStr


class SamlAssertionIdSubject(_Identifier):
    """SSF §3.5.2: a SAML 2.0 assertion, by its Issuer and ID."""

    format: Literal["saml_assertion_id"]
    issuer: NonEmptyStr
    assertion_id: NonEmptyStr


class IpAddressesSubject(_Identifier):
    """SSF §3.5.3: the IP addresses of the subject as observed by the Transmitter."""

    format: Literal["ip-addresses"]
    ip_addresses: tuple[IpAddress, ...] = Field(alias="ip-addresses", min_length=1)

    def canonical(self) -> dict[str, JsonValue]:
        """Compressed form, sorted, de-duplicated: the array is a set of observations."""
        unique = {str(ipaddress.ip_address(ip)) for ip in self.ip_addresses}
        ips: list[JsonValue] = [ip for ip in sorted(unique)]
        return {"format": self.format, "ip-addresses": ips}


KNOWN_FORMATS: frozenset[str] = frozenset(
    {
        "account",
        "email",
        "iss_sub",
        "opaque",
        "phone_number",
        "did",
        "uri",
        "aliases",
        "jwt_id",
        "saml_assertion_id",
        "ip-addresses",
        "complex",
    }
)


def _not_a_known_format(value: str) -> str:
    if value in KNOWN_FORMATS:
        raise ValueError(f"format {value!r} is defined; it cannot be an unknown format")
    return value


class KeepsUnknownMembers(BaseModel):
    """Members the model does not define are kept as JSON and dumped back, ``null`` ones too."""

    model_config = ConfigDict(frozen=True, extra="allow", serialize_by_alias=True)
    __pydantic_extra__: dict[str, JsonValue] = Field(init=False)

    @model_serializer(mode="wrap")
    def _dump_null_members(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if info.exclude_none and info.exclude is None and info.include is None:
            for name, value in (self.__pydantic_extra__ or {}).items():
                if value is None:
                    data.setdefault(name, None)
        return data


class UnknownFormatSubject(KeepsUnknownMembers):
    """A format not defined here (RFC 9493 §3, SSF §3.4): kept verbatim, never guessed at."""

    format: Annotated[
        NonEmptyStr,
        AfterValidator(_not_a_known_format),
        Field(json_schema_extra={"not": {"enum": sorted(KNOWN_FORMATS)}}),
    ]

    def canonical(self) -> dict[str, JsonValue]:
        """Verbatim: the meaning of a proprietary format's members is unknown here."""
        return self.model_dump(mode="json")


_UNKNOWN_TAG = "[*]"


def _format_tag(value: Any) -> str | None:
    """Route on ``format`` by dict lookup; unknown names go to :class:`UnknownFormatSubject`."""
    fmt = value.get("format") if isinstance(value, dict) else getattr(value, "format", None)
    if not isinstance(fmt, str):
        return None
    return f"[{fmt}]" if fmt in KNOWN_FORMATS else _UNKNOWN_TAG


def _dispatch_on_format(union: Any) -> Any:
    """The pydantic type of ``union``: one validator chosen by ``format``, not tried in turn."""
    choices = []
    for model in get_args(union):
        literal = model.model_fields["format"].annotation
        tag = f"[{get_args(literal)[0]}]" if get_origin(literal) is Literal else _UNKNOWN_TAG
        choices.append(Annotated[model, Tag(tag)])
    return Annotated[Union[tuple(choices)], Discriminator(_format_tag)]  # noqa: UP007


_SimpleIdentifiers: TypeAlias = (
    AccountSubject
    | EmailSubject
    | IssSubSubject
    | OpaqueSubject
    | PhoneNumberSubject
    | DidSubject
    | UriSubject
    | JwtIdSubject
    | SamlAssertionIdSubject
    | IpAddressesSubject
    | UnknownFormatSubject
)
if TYPE_CHECKING:
    SimpleIdentifier: TypeAlias = _SimpleIdentifiers
else:
    SimpleIdentifier = _dispatch_on_format(_SimpleIdentifiers)
"""Any identifier except ``aliases`` and ``complex``: what an ``aliases`` list may hold."""


def _canonical_json(value: JsonValue) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class AliasesSubject(BaseModel):
    """RFC 9493 §3.2.8: several identifiers of the same entity; aliases do not nest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["aliases"]
    identifiers: tuple[SimpleIdentifier, ...] = Field(min_length=1)

    def canonical(self) -> dict[str, JsonValue]:
        """Order and exact duplicates carry no meaning, so they are dropped."""
        unique = {_canonical_json(i.canonical()): i.canonical() for i in self.identifiers}
        return {"format": self.format, "identifiers": [unique[k] for k in sorted(unique)]}


_SimpleSubjects: TypeAlias = _SimpleIdentifiers | AliasesSubject
if TYPE_CHECKING:
    SimpleSubject: TypeAlias = _SimpleSubjects
else:
    SimpleSubject = _dispatch_on_format(_SimpleSubjects)
"""Any identifier except ``complex``: what a complex subject's member may hold."""

COMPLEX_MEMBERS: tuple[str, ...] = (
    "user",
    "device",
    "session",
    "application",
    "tenant",
    "org_unit",
    "group",
)


class ComplexSubject(BaseModel):
    """SSF §3.3: attributes of one Subject Principal, each a simple subject identifier."""

    model_config = ConfigDict(frozen=True, extra="allow")
    __pydantic_extra__: dict[str, SimpleSubject] = Field(init=False)

    format: Literal["complex"]
    user: SimpleSubject | None = None
    device: SimpleSubject | None = None
    session: SimpleSubject | None = None
    application: SimpleSubject | None = None
    tenant: SimpleSubject | None = None
    org_unit: SimpleSubject | None = None
    group: SimpleSubject | None = None

    @model_validator(mode="after")
    def _has_a_member(self) -> ComplexSubject:
        if not self.members:
            raise ValueError("a complex subject needs at least one member (SSF §3.3)")
        return self

    @property
    def members(self) -> dict[str, SimpleSubject]:
        """Every present member, the SSF §3.3 ones first, then additional ones by name."""
        named = {m: getattr(self, m) for m in COMPLEX_MEMBERS if getattr(self, m) is not None}
        extra = self.__pydantic_extra__ or {}
        return named | {name: extra[name] for name in sorted(extra)}

    def principal(self) -> tuple[str, SimpleSubject] | None:
        """The member that names the principal for keying; ``None`` for a tenant-only subject."""
        return next(((n, m) for n, m in self.members.items() if n != "tenant"), None)


_Subjects: TypeAlias = _SimpleSubjects | ComplexSubject
if TYPE_CHECKING:
    Subject: TypeAlias = _Subjects
else:
    Subject = _dispatch_on_format(_Subjects)
"""Any subject: the type of ``sub_id`` and of the legacy in-event ``subject``."""

SUBJECT_ADAPTER: TypeAdapter[Subject] = TypeAdapter(Subject)


def _render_loc(loc: tuple[int | str, ...], *, depth: int = 8) -> str:
    """``('user', '[email]', 'email')`` -> ``user.email``; union tags say nothing new."""
    out = ""
    for part in loc[:depth]:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not (part.startswith("[") and part.endswith("]")):
            out += f".{part}" if out else part
    return out + ("..." if len(loc) > depth else "")


def _error_message(error: ErrorDetails) -> str:
    ctx = error.get("ctx") or {}
    if error["type"] == "union_tag_not_found":
        return 'needs to be a JSON object with a string "format" member'
    if error["type"] == "union_tag_invalid":
        tag = str(ctx.get("tag", "")).strip("[]")
        return f"subject format {tag!r} is not allowed here (RFC 9493 §3.2.8, SSF §3.3)"
    if error["type"] == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if error["type"] == "too_short":
        return f"needs at least {ctx.get('min_length', 1)} member(s)"
    return error["msg"]


def _is_consequence(error: ErrorDetails, others: list[ErrorDetails]) -> bool:
    """A list too short only because its items failed is not a separate problem."""
    loc = error["loc"]
    return error["type"] == "too_short" and any(
        len(o["loc"]) > len(loc) and o["loc"][: len(loc)] == loc for o in others
    )


_MAX_DESCRIPTION = 500


def describe_validation_error(error: ValidationError, *, limit: int = 3) -> str:
    """A one-line account of what is wrong and where, without echoing the (possibly PII) input."""
    details = error.errors(include_url=False, include_input=False)
    details = [e for e in details if not _is_consequence(e, details)]
    parts = []
    for e in details[:limit]:
        where = _render_loc(e["loc"])
        parts.append(f"{where}: {_error_message(e)}" if where else _error_message(e))
    if len(details) > limit:
        parts.append(f"and {len(details) - limit} more")
    return "; ".join(parts)[:_MAX_DESCRIPTION]


def parse_subject(obj: object) -> Subject:
    """Validate a decoded ``sub_id`` or legacy ``subject``; any failure is InvalidRequest."""
    try:
        return SUBJECT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        description = describe_validation_error(exc)
    except Exception as exc:  # e.g. RecursionError: the contract is InvalidRequest for any input
        description = f"could not be read ({type(exc).__name__})"
    if type(obj) is dict and "format" not in obj and "subject_type" in obj:
        description += ' (the deprecated "subject_type" is not "format", RISC 1.0 §3.1)'
    raise InvalidRequest(f"invalid subject identifier: {description}")


def _key_of_simple(subject: SimpleSubject) -> str:
    return _canonical_json(subject.canonical())


def partition_key(tenant: str, subject: str) -> str:
    """Tenant plus canonical subject: all of one subject's records land in one partition."""
    return f"{tenant}|{subject}"


def subject_key(subject: Subject) -> str:
    """The canonical identity string used to partition events; see the module docstring."""
    if not isinstance(subject, ComplexSubject):
        return _key_of_simple(subject)
    principal = subject.principal()
    if subject.tenant is None and principal is not None:
        return _key_of_simple(principal[1])
    keyed: dict[str, JsonValue] = {"format": "complex"}
    if subject.tenant is not None:
        keyed["tenant"] = subject.tenant.canonical()
    if principal is not None:
        keyed[principal[0]] = principal[1].canonical()
    return _canonical_json(keyed)


def _member_ref(subject: Subject, member: str) -> str | None:
    if not isinstance(subject, ComplexSubject):
        return None
    value = subject.members.get(member)
    if value is None:
        return None
    if isinstance(value, OpaqueSubject):
        return value.id
    return _key_of_simple(value)


def session_id_of(subject: Subject) -> str | None:
    """The ``session`` member of a complex subject: its ``id`` if opaque, else its key.

    A simple ``sub_id`` may well be a session (CAEP §3.1's first example), but nothing in the
    identifier says so; interpreting it is up to the event type, so this returns None for it.
    """
    return _member_ref(subject, "session")


def tenant_of(subject: Subject) -> str | None:
    """The ``tenant`` member of a complex subject: its ``id`` if opaque, else its key."""
    return _member_ref(subject, "tenant")


def device_of(subject: Subject) -> str | None:
    """The ``device`` member of a complex subject: its ``id`` if opaque, else its key."""
    return _member_ref(subject, "device")

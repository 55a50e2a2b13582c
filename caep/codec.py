"""Where a Security Event Token is verified (and signed).

Strict by construction, in the order that is cheapest for an attacker's input: size and shape,
header, claims that pick the issuer and key, then the signature, then the remaining claims. Each
part is decoded once. Every rejection is a `caep.errors.SetError` with its RFC 8935 code; no input
raises anything else.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
import pybase64

from caep.errors import (
    ForeignTenant,
    InvalidAudience,
    InvalidIssuer,
    InvalidKey,
    InvalidRequest,
    SetError,
)
from caep.events import Event, UnrecognizedEvent, parse_event
from caep.subjects import Subject, parse_subject, tenant_of
from caep.trust import FORBIDDEN_ALGORITHMS, TrustedIssuer, TrustStore, VerificationKey

SET_TYPE = "secevent+jwt"
DEFAULT_MAX_BYTES = 65536
DEFAULT_IAT_SKEW = 300
UNDERSTOOD_CRITICAL_HEADERS: frozenset[str] = frozenset()
HEADER_CACHE_SIZE = 256

_B64URL_TO_B64 = bytes.maketrans(b"-_+/=", b"+/!!!")
_ESCAPED_COLON = b"\\u003"
_PADDING = (b"", b"===", b"==", b"=")
_SHOWN = 80


def _show(value: Any) -> str:
    """An attacker-controlled value, quoted and cut short, for an error description."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "...(cut)"


class UnknownKey(InvalidKey):
    """No key of a trusted issuer matches the token's `kid`: the issuer may have rotated keys."""

    def __init__(self, description: str, issuer: TrustedIssuer) -> None:
        super().__init__(description)
        self.issuer = issuer


@dataclass(frozen=True, slots=True)
class SubjectEvent:
    """One event of a SET with the subject it is about, both typed."""

    event_type: str
    event: Event | UnrecognizedEvent
    subject: Subject
    subject_raw: dict[str, Any]

    @property
    def recognized(self) -> bool:
        return isinstance(self.event, Event)


@dataclass(frozen=True, slots=True)
class VerifiedSet:
    """A SET whose signature, issuer, audience, structure and event payloads are all checked."""

    header: dict[str, Any]
    claims: dict[str, Any]
    issuer: TrustedIssuer
    items: tuple[SubjectEvent, ...]

    @property
    def iss(self) -> str:
        return str(self.claims["iss"])

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])

    @property
    def iat(self) -> float:
        return float(self.claims["iat"])

    @property
    def events(self) -> dict[str, dict[str, Any]]:
        events: dict[str, dict[str, Any]] = self.claims["events"]
        return events

    def tenant_for(self, item: SubjectEvent) -> str:
        """The subject's `tenant` member if it has one (for an issuer bound to a tenant,
        `verify` refused any other), else the issuer's configured tenant."""
        return tenant_of(item.subject) or self.issuer.config.tenant_id


def _b64decode(segment: bytes, what: str) -> bytes:
    """Strict base64url (RFC 7515 section 2): its alphabet only, no padding, no `+` or `/`.

    One translation maps base64url onto base64 and every character outside base64url (`+`,
    `/`, `=`) onto one that validating decoding refuses, so the alphabet check costs no extra
    pass; pybase64's SIMD decoder then does in well under a microsecond what `binascii` takes
    three for.
    """
    if not segment:
        raise InvalidRequest(f"{what} is empty")
    data = segment.translate(_B64URL_TO_B64)
    try:
        return pybase64.b64decode(data + _PADDING[len(data) & 3], validate=True)
    except ValueError:  # binascii.Error
        raise InvalidRequest(f"{what} is not valid unpadded base64url") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise InvalidRequest(f"duplicate JSON member {_show(duplicate)}")
    return result


def _parse_json_object(raw: bytes, what: str) -> dict[str, Any]:
    """Parse once with orjson (strict RFC 8259: no NaN, no lone surrogates, UTF-8 only) and
    refuse duplicate members, which orjson alone would resolve silently to the last one.

    Every `:` byte of valid JSON is either a member's name separator or a literal colon inside
    a string. orjson's re-serialisation of what it parsed keeps every literal colon and writes
    one separator per member it kept, so it holds fewer colons than the input exactly when a
    member was dropped as a duplicate. An escaped colon (`\\u003a`) would break the count;
    such input, and nesting orjson cannot write back, is re-read once with a duplicate check.
    Compact JSON without escapes (what most signers write) is written back byte for byte,
    which proves it has no duplicate without counting.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(f"{what} is not valid UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} is not a JSON object")
    try:
        written = orjson.dumps(value)
    except orjson.JSONEncodeError:  # nesting orjson can read (1024) but not write (255)
        written = b""
    if written != raw and (
        not written
        or (b"\\" in raw and _ESCAPED_COLON in raw)
        or written.count(b":") != raw.count(b":")
    ):
        try:
            json.loads(raw, object_pairs_hook=_unique_keys)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{what}: {exc.description}") from None
        except (ValueError, RecursionError):
            raise InvalidRequest(f"{what} is not valid JSON") from None
    return value


@dataclass(slots=True)  # not frozen: a frozen init costs a microsecond per token
class _Unsigned:
    """A SET that passed every check up to its signature, and what checking that needs."""

    header: dict[str, Any]
    claims: dict[str, Any]
    issuer: TrustedIssuer
    keys: tuple[VerificationKey, ...]
    signing_input: bytes
    signature: bytes

    def signed(self) -> bool:
        """Whether one of the candidate keys verifies the signature."""
        for key in self.keys:  # noqa: SIM110 (a loop: no generator per token)
            if key.check(self.signing_input, self.signature):
                return True
        return False


class SetVerifier:
    """Verifies compact SETs against a trust store. Thread-safe and reusable."""

    def __init__(
        self,
        trust: TrustStore,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        iat_skew: float = DEFAULT_IAT_SKEW,
    ) -> None:
        self.trust = trust
        self.max_bytes = max_bytes
        self.iat_skew = iat_skew
        self._headers: dict[bytes, tuple[dict[str, Any], str, str | None]] = {}

    def verify(self, token: str | bytes, *, now: float | None = None) -> VerifiedSet:
        """Every check: the SET itself (`verify_envelope`), then each event and its subject
        against their models. What every entry point calls for one SET."""
        return self._typed(*self.verify_envelope(token, now=now))

    def verify_all(
        self, tokens: Sequence[str | bytes], *, now: float | None = None
    ) -> list[VerifiedSet | SetError]:
        """`verify` for a batch: per token, its VerifiedSet or the SetError that refused it.

        Each stage runs over the whole batch before the next one, so the public-key operations
        run back to back: interleaved with the Python checks they cost about a fifth more
        (the benchmark's batch row shows it)."""
        results: list[VerifiedSet | SetError] = []
        for outcome in self.verify_envelopes(tokens, now=now):
            if isinstance(outcome, SetError):
                results.append(outcome)
                continue
            try:
                results.append(self._typed(*outcome))
            except SetError as error:
                results.append(error)
        return results

    def verify_envelope(
        self, token: str | bytes, *, now: float | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], TrustedIssuer]:
        """The SET-level checks (JOSE header, signature, issuer, audience, claims), without
        typing the event payloads: (header, claims, issuer)."""
        unsigned = self._before_signature(token)
        if not unsigned.signed():
            raise InvalidKey("signature does not verify")
        return self._after_signature(unsigned, time.time() if now is None else now)

    def verify_envelopes(
        self, tokens: Sequence[str | bytes], *, now: float | None = None
    ) -> list[tuple[dict[str, Any], dict[str, Any], TrustedIssuer] | SetError]:
        """`verify_envelope` for a batch, stage by stage (see `verify_all`)."""
        staged: list[_Unsigned | SetError] = []
        for token in tokens:
            try:
                staged.append(self._before_signature(token))
            except SetError as error:
                staged.append(error)
        signed = [not isinstance(item, SetError) and item.signed() for item in staged]
        when = time.time() if now is None else now
        results: list[tuple[dict[str, Any], dict[str, Any], TrustedIssuer] | SetError] = []
        for item, holds in zip(staged, signed, strict=True):
            if isinstance(item, SetError):
                results.append(item)
            elif not holds:
                results.append(InvalidKey("signature does not verify"))
            else:
                try:
                    results.append(self._after_signature(item, when))
                except SetError as error:
                    results.append(error)
        return results

    def _typed(
        self, header: dict[str, Any], claims: dict[str, Any], issuer: TrustedIssuer
    ) -> VerifiedSet:
        items = self._typed_events(claims)
        bound = issuer.config.tenant
        if bound is not None:  # an issuer bound to a tenant speaks for that tenant only
            for item in items:
                named = tenant_of(item.subject)
                if named is not None and named != bound:
                    raise ForeignTenant(
                        f"issuer {issuer.config.iss!r} may send events for tenant {bound!r} "
                        f"only; the subject names tenant {_show(named)}")
        return VerifiedSet(header=header, claims=claims, issuer=issuer, items=items)

    def _before_signature(self, token: str | bytes) -> _Unsigned:
        """Every check an attacker's bytes meet before a public-key operation is spent."""
        if isinstance(token, str):
            if len(token) > self.max_bytes:
                raise InvalidRequest(f"SET larger than {self.max_bytes} bytes")
            if not token.isascii():  # O(1) for str
                raise InvalidRequest("SET contains non-ASCII characters")
            raw = token.encode().strip()
        elif isinstance(token, bytes):
            if len(token) > self.max_bytes:
                raise InvalidRequest(f"SET larger than {self.max_bytes} bytes")
            if not token.isascii():
                raise InvalidRequest("SET contains non-ASCII bytes")
            raw = token.strip()
        else:
            raise InvalidRequest("SET must be a string")
        first = raw.find(b".")  # three finds: a third of what split costs
        second = raw.find(b".", first + 1)
        if first < 0 or second < 0 or raw.find(b".", second + 1) >= 0:
            if raw.count(b".") == 4:
                raise InvalidRequest("encrypted SETs (JWE) are not supported")
            raise InvalidRequest("not a compact JWS: expected three dot-separated parts")

        header, alg, kid = self._header(raw[:first])

        claims = _parse_json_object(_b64decode(raw[first + 1:second], "SET payload"),
                                    "SET payload")
        iss = claims.get("iss")
        if not isinstance(iss, str) or not iss:
            raise InvalidRequest("SET has no iss")
        issuer = self.trust.get(iss)
        if issuer is None:
            raise InvalidIssuer(f"issuer {_show(iss)} is not trusted")
        self._check_audience(claims.get("aud"), issuer)
        if alg not in issuer.config.algorithms:
            raise InvalidKey(f"algorithm {_show(alg)} is not allowed for issuer {iss!r}")
        keys = issuer.candidates(kid, alg)
        if not keys:
            raise UnknownKey(f"no key of issuer {iss!r} with kid {_show(kid)} for {alg}", issuer)
        signature = _b64decode(raw[second + 1:], "signature")
        return _Unsigned(header, claims, issuer, keys, raw[:second], signature)

    def _after_signature(
        self, unsigned: _Unsigned, now: float
    ) -> tuple[dict[str, Any], dict[str, Any], TrustedIssuer]:
        self._check_claims(unsigned.claims, unsigned.issuer, now)
        return dict(unsigned.header), unsigned.claims, unsigned.issuer

    def _header(self, header_b64: bytes) -> tuple[dict[str, Any], str, str | None]:
        """The checked JOSE header: (header, alg, kid). Every token of one key carries the same
        header, so checked headers are kept (bounded) and the common case is one dict lookup."""
        cached = self._headers.get(header_b64)
        if cached is not None:
            return cached
        header = _parse_json_object(_b64decode(header_b64, "JOSE header"), "JOSE header")
        if header.get("typ") != SET_TYPE:
            raise InvalidRequest(
                f"JOSE header typ must be {SET_TYPE!r}, got {_show(header.get('typ'))}")
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise InvalidRequest("JOSE header has no alg")
        if alg in FORBIDDEN_ALGORITHMS or alg.upper().startswith("HS"):
            raise InvalidKey(f"algorithm {_show(alg)} is never accepted")
        if "crit" in header:
            crit = header["crit"]
            if (not isinstance(crit, list) or not crit
                    or not all(isinstance(name, str) for name in crit)):
                raise InvalidRequest("JOSE header crit must be a non-empty array of names")
            unknown = [name for name in crit if name not in UNDERSTOOD_CRITICAL_HEADERS]
            if unknown:
                raise InvalidRequest(f"unsupported critical header(s) {_show(unknown)}")
        kid = header.get("kid")
        if "kid" in header and not isinstance(kid, str):
            raise InvalidRequest("JOSE header kid must be a string")
        if len(self._headers) >= HEADER_CACHE_SIZE:
            self._headers.clear()
        self._headers[header_b64] = (header, alg, kid)
        return header, alg, kid

    @staticmethod
    def _check_audience(aud: Any, issuer: TrustedIssuer) -> None:
        accepted = issuer.config.audiences
        if type(aud) is str:
            if aud not in accepted:
                raise InvalidAudience(f"audience {_show(aud)} is not accepted for this issuer")
            return
        if isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
            if len(aud) > 1 and not issuer.config.allow_multiple_audiences:
                raise InvalidAudience("multi-valued aud is not allowed for this issuer")
            if not any(a in accepted for a in aud):
                raise InvalidAudience(
                    f"none of the audiences {_show(aud)} is accepted for this issuer")
            return
        raise InvalidAudience("SET has no usable aud")

    def _check_claims(self, claims: Mapping[str, Any], issuer: TrustedIssuer, now: float) -> None:
        if "exp" in claims:
            raise InvalidRequest("a SET must not carry exp (RFC 8417 section 2.2)")
        if "sub" in claims:
            raise InvalidRequest("a SET must not carry a top-level sub; use sub_id")
        iat = claims.get("iat")
        if not (type(iat) is int or type(iat) is float):  # exact: a JSON true is no time
            raise InvalidRequest("SET has no numeric iat")
        if iat > now + self.iat_skew:
            raise InvalidRequest("SET iat lies in the future beyond the allowed skew")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise InvalidRequest("SET has no jti")
        events = claims.get("events")
        if not isinstance(events, dict) or not events:
            raise InvalidRequest("SET has no events object")
        if len(events) > issuer.config.max_events:
            raise InvalidRequest(
                f"SET carries {len(events)} events; this issuer may send {issuer.config.max_events}"
            )

    @staticmethod
    def _typed_events(claims: Mapping[str, Any]) -> tuple[SubjectEvent, ...]:
        """Each event parsed by its model, with its subject: `sub_id`, else the legacy
        in-event `subject` (SSF 1.0 section 3.1.1)."""
        raw_sub_id = claims.get("sub_id")
        sub_id = parse_subject(raw_sub_id) if raw_sub_id is not None else None
        items = []
        for event_type, payload in claims["events"].items():
            event = parse_event(event_type, payload)
            subject: Subject | None = sub_id
            raw: Any = raw_sub_id
            if subject is None:
                legacy = payload.get("subject") if isinstance(payload, dict) else None
                if legacy is None:
                    raise InvalidRequest(f"event {event_type}: the SET names no subject (sub_id)")
                subject, raw = parse_subject(legacy), legacy
            allowed = event.subject_formats if isinstance(event, Event) else None
            if allowed is not None and subject.format not in allowed:
                raise InvalidRequest(
                    f"event {event_type}: subject format {subject.format!r} is not one of "
                    f"{sorted(allowed)}"
                )
            items.append(SubjectEvent(event_type, event, subject, dict(raw)))
        return tuple(items)


def sign_set(
    claims: Mapping[str, Any],
    private_key: Any,
    *,
    alg: str = "RS256",
    kid: str | None = None,
) -> str:
    """Sign SET claims into a compact JWS with `typ: secevent+jwt`; fills `iat` and `jti`.

    `private_key` is a key object (e.g. from `jwt.PyJWK(jwk).key`), never raw bytes.
    """
    if alg in FORBIDDEN_ALGORITHMS or alg.upper().startswith("HS"):
        raise ValueError(f"algorithm {alg!r} is never used for SETs")
    if isinstance(private_key, bytes | str):
        raise TypeError("pass a key object, not raw key bytes")
    payload = dict(claims)
    payload.setdefault("iat", int(time.time()))
    payload.setdefault("jti", uuid.uuid4().hex)
    headers: dict[str, Any] = {"typ": SET_TYPE}
    if kid is not None:
        headers["kid"] = kid
    return jwt.encode(payload, private_key, algorithm=alg, headers=headers)

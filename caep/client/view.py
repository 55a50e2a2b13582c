"""A relying service's in-memory view of the engine's decisions: pure, no I/O, no clock.

Records from `caep.decisions` and `caep.flags` go in through `apply_decision` / `apply_flags`
with the current time as an argument; `is_revoked`, `is_revoked_subject`, `required_acr`,
`step_up` and `flags` answer from dictionaries, so the request path makes no network call.

- Scoped: the view serves a fixed set of tenants. Another tenant's record is counted in
  `counters.other_tenant` and dropped, so nothing of it can ever be answered.
- Convergent: the same records in any order, any number of times, give the same answers (the
  latest step-up and flags win, ties broken by content; revocations only accumulate).
- Bounded, never at the cost of safety: an entry is kept while a token of the session it is
  about can still be presented. A session was established before anything was decided about
  it and lives at most `max_session_lifetime` (default, and at least, the policy's absolute
  lifetime), so every entry is kept for `retention` = that lifetime plus `clock_skew` after
  its decision, counted from the decision (a subject revocation too: not from
  `established_before`, and never from a token's `auth_time`, which may be missing).
  `evict(now)` drops expired entries in O(expired log n); a record that arrives already
  expired is counted, not kept.
- Malformed records (not JSON, not the engine's shape) are counted and skipped; nothing raises.
"""

from __future__ import annotations

import copy
import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, JsonValue

from caep.decisions import Action, Decision, SessionFlags
from caep.errors import CaepError, ConfigError
from caep.policy import Policy
from caep.subjects import ComplexSubject, parse_subject, subject_key

_MISSING = object()
# Heap tags: which table an expiry belongs to.
_REVOKED, _SUBJECT, _STEP_UP, _FLAGS = range(4)
Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class StepUp:
    """A step-up the engine asked for: RFC 9470's `acr_values` and `max_age`."""

    acr: str
    max_age: int | None
    decided_at: float


@dataclass(frozen=True, slots=True)
class FlagsEntry:
    """The engine's latest flags for one session."""

    flags: Mapping[str, JsonValue]
    updated_at: float


class ChangeKind(StrEnum):
    SESSION_REVOKED = "session_revoked"
    SUBJECT_REVOKED = "subject_revoked"
    STEP_UP = "step_up"
    FLAGS = "flags"
    NOTIFY = "notify"


@dataclass(frozen=True, slots=True)
class Change:
    """What one record changed, for services that react (close websockets, drop caches).

    `flags_changed` lists the flags whose effective value for the session changed: new flags,
    or security flags turning to their safe value because the session was revoked.
    """

    kind: ChangeKind
    tenant: str
    session_id: str | None
    subject: Mapping[str, Any] = field(default_factory=dict)
    flags_changed: frozenset[str] = frozenset()
    decision: Decision | None = None


@dataclass
class Counters:
    """What happened to the records the view was given; the view keeps only `applied` ones."""

    applied: int = 0
    unchanged: int = 0
    other_tenant: int = 0
    monitor: int = 0
    expired: int = 0
    malformed: int = 0
    evicted: int = 0


def _lenient(model: type[BaseModel], value: bytes | None) -> Any:
    """The record as `model`, ignoring members a newer engine may add; None if it is not one."""
    if value is None:
        return None
    try:
        data = orjson.loads(value)
        if not isinstance(data, dict):
            return None
        return model.model_validate({k: v for k, v in data.items() if k in model.model_fields})
    except Exception:  # any input at all: JSON errors, validation errors, RecursionError
        return None


def parse_decision(value: bytes | None) -> Decision | None:
    """A `caep.decisions` record, or None if it is malformed."""
    decision: Decision | None = _lenient(Decision, value)
    if decision is None or not math.isfinite(decision.decided_at):
        return None
    if decision.established_before is not None and not math.isfinite(decision.established_before):
        return None
    return decision


def parse_session_flags(value: bytes | None) -> SessionFlags | None:
    """A `caep.flags` record, or None if it is malformed."""
    record: SessionFlags | None = _lenient(SessionFlags, value)
    if record is None or not math.isfinite(record.updated_at):
        return None
    return record


_PRINCIPAL_KEYS: dict[tuple[tuple[str, Any], ...], str] = {}
_PRINCIPAL_KEYS_MAX = 65536


def principal_key(subject: Mapping[str, Any]) -> str:
    """The canonical key of the principal an RFC 9493 subject names: for a complex subject its
    user (or first principal member), so `{"format":"complex","user":U,"session":S}` and `U`
    match. Raises InvalidRequest for a subject that is not one.

    Every request a middleware checks asks this of its token's subject, so the keys of flat
    subjects of strings (email, iss_sub, opaque, ...) are remembered, at most
    `_PRINCIPAL_KEYS_MAX` of them: parsing and canonicalizing cost more than the rest of the
    check. Anything else (complex subjects, other value types, errors) is worked out each time.
    """
    items = tuple(subject.items())
    try:
        known = _PRINCIPAL_KEYS.get(items)
    except TypeError:  # an unhashable value: never remembered
        known = None
    if known is not None:  # only all-string items are kept, and only a str equals a str
        return known
    if all(type(name) is str and type(value) is str for name, value in items):
        key = _principal_key(subject)
        if len(_PRINCIPAL_KEYS) >= _PRINCIPAL_KEYS_MAX:
            _PRINCIPAL_KEYS.clear()
        _PRINCIPAL_KEYS[items] = key
        return key
    return _principal_key(subject)


def _principal_key(subject: Mapping[str, Any]) -> str:
    parsed = parse_subject(dict(subject))
    if isinstance(parsed, ComplexSubject):
        principal = parsed.principal()
        if principal is not None:
            return subject_key(principal[1])
    return subject_key(parsed)


def _order(flags: Mapping[str, JsonValue]) -> bytes:
    return orjson.dumps(flags, option=orjson.OPT_SORT_KEYS)


class SessionView:
    """The engine's decisions for the tenants a service serves, answered in O(1)."""

    def __init__(self, tenants: Iterable[str], policy: Policy, *,
                 max_session_lifetime: float | None = None, clock_skew: float = 60.0) -> None:
        served = tuple(sorted({t for t in tenants if t}))
        if not served:
            raise ConfigError("a relying service must name the tenants it serves "
                              "(CAEP_CLIENT_TENANTS or tenants=...)")
        self.tenants = served
        self._served = frozenset(served)
        self.policy = policy
        self.lifetime = policy.lifetimes.absolute_seconds  # the engine's rule, on auth_time
        longest = self.lifetime if max_session_lifetime is None else max_session_lifetime
        if not (math.isfinite(longest) and longest >= self.lifetime):
            raise ConfigError(f"max_session_lifetime must be at least the policy's absolute "
                              f"lifetime ({self.lifetime:g} s): tokens that young are accepted")
        if not (math.isfinite(clock_skew) and clock_skew >= 0):
            raise ConfigError("clock_skew must be a finite number of seconds, at least 0")
        self.max_session_lifetime = longest
        self.clock_skew = clock_skew
        self.retention = longest + clock_skew
        self.counters = Counters()
        self._revoked: dict[Key, float] = {}  # -> decided_at
        # (tenant, principal key) -> (established_before, decided_at)
        self._subjects: dict[Key, tuple[float, float]] = {}
        self._step_ups: dict[Key, StepUp] = {}
        self._flags: dict[Key, FlagsEntry] = {}
        self._expiry: list[tuple[float, int, Key]] = []

    def __len__(self) -> int:
        return len(self._revoked) + len(self._subjects) + len(self._step_ups) + len(self._flags)

    # -- queries -------------------------------------------------------------------------------

    def _keys(self, session_id: str, tenant: str | None) -> tuple[Key, ...]:
        if tenant is not None:
            return ((tenant, session_id),) if tenant in self._served else ()
        if len(self.tenants) == 1:
            return ((self.tenants[0], session_id),)
        return tuple([(t, session_id) for t in self.tenants])

    def is_revoked(self, session_id: str, tenant: str | None = None) -> bool:
        """Whether the engine revoked this session (in `tenant`, or any tenant served)."""
        revoked = self._revoked
        if tenant is None:
            for served in self.tenants:  # noqa: SIM110  a loop: no generator per look-up
                if (served, session_id) in revoked:
                    return True
            return False
        return tenant in self._served and (tenant, session_id) in revoked

    def is_revoked_subject(self, subject: Mapping[str, Any], tenant: str | None = None,
                           established_at: float | None = None) -> bool:
        """Whether the subject's sessions established at `established_at` are revoked (every
        session, when the time is unknown: fail closed). Raises InvalidRequest for a subject
        that is not an RFC 9493 subject."""
        key = principal_key(subject)
        for entry in self._keys(key, tenant):
            found = self._subjects.get(entry)
            if found is not None and (established_at is None or established_at <= found[0]):
                return True
        return False

    def step_up(self, session_id: str, tenant: str | None = None) -> StepUp | None:
        """The step-up the engine requires of this session, if any."""
        for key in self._keys(session_id, tenant):
            found = self._step_ups.get(key)
            if found is not None:
                return found
        return None

    def required_acr(self, session_id: str, tenant: str | None = None) -> str | None:
        found = self.step_up(session_id, tenant)
        return found.acr if found is not None else None

    def session_flags(self, session_id: str, tenant: str | None = None) -> FlagsEntry | None:
        """The engine's own flags record for the session; None if it published none (the
        session was never restricted) or, without a tenant, if two served tenants have one."""
        keys = self._keys(session_id, tenant)
        if len(keys) == 1:  # one tenant in question (an entry is never falsy)
            return self._flags.get(keys[0])
        found = [e for k in keys if (e := self._flags.get(k))]
        return found[0] if len(found) == 1 else None

    def ambiguous(self, session_id: str, tenant: str | None = None) -> bool:
        """Whether, no tenant named, two served tenants have flags for this session id: which
        are its is unknown, so its security flags take their safe value."""
        if tenant is not None or len(self.tenants) == 1:
            return False  # one tenant in question: nothing to be ambiguous about
        return sum(1 for key in self._keys(session_id, None) if key in self._flags) > 1

    def flags(self, session_id: str, tenant: str | None = None) -> dict[str, JsonValue]:
        """The session's effective flags (a copy): the engine's, else the policy's defaults;
        with the security flags at their safe value once the session is revoked, or when it
        is ambiguous which served tenant's session it is."""
        entry = self.session_flags(session_id, tenant)
        unsafe = self.is_revoked(session_id, tenant) or self.ambiguous(session_id, tenant)
        return copy.deepcopy(dict(self._combine(entry, unsafe)))

    def _combine(self, entry: FlagsEntry | None, revoked: bool) -> Mapping[str, JsonValue]:
        if entry is None and not revoked:
            return self.policy.flags
        # Defaults under the engine's flags: a flag added to the policy after the record.
        flags = {**self.policy.flags, **(entry.flags if entry is not None else {})}
        return {**flags, **self.policy.security_flags} if revoked else flags

    def _effective(self, key: Key) -> Mapping[str, JsonValue]:
        return self._combine(self._flags.get(key), key in self._revoked)

    # -- applying records ----------------------------------------------------------------------

    def apply_decision(self, value: bytes | None, now: float) -> Change | None:
        """Apply one `caep.decisions` record; the change it made, if any."""
        decision = parse_decision(value)
        if decision is None:
            self.counters.malformed += 1
            return None
        return self.apply(decision, now)

    def apply_flags(self, value: bytes | None, now: float) -> Change | None:
        """Apply one `caep.flags` record; the change it made, if any."""
        record = parse_session_flags(value)
        if record is None:
            self.counters.malformed += 1
            return None
        if record.tenant not in self._served:
            self.counters.other_tenant += 1
            return None
        key = (record.tenant, record.session_id)
        changed = self._set_flags(key, record.flags, record.updated_at, now)
        if changed is None:
            return None
        return Change(ChangeKind.FLAGS, record.tenant, record.session_id, flags_changed=changed)

    def apply(self, decision: Decision, now: float) -> Change | None:
        """Apply one decision; the change it made, if any."""
        if decision.tenant not in self._served:
            self.counters.other_tenant += 1
            return None
        if not decision.enforced:
            self.counters.monitor += 1
            return None
        sid = decision.session_id
        if decision.action is Action.REVOKE_SUBJECT:
            return self._revoke_subject(decision, now)
        if decision.action is Action.NOTIFY:
            self.counters.applied += 1
            return Change(ChangeKind.NOTIFY, decision.tenant, sid, decision.subject,
                          decision=decision)
        if sid is None:
            self.counters.malformed += 1
            return None
        key = (decision.tenant, sid)
        if decision.action is Action.REVOKE_SESSION:
            return self._revoke_session(key, decision, now)
        if decision.action is Action.STEP_UP:
            return self._step_up(key, decision, now)
        if decision.flags is None:
            self.counters.malformed += 1
            return None
        changed = self._set_flags(key, decision.flags, decision.decided_at, now)
        if changed is None:
            return None
        return Change(ChangeKind.FLAGS, decision.tenant, sid, decision.subject,
                      flags_changed=changed, decision=decision)

    def _alive(self, since: float, now: float) -> bool:
        if since + self.retention > now:
            return True
        self.counters.expired += 1
        return False

    def _track(self, tag: int, key: Key, since: float) -> None:
        heapq.heappush(self._expiry, (since + self.retention, tag, key))

    def _revoke_session(self, key: Key, decision: Decision, now: float) -> Change | None:
        if not self._alive(decision.decided_at, now):
            return None
        known = self._revoked.get(key)
        if known is not None and known >= decision.decided_at:
            self.counters.unchanged += 1
            return None
        before = self._effective(key)
        self._revoked[key] = decision.decided_at
        if known is None:
            self._track(_REVOKED, key, decision.decided_at)
            self.counters.applied += 1
            return Change(ChangeKind.SESSION_REVOKED, key[0], key[1], decision.subject,
                          flags_changed=_diff(before, self._effective(key)), decision=decision)
        self.counters.unchanged += 1  # a later copy only keeps the entry longer
        return None

    def _revoke_subject(self, decision: Decision, now: float) -> Change | None:
        before, decided = decision.established_before, decision.decided_at
        if before is None:
            before = decided
        try:
            key = (decision.tenant, principal_key(decision.subject))
        except CaepError:
            self.counters.malformed += 1
            return None
        # Kept from the decision: a session established before it may live that long after.
        if not self._alive(decided, now):
            return None
        known = self._subjects.get(key)
        self._subjects[key] = (max(before, known[0]), max(decided, known[1])) if known else (
            before, decided)
        if known is None:
            self._track(_SUBJECT, key, decided)
        elif known[0] >= before:
            self.counters.unchanged += 1  # at most keeps the entry longer
            return None
        self.counters.applied += 1
        return Change(ChangeKind.SUBJECT_REVOKED, decision.tenant, None, decision.subject,
                      decision=decision)

    def _step_up(self, key: Key, decision: Decision, now: float) -> Change | None:
        if decision.required_acr is None:
            self.counters.malformed += 1
            return None
        if not self._alive(decision.decided_at, now):
            return None
        new = StepUp(decision.required_acr, decision.max_age, decision.decided_at)
        known = self._step_ups.get(key)
        if known is not None and _step_order(known) >= _step_order(new):
            self.counters.unchanged += 1
            return None
        self._step_ups[key] = new
        if known is None:
            self._track(_STEP_UP, key, new.decided_at)
        self.counters.applied += 1
        return Change(ChangeKind.STEP_UP, key[0], key[1], decision.subject, decision=decision)

    def _set_flags(self, key: Key, flags: Mapping[str, JsonValue], updated_at: float,
                   now: float) -> frozenset[str] | None:
        """Store newer flags; the effective flags that changed (None: nothing stored)."""
        if not self._alive(updated_at, now):
            return None
        known = self._flags.get(key)
        if known is not None and (known.updated_at, _order(known.flags)) >= (
                updated_at, _order(flags)):
            self.counters.unchanged += 1
            return None
        before = self._effective(key)
        self._flags[key] = FlagsEntry(dict(flags), updated_at)
        if known is None:
            self._track(_FLAGS, key, updated_at)
        self.counters.applied += 1
        changed = _diff(before, self._effective(key))
        return changed if changed else None

    # -- memory ----------------------------------------------------------------------------------

    def evict(self, now: float) -> int:
        """Drop every entry `retention` past its decision (no token of its session can still
        be presented); how many were dropped."""
        dropped = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, tag, key = heapq.heappop(self._expiry)
            since = self._since(tag, key)
            if since is None:
                continue
            if since + self.retention > now:  # renewed since it was tracked: track it again
                self._track(tag, key, since)
                continue
            self._table(tag).pop(key, None)
            dropped += 1
        self.counters.evicted += dropped
        return dropped

    def _table(self, tag: int) -> dict[Key, Any]:
        tables: tuple[dict[Key, Any], ...] = (self._revoked, self._subjects, self._step_ups,
                                              self._flags)
        return tables[tag]

    def _since(self, tag: int, key: Key) -> float | None:
        value = self._table(tag).get(key)
        if value is None:
            return None
        if isinstance(value, StepUp):
            return value.decided_at
        if isinstance(value, FlagsEntry):
            return value.updated_at
        if isinstance(value, tuple):  # a subject revocation: kept from its decision
            return float(value[1])
        return float(value)


def _step_order(step: StepUp) -> tuple[float, str, int]:
    return (step.decided_at, step.acr, -1 if step.max_age is None else step.max_age)


def _diff(before: Mapping[str, JsonValue], after: Mapping[str, JsonValue]) -> frozenset[str]:
    return frozenset(k for k in set(before) | set(after)
                     if before.get(k, _MISSING) != after.get(k, _MISSING))

"""What the engine knows about one subject: its live sessions and what happened to them.

One `SubjectState` is one table value, keyed by tenant + canonical subject, so all of a
subject's sessions (and the sessions acting for them) are decided together in one partition.
Serialised compactly with orjson for the changelog; see `to_bytes` / `from_bytes`.
"""

from __future__ import annotations

import base64
import hashlib
import operator
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import orjson

from caep import jsonbytes

MAX_DEVICES = 4
MAX_SIGNALS = 8
MAX_SEEN = 256
_T = TypeVar("_T")


def seen_mark(cause: str) -> str:
    """What `SubjectState.seen` keeps of an input's identity: 96 bits of its BLAKE2b hash, 16
    characters where a SET's cause (issuer, jti, event type) takes about 130; the bound of
    MAX_SEEN marks per subject then costs 4 kB, not 33 kB."""
    digest = hashlib.blake2b(cause.encode(), digest_size=12).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


@dataclass(frozen=True, slots=True)
class Signal:
    """One contribution to a session's risk score."""

    name: str
    weight: float
    at: float
    source: str

    def to_list(self) -> list[Any]:
        return [self.name, self.weight, self.at, self.source]


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    status: str = "active"  # "active" | "revoked" | "ended"
    established_at: float = 0.0
    last_seen: float = 0.0
    devices: tuple[str, ...] = ()
    ip: str | None = None
    user_agent: str | None = None
    geo: tuple[float, float, float] | None = None  # lat, lon, observed_at
    parent: str | None = None
    actor: str | None = None
    acr: str | None = None
    risk: float = 0.0
    risk_at: float = 0.0
    signals: tuple[Signal, ...] = ()
    sticky_flags: tuple[tuple[str, Any], ...] = ()
    flags: tuple[tuple[str, Any], ...] = ()
    required_acr: str | None = None
    revoked_at: float | None = None
    elevated_until: float | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    def with_changes(self, **changes: Any) -> Session:
        return replace(self, **changes)  # replaced by a generated copy below


@dataclass(frozen=True, slots=True)
class SubjectState:
    tenant: str
    key: str
    subject: dict[str, Any] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    revoked_at: float | None = None
    seen: tuple[str, ...] = ()  # seen_mark of the latest inputs applied, for idempotence
    risk_floor: tuple[float, float, str] | None = None  # weight, at, source: IdP subject risk

    def with_changes(self, **changes: Any) -> SubjectState:
        return replace(self, **changes)  # replaced by a generated copy below

    def to_bytes(self) -> bytes:
        return jsonbytes.dumps({
            "t": self.tenant, "k": self.key, "s": self.subject, "r": self.revoked_at,
            "seen": self.seen, "rf": self.risk_floor,
            "x": [_session_to_list(session) for session in self.sessions.values()],
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> SubjectState:
        raw = orjson.loads(data)
        sessions = [_session_from_list(item) for item in raw["x"]]
        return cls(tenant=raw["t"], key=raw["k"], subject=raw["s"], revoked_at=raw["r"],
                   seen=tuple(raw["seen"]), sessions={s.session_id: s for s in sessions},
                   risk_floor=tuple(raw["rf"]) if raw.get("rf") else None)


def _generated(cls: type[_T]) -> tuple[Callable[..., _T], Callable[..., _T]]:
    """Two functions for a frozen slots dataclass whose fields are all init fields without
    `__post_init__`: `with_changes` (what `dataclasses.replace` does) and a constructor taking
    every field positionally, as dataclass's own methods are made, but setting each slot through
    its descriptor rather than `object.__setattr__`: two to three times cheaper, and these are
    the evaluation's most frequent calls. Unknown names raise TypeError, as they do there."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_MISSING": object(), "_new": object.__new__, "_cls": cls}
    for index, name in enumerate(names):
        namespace[f"_set{index}"] = cls.__dict__[name].__set__
    parameters = ", ".join(f"{name}=_MISSING" for name in names)
    copy_body = "\n".join(f"    _set{i}(new, self.{name} if {name} is _MISSING else {name})"
                          for i, name in enumerate(names))
    make_body = "\n".join(f"    _set{i}(new, {name})" for i, name in enumerate(names))
    source = (f"def with_changes(self, *, {parameters}):\n    new = _new(_cls)\n{copy_body}\n"
              "    return new\n\n"
              f"def make({', '.join(names)}):\n    new = _new(_cls)\n{make_body}\n"
              "    return new\n")
    exec(source, namespace)  # noqa: S102  generated from the field names only
    copy: Callable[..., _T] = namespace["with_changes"]
    copy.__qualname__ = f"{cls.__name__}.with_changes"
    make: Callable[..., _T] = namespace["make"]
    return copy, make


# The generated copies replace the methods themselves: no second call, no second **changes.
Session.with_changes, _make_session = _generated(Session)  # type: ignore[method-assign]
SubjectState.with_changes, _ = _generated(SubjectState)  # type: ignore[method-assign]

_FIELDS = ("session_id", "status", "established_at", "last_seen", "devices", "ip", "user_agent",
           "geo", "parent", "actor", "acr", "risk", "risk_at", "signals", "sticky_flags", "flags",
           "required_acr", "revoked_at", "elevated_until")


_values_of = operator.attrgetter(*_FIELDS)
_DEVICES, _GEO, _SIGNALS, _STICKY, _FLAGS = (_FIELDS.index(name) for name in (
    "devices", "geo", "signals", "sticky_flags", "flags"))


def _session_to_list(session: Session) -> list[Any]:
    values = list(_values_of(session))
    values[_SIGNALS] = [s.to_list() for s in session.signals]
    return values


def _session_from_list(values: list[Any]) -> Session:
    if len(values) != len(_FIELDS):
        raise ValueError(f"a session has {len(_FIELDS)} fields, not {len(values)}")
    values = list(values)
    values[_DEVICES] = tuple(values[_DEVICES])
    if values[_GEO] is not None:
        values[_GEO] = tuple(values[_GEO])
    values[_SIGNALS] = tuple(Signal(*s) for s in values[_SIGNALS])
    values[_STICKY] = tuple(tuple(p) for p in values[_STICKY])
    values[_FLAGS] = tuple(tuple(p) for p in values[_FLAGS])
    return _make_session(*values)

"""What the engine knows about one subject: its live sessions and what happened to them.

One `SubjectState` is one table value, keyed by tenant + canonical subject, so all of a
subject's sessions (and the sessions acting for them) are decided together in one partition.
Serialised compactly with orjson for the changelog; see `to_bytes` / `from_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from caep import jsonbytes

MAX_DEVICES = 4
MAX_SIGNALS = 8
MAX_SEEN = 256


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
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class SubjectState:
    tenant: str
    key: str
    subject: dict[str, Any] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    revoked_at: float | None = None
    seen: tuple[str, ...] = ()
    risk_floor: tuple[float, float, str] | None = None  # weight, at, source: IdP subject risk

    def with_changes(self, **changes: Any) -> SubjectState:
        return replace(self, **changes)

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


_FIELDS = ("session_id", "status", "established_at", "last_seen", "devices", "ip", "user_agent",
           "geo", "parent", "actor", "acr", "risk", "risk_at", "signals", "sticky_flags", "flags",
           "required_acr", "revoked_at", "elevated_until")


def _session_to_list(session: Session) -> list[Any]:
    values = [getattr(session, name) for name in _FIELDS]
    values[_FIELDS.index("signals")] = [s.to_list() for s in session.signals]
    return values


def _session_from_list(values: list[Any]) -> Session:
    data = dict(zip(_FIELDS, values, strict=True))
    data["devices"] = tuple(data["devices"])
    data["geo"] = tuple(data["geo"]) if data["geo"] is not None else None
    data["signals"] = tuple(Signal(*s) for s in data["signals"])
    data["sticky_flags"] = tuple(tuple(p) for p in data["sticky_flags"])
    data["flags"] = tuple(tuple(p) for p in data["flags"])
    return Session(**data)

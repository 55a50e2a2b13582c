"""The demo's world: users with sessions, AI agents acting for some of them, an identity provider
signing CAEP and RISC SETs about them, and a relying service reporting what it sees.

Pure and seeded (no I/O): `Scenario.step(now)` returns the next record to publish, drawn from a
realistic mix: mostly session presentations (heartbeats), some with a new user agent, device or
impossible travel; now and then an IdP signal (risk spike, device out of compliance, credential
rotation, session revoked, account disabled).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from caep.codec import sign_set
from caep.subjects import parse_subject, partition_key, subject_key

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
CITIES = {"Paris": (48.86, 2.35), "Lisbon": (38.72, -9.14), "Berlin": (52.52, 13.40),
          "Tokyo": (35.68, 139.69), "Sydney": (-33.87, 151.21), "Sao Paulo": (-23.55, -46.63)}
AGENTS = ("calendar-assistant", "expense-bot", "code-review-agent", "travel-planner")
BROWSERS = ("Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) Safari/605.1.15",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0 Safari/537.36")


@dataclass(frozen=True)
class Record:
    """One record to publish, and what it is, for the live view and the latency figures."""

    topic: str  # "activity" | "set"
    key: bytes
    value: bytes
    cause: str  # the SET's jti, or the activity's activity_id: what decisions point back to
    label: str
    user: str
    session: str | None = None


@dataclass
class Session:
    session_id: str
    device: str
    ip: str
    user_agent: str
    city: str
    parent: str | None = None
    agent: str | None = None
    alive: bool = True


@dataclass
class User:
    email: str
    sessions: list[Session] = field(default_factory=list)
    disabled: bool = False


@dataclass
class Mix:
    """Relative weights of what happens next."""

    presented: float = 80
    new_user_agent: float = 3
    new_device: float = 3
    travel: float = 2
    risk_high: float = 3
    not_compliant: float = 2
    credential_change: float = 1.5
    session_revoked: float = 1
    account_disabled: float = 0.3


class Scenario:
    def __init__(self, *, users: int, agents: int, tenant: str, issuer: str, audience: str,
                 signer: Any, kid: str, alg: str = "ES256", seed: int = 7,
                 mix: Mix | None = None) -> None:
        self.rng = random.Random(seed)
        self.tenant, self.issuer, self.audience = tenant, issuer, audience
        self.signer, self.kid, self.alg = signer, kid, alg
        self.mix = mix or Mix()
        self.users = [User(f"user{n:04d}@demo.example") for n in range(users)]
        self._agents = agents
        self._kinds = list(vars(self.mix))
        self._weights = [getattr(self.mix, k) for k in self._kinds]

    # -- set-up -------------------------------------------------------------------------------

    def establish(self, now: float) -> list[Record]:
        """Every user signs in on one or two devices; some delegate to an AI agent."""
        records = []
        for user in self.users:
            for _ in range(self.rng.choice((1, 1, 2))):
                records.append(self._established(user, now))
        for user in self.rng.sample(self.users, min(self._agents, len(self.users))):
            parent = user.sessions[0]
            agent = self.rng.choice(AGENTS)
            records.append(self._established(user, now, parent=parent, agent=agent))
        return records

    def _established(self, user: User, now: float, *, parent: Session | None = None,
                      agent: str | None = None) -> Record:
        city = parent.city if parent else self.rng.choice(list(CITIES))
        prefix = "agent" if agent else "sess"
        session = Session(
            session_id=f"{prefix}-{self.rng.getrandbits(48):012x}",
            device=parent.device if parent else f"dev-{self.rng.getrandbits(32):08x}",
            ip=f"203.0.113.{self.rng.randrange(1, 255)}",
            user_agent=f"{agent}/1.0" if agent else self.rng.choice(BROWSERS),
            city=city, parent=parent.session_id if parent else None, agent=agent)
        user.sessions.append(session)
        extra: dict[str, Any] = {}
        if parent is not None:
            extra = {"parent_session_id": parent.session_id,
                     "act": {"sub": f"agent:{agent}", "iss": self.issuer}}
        return self._activity(user, session, "established", now, "session established",
                              acr="urn:caep-engine:acr:pwd", **extra)

    # -- the flow -----------------------------------------------------------------------------

    def step(self, now: float) -> Record:
        kind = self.rng.choices(self._kinds, self._weights)[0]
        user, session = self._pick()
        if kind == "presented":
            return self._activity(user, session, "presented", now, "presented")
        if kind == "new_user_agent":
            session.user_agent = self.rng.choice([b for b in BROWSERS if b != session.user_agent])
            return self._activity(user, session, "presented", now, "presented: new user agent")
        if kind == "new_device":
            session.device = f"dev-{self.rng.getrandbits(32):08x}"
            return self._activity(user, session, "presented", now, "presented: new device")
        if kind == "travel":
            session.city = self.rng.choice([c for c in CITIES if c != session.city])
            return self._activity(user, session, "presented", now,
                                  f"presented from {session.city}")
        if kind == "risk_high":
            return self._set(user, None, "risk-level-change", now, "IdP: user risk high", {
                "principal": "USER", "current_level": "HIGH", "previous_level": "LOW",
                "risk_reason": "PASSWORD_FOUND_IN_DATA_BREACH"})
        if kind == "not_compliant":
            return self._set(user, session, "device-compliance-change", now,
                             "IdP: device not compliant", {
                                 "previous_status": "compliant",
                                 "current_status": "not-compliant"})
        if kind == "credential_change":
            return self._set(user, None, "credential-change", now, "IdP: password rotated", {
                "credential_type": "password", "change_type": "update"})
        if kind == "session_revoked":
            session.alive = False
            return self._set(user, session, "session-revoked", now, "IdP: session revoked", {
                "initiating_entity": "admin", "reason_admin": {"en": "Reported lost device"}})
        user.disabled = True
        return self._set(user, None, "account-disabled", now, "IdP: account disabled",
                         {"reason": "hijacking"}, family=RISC)

    def _pick(self) -> tuple[User, Session]:
        while True:
            user = self.rng.choice(self.users)
            live = [s for s in user.sessions if s.alive]
            if live and not user.disabled:
                return user, self.rng.choice(live)
            if all(u.disabled or not any(s.alive for s in u.sessions) for u in self.users):
                user.disabled = False  # everyone is gone: let the story go on
                user.sessions[0].alive = True

    # -- records ------------------------------------------------------------------------------

    def key(self, user: User) -> bytes:
        return partition_key(self.tenant, subject_key(parse_subject(
            {"format": "email", "email": user.email}))).encode()

    def _activity(self, user: User, session: Session, kind: str, now: float, label: str,
                  **extra: Any) -> Record:
        lat, lon = CITIES[session.city]
        activity_id = uuid.UUID(int=self.rng.getrandbits(128)).hex
        body = {"kind": kind, "tenant": self.tenant, "session_id": session.session_id,
                "subject": {"format": "email", "email": user.email}, "observed_at": now,
                "device_id": session.device, "ip": session.ip, "user_agent": session.user_agent,
                "geo": {"lat": lat, "lon": lon}, "activity_id": activity_id, **extra}
        if session.parent and "parent_session_id" not in body:
            body["parent_session_id"] = session.parent
        return Record("activity", self.key(user), orjson.dumps(body), activity_id,
                      label, user.email, session.session_id)

    def _set(self, user: User, session: Session | None, event: str, now: float, label: str,
             payload: dict[str, Any], family: str = CAEP) -> Record:
        subject: dict[str, Any] = {"format": "email", "email": user.email}
        if session is not None:
            subject = {"format": "complex", "user": subject,
                       "session": {"format": "opaque", "id": session.session_id}}
            if event == "device-compliance-change":
                subject["device"] = {"format": "opaque", "id": session.device}
        jti = uuid.UUID(int=self.rng.getrandbits(128)).hex
        claims = {"iss": self.issuer, "aud": self.audience, "jti": jti, "iat": int(now),
                  "sub_id": subject,
                  "events": {family + event: {**payload, "event_timestamp": int(now * 1000)}}}
        token = sign_set(claims, self.signer, alg=self.alg, kid=self.kid)
        return Record("set", self.key(user), token.encode(), jti, label, user.email,
                      session.session_id if session else None)

"""A seeded stream of SETs and session activity for the reliability tests, the oracle that says
what it must lead to, and readers of what the engine actually did.

The workload keeps to inputs whose outcome does not depend on when they are evaluated (no risk
signals, which decay with time): sessions established and presented with the same device, CAEP
session-presented SETs, and session-revoked SETs naming a session or only the user. So the
oracle, the pure evaluation run once over each subject's inputs in order, is exact.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from caep.activity import parse_activity
from caep.codec import SetVerifier, sign_set
from caep.decisions import Action, Decision
from caep.evaluation import EngineInput, evaluate, security_events
from caep.keys import generate_jwk, jwks_of, private_key
from caep.policy import load_policy
from caep.state import SubjectState
from caep.subjects import parse_subject, partition_key, subject_key
from caep.trust import TrustStore
from tests.conftest import AUDIENCE, ISSUER

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
REVOKING = (Action.REVOKE_SESSION, Action.REVOKE_SUBJECT)


@dataclass(frozen=True)
class Record:
    topic: str  # "set" | "activity"
    key: bytes
    value: bytes
    jti: str | None = None
    revocation: bool = False


@dataclass
class Issuer:
    """An ES256 identity provider (signing 20,000 SETs with RS256 would take the test's time)."""

    trust_file: Path
    signer: Any
    kid: str

    @classmethod
    def create(cls, directory: Path) -> Issuer:
        jwk = generate_jwk("ES256", kid=f"chaos-{uuid.uuid4().hex[:6]}")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "idp.jwks.json").write_bytes(orjson.dumps(jwks_of(jwk)))
        trust = directory / "trust.toml"
        trust.write_text(f'[[issuer]]\niss = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
                         'jwks_file = "idp.jwks.json"\nalgorithms = ["ES256"]\n',
                         encoding="utf-8")
        return cls(trust, private_key(jwk), jwk["kid"])

    def verifier(self) -> SetVerifier:
        return SetVerifier(TrustStore.from_file(self.trust_file), iat_skew=3600)


@dataclass
class Workload:
    records: list[Record]
    sets: int
    revocations: int
    users: list[str] = field(default_factory=list)


def build(issuer: Issuer, *, users: int, sets: int, revocations: int, seed: int,
          start: float | None = None) -> Workload:
    """Every user establishes one to three sessions, then `sets` SETs about them, of which
    `revocations` revoke a session (or, one in ten, every session of the user), the rest are
    presentations; a session revoked is sometimes followed by a new one."""
    rng = random.Random(seed)
    t = start if start is not None else time.time()
    names = [f"u{index:05d}" for index in range(users)]
    sessions: dict[str, list[str]] = {}
    records: list[Record] = []

    def tick() -> float:
        nonlocal t
        t += 0.001
        return t

    def activity(user: str, session: str, kind: str) -> Record:
        body = {"kind": kind, "tenant": ISSUER, "session_id": session,
                "subject": {"format": "opaque", "id": user}, "observed_at": tick(),
                "device_id": f"dev-{user}", "user_agent": "chaos/1.0", "ip": "192.0.2.1",
                "activity_id": uuid.UUID(int=rng.getrandbits(128)).hex}
        return Record("activity", key_of(user), orjson.dumps(body))

    def signed(user: str, session: str | None, event: str, payload: dict[str, Any]) -> Record:
        subject: dict[str, Any] = {"format": "opaque", "id": user}
        if session is not None:
            subject = {"format": "complex", "user": subject,
                       "session": {"format": "opaque", "id": session}}
        jti = uuid.UUID(int=rng.getrandbits(128)).hex
        claims = {"iss": ISSUER, "aud": AUDIENCE, "jti": jti, "iat": int(t), "sub_id": subject,
                  "events": {CAEP + event: {**payload, "event_timestamp": int(tick() * 1000)}}}
        token = sign_set(claims, issuer.signer, alg="ES256", kid=issuer.kid)
        return Record("set", key_of(user), token.encode(), jti, event == "session-revoked")

    for user in names:
        sessions[user] = [f"{user}-s{n}" for n in range(rng.choice((1, 1, 2, 3)))]
        records += [activity(user, s, "established") for s in sessions[user]]
    revoke_at = set(rng.sample(range(sets), revocations))
    for index in range(sets):
        user = rng.choice(names)
        if index in revoke_at:
            if rng.random() < 0.1:
                records.append(signed(user, None, "session-revoked",
                                      {"initiating_entity": "admin"}))
            else:
                records.append(signed(user, rng.choice(sessions[user]), "session-revoked",
                                      {"initiating_entity": "policy"}))
            if rng.random() < 0.3:  # the user signs in again afterwards
                fresh = f"{user}-s{len(sessions[user])}"
                sessions[user].append(fresh)
                records.append(activity(user, fresh, "established"))
        else:
            records.append(signed(user, rng.choice(sessions[user]), "session-presented", {}))
    return Workload(records, sets, revocations, names)


def key_of(user: str) -> bytes:
    return partition_key(ISSUER, subject_key(parse_subject({"format": "opaque", "id": user}))
                         ).encode()


@dataclass
class Oracle:
    states: dict[str, SubjectState]
    decisions: list[Decision]

    @property
    def revocations(self) -> dict[str, Decision]:
        return {d.decision_id: d for d in self.decisions if d.action in REVOKING and d.enforced}

    def table(self) -> dict[tuple[str, str], str]:
        return session_table(self.states.values())


def oracle(records: Iterable[Record], verifier: SetVerifier, now: float) -> Oracle:
    """The pure evaluation, run over the records in the order given (per subject, the order
    the engine sees them in), copies included."""
    policy = load_policy()
    states: dict[str, SubjectState] = {}
    decisions: list[Decision] = []
    for record in records:
        items: list[EngineInput]
        if record.topic == "set":
            items = list(security_events(verifier.verify(record.value, now=now)))
        else:
            items = [parse_activity(record.value)]
        key = record.key.decode()
        for item in items:
            state, made = evaluate(states.get(key), item, policy, now, key=key)
            states[key] = state
            decisions += made
    return Oracle(states, decisions)


def session_table(states: Iterable[SubjectState]) -> dict[tuple[str, str], str]:
    return {(state.key, sid): session.status for state in states
            for sid, session in state.sessions.items()}


# -- what the engine did -------------------------------------------------------------------------

async def _read_all(bootstrap: str, topic: str, quiet: float) -> list[Any]:
    """Read from the start until nothing more arrives for `quiet` seconds. Not up to the
    reported end offsets: Tansu's ListOffsets answers the end of a partition as one past the
    first record of its last batch, so a batch of ten reads as one record."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                              fetch_max_wait_ms=100)
    await reader.start()
    try:
        await reader.topics()
        tps = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        records: list[Any] = []
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            for batch in (await reader.getmany(timeout_ms=200)).values():
                if batch:
                    last = time.monotonic()
                records += batch
        return records
    finally:
        await reader.stop()


def read_topic(bootstrap: str, topic: str, quiet: float = 1.0) -> list[Any]:
    """Every record of `topic` written so far (raw aiokafka records)."""
    return asyncio.run(_read_all(bootstrap, topic, quiet))


def live_table(bootstrap: str, changelog: str) -> dict[tuple[str, str], str]:
    """The engine's final session table: the latest value per key of the subjects changelog."""
    latest: dict[bytes, bytes] = {}
    for record in read_topic(bootstrap, changelog):
        if record.value is not None:
            latest[record.key] = record.value
    return session_table(SubjectState.from_bytes(v) for v in latest.values())


async def _committed(bootstrap: str, group: str, tps: list[TopicPartition]) -> dict[Any, int]:
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    await probe.start()
    try:
        return {tp: (await probe.committed(tp)) or 0 for tp in tps}
    finally:
        await probe.stop()


def group_lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """Records of `topics` the group has not committed past (ends measured by reading)."""
    ends: dict[Any, int] = {}
    for topic in topics:
        for record in read_topic(bootstrap, topic, quiet=0.5):
            tp = TopicPartition(topic, record.partition)
            ends[tp] = max(ends.get(tp, 0), record.offset + 1)
    committed = asyncio.run(_committed(bootstrap, group, list(ends)))
    behind = {tp: end - committed[tp] for tp, end in ends.items() if end > committed[tp]}
    global last_lag
    last_lag = {f"{tp.topic}[{tp.partition}]": (committed[tp], ends[tp]) for tp in behind}
    return sum(behind.values())


last_lag: dict[str, tuple[int, int]] = {}  # the partitions behind at the last group_lag call


def duplicates(decisions: Iterable[dict[str, Any]]) -> int:
    counts = Counter(d["decision_id"] for d in decisions)
    return sum(n - 1 for n in counts.values())

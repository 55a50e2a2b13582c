"""What the broker benchmarks share: the embedded broker, fresh topics, a signing identity
provider, engine worker processes, and reading a topic until enough records came.

The same real broker and worker the tests use (never a mock): Tansu through
`streams.broker.EmbeddedBroker`, workers as `python -m streams.cli worker` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from caep.codec import sign_set
from caep.keys import generate_jwk, jwks_of, private_key
from streams.broker import EmbeddedBroker
from streams.topics import ensure_topics
from streams.worker import WorkerProcess, spawn_worker

PROJECT_DIR = Path(__file__).resolve().parent.parent
ISSUER = "https://idp.example.com"
AUDIENCE = "https://rp.example.com"
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
PARTITIONS = 4


@contextlib.contextmanager
def broker(bootstrap: str | None = None) -> Iterator[str]:
    """`bootstrap` if given (an existing cluster), else an embedded Tansu for the block."""
    if bootstrap:
        yield bootstrap
        return
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap


@dataclass(frozen=True)
class Topics:
    prefix: str

    def name(self, role: str) -> str:
        return f"{self.prefix}.{role}"

    def env(self) -> dict[str, str]:
        return {f"CAEP_TOPIC_{role.upper().replace('-', '_')}": self.name(role)
                for role in ROLES}


ROLES = ("security-events", "decisions", "dead-letter", "session-activity", "engine-input",
         "flags", "device-index")


def fresh_topics(bootstrap: str, partitions: int = PARTITIONS, *extra: str) -> Topics:
    """The engine's topics under a fresh prefix (plus `extra` roles), created now."""
    topics = Topics(f"b{uuid.uuid4().hex[:8]}")
    names = [topics.name(role) for role in (*ROLES, *extra)]
    asyncio.run(ensure_topics(bootstrap, names, partitions, compacted={topics.name("flags")}))
    return topics


@dataclass
class Idp:
    """A signing identity provider and the trust file that names it."""

    jwk: dict[str, Any]
    trust_file: Path

    def sign(self, claims: dict[str, Any]) -> str:
        return sign_set(claims, private_key(self.jwk), alg=self.jwk["alg"], kid=self.jwk["kid"])

    def session_revoked(self, user: str, session: str, at: float, *, tenant: str | None = None,
                        jti: str | None = None) -> str:
        """A session-revoked SET about one session of one user: one decision each."""
        sub_id: dict[str, Any] = {"format": "complex",
                                  "user": {"format": "email", "email": f"{user}@example.com"},
                                  "session": {"format": "opaque", "id": session}}
        if tenant is not None:
            sub_id["tenant"] = {"format": "opaque", "id": tenant}
        return self.sign({
            "iss": ISSUER, "aud": AUDIENCE, "jti": jti or uuid.uuid4().hex, "iat": int(at),
            "sub_id": sub_id,
            "events": {CAEP + "session-revoked": {"initiating_entity": "policy",
                                                   "event_timestamp": int(at * 1000)}},
        })


def subject_keys(idp: Idp, tokens: list[str]) -> list[bytes]:
    """The record key the push edge gives each SET: its tenant and subject, the engine's
    partition key (a SET so keyed is evaluated where it arrives, without a second hop)."""
    from caep.codec import SetVerifier
    from caep.evaluation import security_events
    from caep.trust import TrustStore

    verifier = SetVerifier(TrustStore.from_file(idp.trust_file))
    return [security_events(verifier.verify(token))[0].key.encode() for token in tokens]


def make_idp(directory: Path, alg: str = "RS256") -> Idp:
    jwk = generate_jwk(alg, kid=f"bench-{alg.lower()}")
    (directory / "idp.jwks.json").write_bytes(orjson.dumps(jwks_of(jwk)))
    trust = directory / "trust.toml"
    trust.write_text(f'[[issuer]]\niss = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
                     f'jwks_file = "idp.jwks.json"\nalgorithms = ["{alg}"]\n', encoding="utf-8")
    return Idp(jwk, trust)



# Tansu delays every group join by half the session timeout: short timeouts keep start-up
# short (quick runs go shorter still: a missed heartbeat there costs a rebalance, not a figure).
GROUP_TIMEOUTS = {"session": "3", "heartbeat": "0.5", "rebalance": "3"}
QUICK_GROUP_TIMEOUTS = {"session": "1.5", "heartbeat": "0.3", "rebalance": "2"}


def quick_group_timeouts() -> None:
    GROUP_TIMEOUTS.update(QUICK_GROUP_TIMEOUTS)


def start_worker(bootstrap: str, trust: Path, topics: Topics, app_id: str | None = None,
                 **env: str) -> WorkerProcess:
    environment = dict(
        os.environ, CAEP_BOOTSTRAP=bootstrap, CAEP_TRUST_FILE=str(trust),
        CAEP_APP_ID=app_id or f"caep-bench-{uuid.uuid4().hex[:8]}",
        CAEP_GROUP_SESSION_TIMEOUT_SECONDS=GROUP_TIMEOUTS["session"],
        CAEP_GROUP_HEARTBEAT_INTERVAL_SECONDS=GROUP_TIMEOUTS["heartbeat"],
        CAEP_GROUP_REBALANCE_TIMEOUT_SECONDS=GROUP_TIMEOUTS["rebalance"],
        CAEP_LOG_LEVEL="warning", CAEP_WEB_PORT="0", PYTHONUNBUFFERED="1", **topics.env())
    environment.update(env)
    return spawn_worker(environment, cwd=PROJECT_DIR)


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]],
                  **config: Any) -> float:
    """Write the records (acks=all, batched) and wait for every acknowledgement; seconds."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **config)
    await producer.start()
    try:
        started = time.perf_counter()
        pending = [await producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def read(bootstrap: str, topic: str, count: int, within: float,
               fetch_max_wait_ms: int = 100) -> list[tuple[int, bytes | None, bytes]]:
    """(timestamp ms, key, value) of the first `count` records of a topic, from its start;
    fewer if `within` seconds pass first."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=fetch_max_wait_ms)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[tuple[int, bytes | None, bytes]] = []
        deadline = time.monotonic() + within
        while len(found) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found += [(r.timestamp, r.key, r.value) for r in records]
        return found
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    deadline = time.monotonic() + 10
    while True:
        ids = consumer.partitions_for_topic(topic)
        if ids:
            return [TopicPartition(topic, p) for p in sorted(ids)]
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} has no partitions")
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p99 and max of latencies (any unit), nearest-rank."""
    if not samples:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "count": 0}
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]

    return {"p50": rank(0.50), "p99": rank(0.99), "max": ordered[-1], "count": len(ordered)}

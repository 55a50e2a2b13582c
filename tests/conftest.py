"""Shared fixtures: the real broker, a signing identity provider, engine worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from caep.codec import sign_set
from caep.keys import generate_jwk, jwks_of, private_key
from caep.policy import default_policy_text
from streams.broker import EmbeddedBroker
from streams.kafka_io import publish, watch
from streams.topics import ensure_topics
from streams.worker import WorkerProcess, spawn_worker

ISSUER = "https://idp.example.com"
AUDIENCE = "https://rp.example.com"
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    """The real broker: `CAEP_TEST_BOOTSTRAP` if set, else an embedded Tansu for the session."""
    external = os.environ.get("CAEP_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@dataclass
class Idp:
    """A test identity provider: its key, its trust file, and a signer."""

    jwk: dict[str, Any]
    trust_file: Path
    jwks_file: Path

    def claims(self, subject: dict[str, Any], event_type: str = SESSION_REVOKED,
               event: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "jti": uuid.uuid4().hex,
            "iat": int(time.time()),
            "sub_id": subject,
            "events": {event_type: event if event is not None else {
                "initiating_entity": "policy", "event_timestamp": int(time.time() * 1000)}},
        }
        claims.update(overrides)
        return claims

    def sign(self, claims: dict[str, Any]) -> str:
        return sign_set(claims, private_key(self.jwk), kid=self.jwk["kid"])


def write_policy(directory: Path, **settings: float) -> Path:
    """The default policy file with some of its `name = value` lines set otherwise."""
    text = default_policy_text()
    for name, value in settings.items():
        line = next(line for line in text.splitlines() if line.startswith(f"{name} ="))
        text = text.replace(line, f"{name} = {value}", 1)
    path = directory / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def write_trust(directory: Path, jwk: dict[str, Any], **extra: str) -> Path:
    jwks_file = directory / "idp.jwks.json"
    jwks_file.write_bytes(orjson.dumps(jwks_of(jwk)))
    lines = ["[[issuer]]", f'iss = "{ISSUER}"', f'audience = "{AUDIENCE}"',
             f'jwks_file = "{jwks_file.name}"']
    lines += [f'{name} = "{value}"' for name, value in extra.items()]
    trust = directory / "trust.toml"
    trust.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return trust


@pytest.fixture(scope="session")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Idp:
    directory = tmp_path_factory.mktemp("idp")
    jwk = generate_jwk("RS256", kid="idp-key-1")
    trust = write_trust(directory, jwk)
    return Idp(jwk=jwk, trust_file=trust, jwks_file=directory / "idp.jwks.json")


@dataclass
class Topics:
    security_events: str
    decisions: str
    dead_letter: str
    session_activity: str
    engine_input: str
    flags: str
    device_index: str

    def env(self) -> dict[str, str]:
        return {
            "CAEP_TOPIC_SECURITY_EVENTS": self.security_events,
            "CAEP_TOPIC_DECISIONS": self.decisions,
            "CAEP_TOPIC_DEAD_LETTER": self.dead_letter,
            "CAEP_TOPIC_SESSION_ACTIVITY": self.session_activity,
            "CAEP_TOPIC_ENGINE_INPUT": self.engine_input,
            "CAEP_TOPIC_FLAGS": self.flags,
            "CAEP_TOPIC_DEVICE_INDEX": self.device_index,
        }

    def names(self) -> list[str]:
        return [self.security_events, self.decisions, self.dead_letter, self.session_activity,
                self.engine_input, self.flags, self.device_index]


@pytest.fixture(scope="module")
def topics(bootstrap: str) -> Topics:
    """Fresh topic names per test module, so no module sees another's records."""
    return fresh_topics(bootstrap)


def fresh_topics(bootstrap: str, partitions: int = 4) -> Topics:
    s = uuid.uuid4().hex[:8]
    t = Topics(f"t{s}.security-events", f"t{s}.decisions", f"t{s}.dead-letter",
               f"t{s}.session-activity", f"t{s}.engine-input", f"t{s}.flags",
               f"t{s}.device-index")
    asyncio.run(ensure_topics(bootstrap, t.names(), partitions, compacted={t.flags}))
    return t


def start_worker(bootstrap: str, trust: Path, topics: Topics, **env: str) -> WorkerProcess:
    environment = dict(
        os.environ,
        CAEP_BOOTSTRAP=bootstrap,
        CAEP_TRUST_FILE=str(trust),
        CAEP_APP_ID=f"caep-test-{uuid.uuid4().hex[:8]}",
        CAEP_GROUP_SESSION_TIMEOUT_SECONDS="6",
        # what `caep worker` does on its embedded broker, unasked (tests/test_membership.py)
        CAEP_GROUP_LEAVE_ON_STOP="true" if os.environ.get("CAEP_TEST_BOOTSTRAP") else "false",
        CAEP_LOG_LEVEL="info",
        CAEP_WEB_PORT="0",
        PYTHONUNBUFFERED="1",
        **topics.env(),
    )
    environment.update(env)
    return spawn_worker(environment)


def stop_worker(worker: WorkerProcess) -> int:
    return worker.stop(20)


@pytest.fixture(scope="module")
def engine(bootstrap: str, idp: Idp, topics: Topics) -> Iterator[WorkerProcess]:
    """One ready engine worker per module, on fresh topics and a fresh consumer group."""
    worker = start_worker(bootstrap, idp.trust_file, topics)
    try:
        worker.wait_ready()
        yield worker
    finally:
        stop_worker(worker)


def produce(bootstrap: str, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    asyncio.run(publish(bootstrap, topic, [(key, value) for value in values]))


def collect(bootstrap: str, topic: str, until: Callable[[list[dict[str, Any]]], bool],
            timeout: float = 30.0) -> list[dict[str, Any]]:
    """Read a topic from the start until `until(records)` holds or `timeout` passes."""

    async def run() -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout

        async def consume() -> None:
            async for record in watch(bootstrap, topic, idle_timeout=timeout):
                records.append(record)
                if until(records) or time.monotonic() > deadline:
                    return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consume(), timeout)
        return records

    return asyncio.run(run())


def observe(condition: Callable[[], bool], within: float, what: str) -> None:
    """`until` for code with no event loop of its own."""
    asyncio.run(until(condition, within, what))


async def until(condition: Callable[[], bool], within: float, what: str) -> float:
    """Observe `condition` (polling), returning how long it took; fail after `within` s."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started

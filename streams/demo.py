"""`caep demo`: an identity provider, the engine and a relying party's view, on one machine."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from caep.codec import sign_set
from caep.keys import generate_jwk, jwks_of, private_key
from caep.settings import Settings
from streams.broker import EmbeddedBroker
from streams.kafka_io import publish, watch
from streams.topics import engine_topics, ensure_topics
from streams.worker import READY_LINE

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
ISSUER = "https://idp.demo.example"
AUDIENCE = "https://rp.demo.example"
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
REASONS = ["Landspeed policy violation", "User signed out everywhere",
           "Admin revoked session", "Device reported stolen"]


def _demo_sets(count: int, key: Any, kid: str) -> list[tuple[str, dict[str, Any]]]:
    """Session-revoked SETs: most name a session, every fourth names only the user."""
    sets = []
    for n in range(count):
        user = USERS[n % len(USERS)]
        subject: dict[str, Any] = {
            "format": "complex",
            "user": {"format": "email", "email": f"{user}@demo.example"},
        }
        if n % 4 != 3:
            subject["session"] = {"format": "opaque", "id": f"sess-{user}-{n:03d}"}
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "jti": uuid.uuid4().hex,
            "iat": int(time.time()),
            "sub_id": subject,
            "events": {SESSION_REVOKED: {
                "initiating_entity": "policy",
                "reason_admin": {"en": REASONS[n % len(REASONS)]},
                "event_timestamp": int(time.time() * 1000),
            }},
        }
        sets.append((sign_set(claims, key, kid=kid), claims))
    return sets


def _write_trust(directory: Path, jwk: dict[str, Any]) -> Path:
    (directory / "idp.jwks.json").write_bytes(orjson.dumps(jwks_of(jwk)))
    trust = directory / "trust.toml"
    trust.write_text(
        f'[[issuer]]\niss = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
        'jwks_file = "idp.jwks.json"\ntenant = "demo"\n',
        encoding="utf-8",
    )
    return trust


def _start_worker(bootstrap: str, trust: Path, app_id: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, CAEP_BOOTSTRAP=bootstrap, CAEP_TRUST_FILE=str(trust),
               CAEP_APP_ID=app_id, CAEP_LOG_LEVEL="info")
    env.setdefault("CAEP_GROUP_SESSION_TIMEOUT_SECONDS", "6")
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_ready(worker: subprocess.Popen[bytes], log: Path, wait_seconds: float) -> bool:
    """Observe the worker's readiness line in its log; False if it dies or never says it."""
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline and worker.poll() is None:
        if READY_LINE in log.read_text(encoding="utf-8", errors="replace"):
            return True
        time.sleep(0.05)
    return False


async def _run(bootstrap: str, settings: Settings, sets: list[tuple[str, dict[str, Any]]],
               wait_seconds: float) -> int:
    await ensure_topics(bootstrap, engine_topics(settings), settings.topic_partitions)
    print(f"idp: publishing {len(sets)} signed session-revoked SETs to "
          f"{settings.topic_security_events}", flush=True)
    published_at = time.time()
    await publish(bootstrap, settings.topic_security_events,
                  [(None, token.encode()) for token, _ in sets])
    pending = {claims["jti"] for _, claims in sets}
    deadline = time.monotonic() + wait_seconds
    async for record in watch(bootstrap, settings.topic_decisions, idle_timeout=wait_seconds):
        decision = record["value"]
        if not isinstance(decision, dict) or decision.get("source_jti") not in pending:
            continue
        pending.discard(decision["source_jti"])
        latency_ms = record["timestamp_ms"] - published_at * 1000
        who = decision["subject"].get("user", decision["subject"])
        target = f"session {decision['session_id']}" if decision["session_id"] else "all sessions"
        print(f"decision: {decision['action']:<15} {who.get('email', who)!s:<22} {target:<22} "
              f"jti={decision['source_jti'][:8]}  ({latency_ms:.0f} ms after publish)", flush=True)
        if not pending or time.monotonic() > deadline:
            break
    if pending:
        print(f"demo: {len(pending)} decision(s) missing after {wait_seconds:.0f} s",
              file=sys.stderr)
        return 1
    print(f"demo: {len(sets)} SETs in, {len(sets)} revocations out", flush=True)
    return 0


def run_demo(settings: Settings, *, sessions: int, timeout: float) -> int:
    with tempfile.TemporaryDirectory(prefix="caep-demo-") as tmp:
        directory = Path(tmp)
        jwk = generate_jwk("RS256", kid="demo-key-1")
        trust = _write_trust(directory, jwk)
        sets = _demo_sets(sessions, private_key(jwk), "demo-key-1")
        broker = None
        if settings.bootstrap:
            bootstrap = settings.bootstrap
        else:
            broker = EmbeddedBroker().start()
            bootstrap = broker.bootstrap
            print(f"broker: embedded Tansu at {bootstrap}", flush=True)
        log = directory / "worker.log"
        worker = _start_worker(bootstrap, trust, f"caep-demo-{uuid.uuid4().hex[:8]}", log)
        started = time.monotonic()
        try:
            if not _wait_ready(worker, log, timeout):
                print("demo: the worker did not become ready:", file=sys.stderr)
                print(log.read_text(encoding="utf-8", errors="replace")[-2000:], file=sys.stderr)
                return 1
            print(f"worker: ready after {time.monotonic() - started:.1f} s (pid {worker.pid})",
                  flush=True)
            code = asyncio.run(_run(bootstrap, settings, sets, timeout))
            if code != 0:
                print(log.read_text(encoding="utf-8", errors="replace")[-2000:], file=sys.stderr)
            return code
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            if broker is not None:
                broker.stop()
            print("demo: worker and broker stopped", flush=True)

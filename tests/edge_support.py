"""Shared by the edge tests: an edge file, settings on fresh topics, a running edge."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caep.errors import BrokerError
from caep.settings import Settings
from caep.ssf.auth import token_hash
from streams.broker import EmbeddedBroker, ensure_port_free, free_port
from streams.edge import Edge, tls_files
from streams.edge_server import serving
from tests.conftest import AUDIENCE, ISSUER

PUSH_TOKEN = "push-token-of-the-idp"
RP_TOKEN = "token-of-relying-party-1"
RP2_TOKEN = "token-of-relying-party-2"
READ_ONLY_TOKEN = "read-only-token"
RP_AUDIENCE = "https://rp1.example.com"
RP2_AUDIENCE = "https://rp2.example.com"


def write_edge_file(directory: Path, *, issuers: list[str] | None = None) -> Path:
    allowed = f"issuers = {issuers!r}\n".replace("'", '"') if issuers is not None else ""
    text = (
        "[[transmitter]]\n"
        'name = "test-idp"\n'
        f'token_sha256 = "{token_hash(PUSH_TOKEN)}"\n'
        f"{allowed}\n"
        "[[receiver]]\n"
        'client_id = "rp-1"\n'
        f'token_sha256 = "{token_hash(RP_TOKEN)}"\n'
        f'audience = "{RP_AUDIENCE}"\n\n'
        "[[receiver]]\n"
        'client_id = "rp-2"\n'
        f'token_sha256 = "{token_hash(RP2_TOKEN)}"\n'
        f'audience = "{RP2_AUDIENCE}"\n\n'
        "[[receiver]]\n"
        'client_id = "auditor"\n'
        f'token_sha256 = "{token_hash(READ_ONLY_TOKEN)}"\n'
        'audience = "https://auditor.example.com"\n'
        'scopes = ["ssf.read"]\n'
    )
    path = directory / "edge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def edge_settings(bootstrap: str, trust_file: Path, directory: Path,
                  **overrides: Any) -> Settings:
    """Settings for one edge on topics no other test uses."""
    s = uuid.uuid4().hex[:8]
    port = free_port()
    values: dict[str, Any] = {
        "bootstrap": bootstrap,
        "trust_file": trust_file,
        "edge_key_file": directory / "edge-keys.json",
        "edge_port": port,
        "app_id": f"edge-test-{s}",
        "topic_security_events": f"e{s}.security-events",
        "topic_decisions": f"e{s}.decisions",
        "topic_ssf_streams": f"e{s}.ssf-streams",
        "topic_partitions": 2,
        "producer_idempotence": False,  # Tansu refuses InitProducerId (README, Known limits)
    }
    values.update(overrides)
    if "edge_config_file" not in values:
        values["edge_config_file"] = write_edge_file(directory)
    return Settings(**values)


@dataclass
class RunningEdge:
    edge: Edge
    url: str


@contextlib.contextmanager
def running_edge(settings: Settings, *, embedded: bool = False) -> Iterator[RunningEdge]:
    edge = Edge(settings, settings.bootstrap or "", embedded=embedded)
    tls = tls_files(settings)
    with serving(edge.app, settings.edge_host, settings.edge_port, tls=tls):
        scheme = "https" if tls else "http"
        yield RunningEdge(edge, f"{scheme}://{settings.edge_host}:{settings.edge_port}")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


__all__ = ["AUDIENCE", "ISSUER"]


class RecordingReceiver:
    """A relying party's RFC 8935 push endpoint (a real HTTP server): keeps every SET it
    accepts, and answers `fail_status` (503 by default, with `Retry-After: retry_after`
    unless None) to the first `fail_first` attempts of SETs for which `should_fail(token)`
    holds. `times` are the attempts' arrival times (monotonic)."""

    def __init__(self, fail_first: int = 0, should_fail: Any = None, *,
                 fail_status: int = 503, retry_after: str | None = "0") -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        self.received: list[str] = []
        self.attempted: list[str] = []
        self.attempts = 0
        self.failed = 0
        self.authorization: list[str | None] = []
        self.times: list[float] = []
        self.fail_first = fail_first
        self.should_fail = should_fail or (lambda _token: True)
        self.port = free_port()

        async def events(request: Request) -> Response:
            token = (await request.body()).decode()
            self.times.append(time.monotonic())
            self.attempts += 1
            self.attempted.append(token)
            self.authorization.append(request.headers.get("authorization"))
            if request.headers.get("content-type") != "application/secevent+jwt":
                return Response(status_code=415)
            if self.failed < self.fail_first and self.should_fail(token):
                self.failed += 1
                return Response(status_code=fail_status, headers=(
                    {"Retry-After": retry_after} if retry_after is not None else {}))
            self.received.append(token)
            return Response(status_code=202)

        self.app = Starlette(routes=[Route("/events", events, methods=["POST"])])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    @contextlib.contextmanager
    def running(self) -> Iterator[RecordingReceiver]:
        with serving(self.app, "127.0.0.1", self.port):
            yield self


def decision(subject: dict[str, Any], action: str = "revoke_session", *,
             session_id: str | None = "sess-1", tenant: str = "acme", **extra: Any) -> bytes:
    """A decision record as the engine publishes it on caep.decisions."""
    from caep.decisions import Decision
    from caep.subjects import parse_subject, subject_key

    record = Decision(
        decision_id=str(uuid.uuid4()), action=action, tenant=tenant, subject=subject,  # type: ignore[arg-type]
        subject_key=f"{tenant}|{subject_key(parse_subject(subject))}", session_id=session_id,
        rule="test-rule", reasons=["test"], source="credential-change",
        decided_at=__import__("time").time(), **extra)
    return record.to_json()


def edge_verifier(edge_url: str, audience: str = RP_AUDIENCE) -> Any:
    """A codec verifier trusting exactly what the edge publishes at its jwks_uri."""
    import httpx

    from caep.codec import SetVerifier
    from caep.trust import IssuerConfig, TrustStore

    meta = httpx.get(f"{edge_url}/.well-known/ssf-configuration", timeout=10).json()
    jwks = httpx.get(meta["jwks_uri"], timeout=10).json()
    config = IssuerConfig(iss=meta["issuer"], audience=audience, jwks_file=Path("-"))
    return SetVerifier(TrustStore.from_jwks(config, jwks))


def topic_size(bootstrap: str, topic: str) -> int:
    """Records ever written to a topic (sum of its end offsets): exact at once, where
    waiting for records that should not come would only be a guess."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        await consumer.start()
        try:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(topic) or set()
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
            return sum(ends.values())
        finally:
            await consumer.stop()

    return asyncio.run(run())


@contextlib.contextmanager
def broker_restarted(port: int, within: float = 15.0) -> Iterator[EmbeddedBroker]:
    """A new embedded broker on a stopped one's port: empty, as Tansu keeps nothing on disk.
    Started once the port is free (observed) and ready once it answers metadata."""
    deadline = time.monotonic() + within
    while True:
        try:
            ensure_port_free(port)
            break
        except BrokerError:
            if time.monotonic() > deadline:
                raise AssertionError(f"port {port} still taken {within} s after the broker "
                                     "stopped") from None
            time.sleep(0.05)
    broker = EmbeddedBroker(port=port).start()
    try:
        yield broker
    finally:
        broker.stop()

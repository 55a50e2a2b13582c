"""Issue 7's "done when": an identity provider pushes a credential-change SET to the edge over
HTTP; the engine (a real worker process) decides; a relying party's push receiver (a second
HTTP server) gets a signed session-revoked SET that verifies against the published JWKS, and
a poll receiver gets the same decision through polling with acknowledgements."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson

from caep.codec import SetVerifier
from caep.trust import TrustStore
from streams.edge_clients import PollClient, StreamClient
from streams.edge_sink import DurableSink
from streams.topics import ensure_topics
from tests.conftest import Idp, Topics, WorkerProcess, collect, until
from tests.edge_support import (
    PUSH_TOKEN,
    RP2_AUDIENCE,
    RP2_TOKEN,
    RP_TOKEN,
    RecordingReceiver,
    bearer,
    edge_settings,
    edge_verifier,
    running_edge,
)

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
SESSION_REVOKED = CAEP + "session-revoked"


def poll_verifier(edge_url: str, jwks: dict[str, Any], directory: Path) -> SetVerifier:
    """The poll receiver's own trust file, from the JWKS the edge publishes."""
    (directory / "edge.jwks.json").write_bytes(orjson.dumps(jwks))
    trust = directory / "rp2-trust.toml"
    trust.write_text(f'[[issuer]]\niss = "{edge_url}"\naudience = "{RP2_AUDIENCE}"\n'
                     'jwks_file = "edge.jwks.json"\n', encoding="utf-8")
    return SetVerifier(TrustStore.from_file(trust))


def test_credential_change_in_session_revoked_out_by_push_and_poll(
    bootstrap: str, idp: Idp, topics: Topics, engine: WorkerProcess, tmp_path: Path
) -> None:
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path,
                             topic_security_events=topics.security_events,
                             topic_decisions=topics.decisions)
    intake = f"rp2-intake-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(bootstrap, [intake], 1))
    user = {"format": "email", "email": f"erin-{uuid.uuid4().hex[:6]}@example.com"}
    session = f"sess-{uuid.uuid4().hex[:8]}"
    relying_party = RecordingReceiver()
    with relying_party.running(), running_edge(settings) as edge:

        async def scenario() -> dict[str, Any]:
            push_client = StreamClient(edge.url, token=RP_TOKEN)
            await push_client.discover()
            await push_client.create_stream(
                delivery={"method": "urn:ietf:rfc:8935", "endpoint_url": relying_party.url},
                events_requested=[SESSION_REVOKED])
            poll_client = StreamClient(edge.url, token=RP2_TOKEN)
            await poll_client.discover()
            polled_stream = await poll_client.create_stream(events_requested=[SESSION_REVOKED])

            now_ms = int(time.time() * 1000)
            established = idp.claims(
                {"format": "complex", "user": user,
                 "session": {"format": "opaque", "id": session}},
                CAEP + "session-established", {"event_timestamp": now_ms - 60_000})
            changed = idp.claims(user, CAEP + "credential-change", {
                "credential_type": "password", "change_type": "update",
                "event_timestamp": now_ms, "initiating_entity": "user"})
            async with httpx.AsyncClient(timeout=30) as idp_http:
                for claims in (established, changed):
                    answer = await idp_http.post(
                        f"{edge.url}/ssf/push", content=idp.sign(claims),
                        headers={"Content-Type": "application/secevent+jwt",
                                 **bearer(PUSH_TOKEN)})
                    assert answer.status_code == 202, answer.text
            pushed_at = time.monotonic()
            await until(lambda: any(session_revoked(t) == session
                                    for t in relying_party.received),
                        20, "the session's session-revoked pushed to the RP")
            push_latency = time.monotonic() - pushed_at
            await asyncio.sleep(1)  # the subject-wide revocation may follow
            expected = sum(session_revoked(t) is not None for t in relying_party.received)

            jwks = (await idp_http_get(f"{edge.url}/ssf/jwks.json"))
            sink = DurableSink(bootstrap, idempotence=False, max_in_flight=8, timeout=5)
            await sink.start()
            poller = PollClient(polled_stream["delivery"]["endpoint_url"], token=RP2_TOKEN,
                                verifier=poll_verifier(edge.url, jwks, tmp_path), sink=sink,
                                topic=intake, tracker=poll_client.tracker)
            written: list[str] = []
            deadline = time.monotonic() + 20
            while len(written) < expected and time.monotonic() < deadline:
                outcome = await poller.poll_once(return_immediately=False)
                written += outcome.written
            await poller.flush()
            await sink.stop()
            for client in (push_client, poll_client):
                await client.aclose()
            return {"changed": changed, "written": written, "push_latency": push_latency,
                    "poll_stream": polled_stream["stream_id"]}

        result = asyncio.run(scenario())
        verifier = edge_verifier(edge.url)
        assert len(edge.edge.delivery.polls[result["poll_stream"]]) == 0  # acknowledged
    revoked = [v for v in map(verifier.verify, relying_party.received)
               if SESSION_REVOKED in v.events]
    # the engine revokes the session established before the change, and the subject's
    # sessions established before it (rule credential-changed): both as session-revoked
    by_subject = {orjson.dumps(v.claims["sub_id"], option=orjson.OPT_SORT_KEYS): v
                  for v in revoked}
    session_subject = {"format": "complex", "user": user,
                       "session": {"format": "opaque", "id": session}}
    pushed = by_subject[orjson.dumps(session_subject, option=orjson.OPT_SORT_KEYS)]
    assert set(by_subject) <= {orjson.dumps(s, option=orjson.OPT_SORT_KEYS)
                               for s in (session_subject, user)}, engine.output[-5:]
    assert pushed.header["typ"] == "secevent+jwt" and pushed.header["alg"] == "RS256"
    assert pushed.claims["iss"] == edge_url_of(settings)
    assert result["push_latency"] < 20
    assert len(result["written"]) == len(revoked)
    records = collect(bootstrap, intake, lambda r: len(r) >= len(revoked), timeout=10)
    polled = [jwt.decode(r["value"], options={"verify_signature": False}) for r in records]
    assert sorted(p["txn"] for p in polled) == sorted(v.claims["txn"] for v in revoked)
    assert all(p["aud"] == RP2_AUDIENCE for p in polled)  # the same decisions, other stream


def session_revoked(token: str) -> str | None:
    """The session a session-revoked SET names ("" for a subject-wide one), else None."""
    claims = jwt.decode(token, options={"verify_signature": False})
    if SESSION_REVOKED not in claims["events"]:
        return None
    session: dict[str, str] = claims["sub_id"].get("session", {})
    return session.get("id", "")


async def idp_http_get(url: str) -> Any:
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(url)).json()


def edge_url_of(settings: Any) -> str:
    return f"http://{settings.edge_host}:{settings.edge_port}"

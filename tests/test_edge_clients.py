"""The edge as a receiver of other transmitters: the SSF stream management client and the
RFC 8936 poll client, run against a real transmitter (an edge) over HTTP, writing into the
real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from caep.codec import SetVerifier, sign_set
from caep.keys import generate_jwk, private_key
from caep.ssf.verification import configuration_url
from caep.trust import TrustStore
from streams.broker import EmbeddedBroker
from streams.edge_clients import PollClient, StreamClient, TransmitterError
from streams.edge_sink import DurableSink
from streams.kafka_io import publish
from streams.topics import ensure_topics
from tests.conftest import Idp, collect, observe
from tests.edge_support import (
    PUSH_TOKEN,
    RP_AUDIENCE,
    RP_TOKEN,
    RunningEdge,
    bearer,
    decision,
    edge_settings,
    running_edge,
    topic_size,
)

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
ALICE = {"format": "email", "email": "alice@example.com"}
BOB = {"format": "email", "email": "bob@example.com"}


def trust_for(edge: RunningEdge, directory: Path) -> SetVerifier:
    jwks = directory / "edge.jwks.json"
    jwks.write_bytes(orjson.dumps(edge.edge.keys.jwks()))
    trust = directory / "edge-trust.toml"
    trust.write_text(f'[[issuer]]\niss = "{edge.url}"\naudience = "{RP_AUDIENCE}"\n'
                     f'jwks_file = "{jwks.name}"\n', encoding="utf-8")
    return SetVerifier(TrustStore.from_file(trust))


def test_configuration_url_per_ssf_7_2() -> None:
    assert configuration_url("https://tr.example.com") == \
        "https://tr.example.com/.well-known/ssf-configuration"
    assert configuration_url("https://tr.example.com/issuer1/") == \
        "https://tr.example.com/.well-known/ssf-configuration/issuer1"


def test_stream_client_trusts_only_the_issuer_it_discovered() -> None:
    """SSF §7.2.4 and §8.1.1.1-2: the metadata's `issuer` and every stream's `iss` (in a
    listing too) must be the issuer the receiver asked; the discovery URL carries the
    issuer's path (§7.2) and every management call the receiver's bearer token."""
    issuer = "https://tr.example.com/issuer1"
    lie = {"issuer": issuer, "iss": issuer}
    seen: list[httpx.Request] = []

    def transmitter(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.startswith("/.well-known/"):
            return httpx.Response(200, json={
                "issuer": lie["issuer"], "configuration_endpoint": f"{issuer}/stream"})
        stream = {"stream_id": "s1", "iss": lie["iss"], "aud": "https://rp.example.com",
                  "delivery": {"method": "urn:ietf:rfc:8936"}, "events_delivered": []}
        if request.method == "POST":
            return httpx.Response(201, json=stream)
        return httpx.Response(200, json=[{**stream, "iss": issuer}, stream])

    async def scenario() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(transmitter))
        client = StreamClient(issuer, token="rp-token", http=http)
        await client.discover()
        assert str(seen[0].url) == \
            "https://tr.example.com/.well-known/ssf-configuration/issuer1"
        assert (await client.create_stream())["stream_id"] == "s1"
        assert len(await client.list_streams()) == 2
        assert {r.headers.get("authorization") for r in seen[1:]} == {"Bearer rp-token"}
        lie["iss"] = "https://evil.example.com"
        with pytest.raises(TransmitterError, match="evil"):
            await client.create_stream()
        with pytest.raises(TransmitterError, match="evil"):
            await client.list_streams()  # the second stream of the listing
        lie["issuer"] = "https://evil.example.com"
        with pytest.raises(TransmitterError, match="evil"):
            await client.discover()
        await client.aclose()

    asyncio.run(scenario())


def test_poll_client_requests_as_rfc8936_says(idp: Idp) -> None:
    """RFC 8936 §2.4 as the poll client sends it: `maxEvents` and `returnImmediately` on
    every poll; a SET it rejects is reported in the next request's `setErrs` with its
    RFC 8935 code, once, and never acknowledged."""
    stranger = generate_jwk("RS256", kid=idp.jwk["kid"])
    forged = sign_set(idp.claims({"format": "email", "email": "x@example.com"}, jti="bad-1"),
                      private_key(stranger), kid=stranger["kid"])
    bodies: list[dict[str, Any]] = []

    def transmitter(request: httpx.Request) -> httpx.Response:
        bodies.append(orjson.loads(request.content))
        sets = {"bad-1": forged} if len(bodies) == 1 else {}
        return httpx.Response(200, json={"sets": sets})

    async def scenario() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(transmitter))
        sink = DurableSink("127.0.0.1:9", idempotence=False, max_in_flight=1, timeout=1)
        poller = PollClient("https://tr.example.com/poll", token="t", http=http,
                            verifier=SetVerifier(TrustStore.from_file(idp.trust_file)),
                            sink=sink, topic="unused", max_events=7)
        first = await poller.poll_once(return_immediately=False)
        assert first.rejected["bad-1"]["err"] == "invalid_key" and not first.written
        await poller.poll_once()
        await poller.poll_once()
        await http.aclose()

    asyncio.run(scenario())
    assert bodies[0] == {"maxEvents": 7}  # returnImmediately false is the default (§2.4)
    assert bodies[1]["maxEvents"] == 7 and bodies[1]["returnImmediately"] is True
    assert bodies[1]["setErrs"]["bad-1"]["err"] == "invalid_key"
    assert "ack" not in bodies[1]
    assert bodies[2] == {"maxEvents": 7, "returnImmediately": True}  # reported once


def test_stream_client_changes_delivery_events_and_status_and_deletes(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    """The management client's other calls against a real transmitter: update the delivery
    method and the events requested, pause and enable, delete; the transmitter's view
    follows each."""
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path)
    with running_edge(settings) as edge:

        async def scenario() -> None:
            client = StreamClient(edge.url, token=RP_TOKEN)
            await client.discover()
            sid = (await client.create_stream(events_requested=[CAEP + "session-revoked"])
                   )["stream_id"]
            updated = await client.update_stream(
                sid, delivery={"method": "urn:ietf:rfc:8935",
                               "endpoint_url": "http://127.0.0.1:9/events"},  # nobody
                events_requested=[CAEP + "token-claims-change"])
            assert updated["delivery"]["method"] == "urn:ietf:rfc:8935"
            assert updated["events_delivered"] == [CAEP + "token-claims-change"]
            assert await client.get_stream(sid) == updated
            assert await client.set_status(sid, "paused", "maintenance") == {
                "stream_id": sid, "status": "paused", "reason": "maintenance"}
            assert (await client.set_status(sid, "enabled"))["status"] == "enabled"
            assert [s["stream_id"] for s in await client.list_streams()] == [sid]
            await client.delete_stream(sid)
            assert await client.list_streams() == []
            await client.aclose()

        asyncio.run(scenario())
        assert edge.edge.store.owned_by("rp-1") == []


def test_stream_client_configures_and_poll_client_acks_only_what_is_written(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path)
    intake = f"intake-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(bootstrap, [intake], 2))
    with running_edge(settings) as edge:
        verifier = trust_for(edge, tmp_path)

        async def scenario() -> dict[str, Any]:
            client = StreamClient(edge.url, token=RP_TOKEN)
            metadata = await client.discover()
            assert metadata.issuer == edge.url
            stream = await client.create_stream(events_requested=[CAEP + "session-revoked"],
                                                description="pulled by the poll client")
            sid = stream["stream_id"]
            assert stream["delivery"]["method"] == "urn:ietf:rfc:8936"
            assert (await client.get_stream(sid)) == stream
            assert (await client.update_stream(sid, description="renamed"))[
                "description"] == "renamed"
            await client.add_subject(sid, ALICE)
            await client.remove_subject(sid, BOB)
            state = await client.request_verification(sid)
            unexpected = await client.http.post(f"{edge.url}/ssf/verify",
                                                headers=bearer(RP_TOKEN),
                                                json={"stream_id": sid, "state": "nobody-asked"})
            assert unexpected.status_code == 204
            await publish(bootstrap, settings.topic_decisions, [
                (None, decision(ALICE, "revoke_session", session_id="polled")),
                (None, decision(BOB, "revoke_subject", session_id=None))])
            stranger = generate_jwk("RS256", kid=edge.edge.keys.current["kid"])
            forged = sign_set({"iss": edge.url, "aud": RP_AUDIENCE, "jti": "forged-1",
                               "sub_id": ALICE, "events": {CAEP + "session-revoked": {}}},
                              private_key(stranger), kid=stranger["kid"])
            edge.edge.delivery.polls[sid].offer("forged-1", forged)

            sink = DurableSink(bootstrap, idempotence=False, max_in_flight=16, timeout=5)
            await sink.start()
            poller = PollClient(stream["delivery"]["endpoint_url"], token=RP_TOKEN,
                                verifier=verifier, sink=sink, topic=intake,
                                tracker=client.tracker)
            written: list[str] = []
            rejected: dict[str, dict[str, str]] = {}
            deadline = time.monotonic() + 15
            while len(written) < 2 and time.monotonic() < deadline:
                outcome = await poller.poll_once(return_immediately=True)
                written += outcome.written
                rejected.update(outcome.rejected)
                await asyncio.sleep(0.1)
            await poller.flush()
            await sink.stop()
            await client.aclose()
            return {"sid": sid, "state": state, "written": written, "rejected": rejected,
                    "tracker": client.tracker}

        result = asyncio.run(scenario())
        sid = result["sid"]
        queue = edge.edge.delivery.polls[sid]
        assert len(queue) == 0  # everything acknowledged or reported
        assert queue.rejected["forged-1"][0] == "invalid_key"
        assert [err[0] for jti, err in queue.rejected.items() if jti != "forged-1"] == [
            "invalid_state"]
    assert result["tracker"].is_confirmed(sid, result["state"])
    assert len(result["written"]) == 2  # the verification and alice's revocation; bob removed
    records = collect(bootstrap, intake, lambda r: len(r) >= 2, timeout=10)
    assert sorted(r["value"].count(".") for r in records) == [2, 2]
    events = [next(iter(verifier.verify(r["value"]).events)) for r in records]
    assert sorted(events) == sorted([CAEP + "session-revoked",
                                     "https://schemas.openid.net/secevent/ssf/event-type/"
                                     "verification"])


def test_a_verification_pushed_to_the_edge_is_checked_against_the_state_it_requested(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    """SSF §8.1.4.1 for push delivery: edge B configures a push stream at transmitter A
    (delivering to B's `/ssf/push`) with a StreamClient holding B's verification tracker and
    requests a verification: the SET arrives with that state, is confirmed and written. A
    verification whose state B never asked for is refused 400 `invalid_state` (A gives it
    up: a 4xx is final) and not written."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    with running_edge(edge_settings(bootstrap, idp.trust_file, a_dir)) as a:
        trust_for(a, b_dir)
        b_settings = edge_settings(bootstrap, b_dir / "edge-trust.toml", b_dir)
        with running_edge(b_settings) as b:

            async def scenario() -> tuple[str, str]:
                client = StreamClient(a.url, token=RP_TOKEN, tracker=b.edge.verification)
                await client.discover()
                sid = (await client.create_stream(delivery={
                    "method": "urn:ietf:rfc:8935", "endpoint_url": f"{b.url}/ssf/push",
                    "authorization_header": f"Bearer {PUSH_TOKEN}"}))["stream_id"]
                state = await client.request_verification(sid)
                unrequested = await client.http.post(
                    f"{a.url}/ssf/verify", headers=bearer(RP_TOKEN),
                    json={"stream_id": sid, "state": "nobody-asked"})
                assert unrequested.status_code == 204
                await client.aclose()
                return sid, state

            sid, state = asyncio.run(scenario())
            pushed = a.edge.delivery
            observe(lambda: pushed.delivered.get(sid, 0) + pushed.given_up.get(sid, 0) >= 2,
                    15, "both verification SETs pushed to B and answered")
            assert b.edge.verification.is_confirmed(sid, state)
            assert (pushed.delivered.get(sid), pushed.given_up.get(sid)) == (1, 1)
    (record,) = collect(bootstrap, b_settings.topic_security_events, lambda r: len(r) >= 1)
    written = orjson.loads(__import__("base64").urlsafe_b64decode(
        record["value"].split(".")[1] + "=="))
    assert written["events"] == {
        "https://schemas.openid.net/secevent/ssf/event-type/verification": {"state": state}}
    assert topic_size(bootstrap, b_settings.topic_security_events) == 1


def test_a_set_that_cannot_be_written_is_not_acknowledged(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path,
                             edge_poll_redeliver_seconds=0.3)
    with running_edge(settings) as edge, EmbeddedBroker() as lost:
        verifier = trust_for(edge, tmp_path)

        async def scenario() -> tuple[list[str], list[str]]:
            client = StreamClient(edge.url, token=RP_TOKEN)
            await client.discover()
            stream = await client.create_stream()
            await client.request_verification(stream["stream_id"])
            sink = DurableSink(lost.bootstrap, idempotence=False, max_in_flight=4, timeout=0.5)
            await ensure_topics(lost.bootstrap, ["intake"], 1)
            await sink.start()
            lost.stop(timeout=0.2)
            poller = PollClient(stream["delivery"]["endpoint_url"], token=RP_TOKEN,
                                verifier=verifier, sink=sink, topic="intake",
                                tracker=client.tracker)
            first = await poller.poll_once()
            await poller.flush()
            await asyncio.sleep(0.4)
            second = await poller.poll_once()
            await sink.stop()
            await client.aclose()
            return first.not_written, second.not_written

        first, second = asyncio.run(scenario())
    assert len(first) == 1 and first == second  # offered again: it was never acknowledged


def test_an_edge_drains_an_upstream_transmitters_poll_stream(
    bootstrap: str, idp: Idp, tmp_path: Path, monkeypatch: Any
) -> None:
    """Edge B lists edge A as an `[[upstream]]`: B creates a poll stream at A once (found
    again after a restart) and writes what it polls into its own security-events topic."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    upstream_settings = edge_settings(bootstrap, idp.trust_file, a_dir)
    monkeypatch.setenv("EDGE_A_TOKEN", RP_TOKEN)
    with running_edge(upstream_settings) as upstream:
        verifier_dir = b_dir / "trust"
        verifier_dir.mkdir()
        trust_for(upstream, verifier_dir)
        edge_file = b_dir / "edge.toml"
        edge_file.write_text(
            f'[[upstream]]\nissuer = "{upstream.url}"\ntoken_env = "EDGE_A_TOKEN"\n'
            f'events_requested = ["{CAEP}session-revoked"]\n', encoding="utf-8")
        downstream = edge_settings(bootstrap, verifier_dir / "edge-trust.toml", b_dir,
                                   edge_config_file=edge_file, edge_poll_max_wait_seconds=2)
        with running_edge(downstream) as edge_b:
            poller = edge_b.edge.upstreams[0]
            deadline = time.monotonic() + 10
            while poller.stream_id is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert poller.stream_id is not None
            asyncio.run(publish(bootstrap, upstream_settings.topic_decisions, [
                (None, decision(ALICE, "revoke_session", session_id="upstream"))]))
            records = collect(bootstrap, downstream.topic_security_events,
                              lambda r: len(r) >= 1, timeout=15)
            first_stream = poller.stream_id
        with running_edge(downstream) as edge_b:
            poller = edge_b.edge.upstreams[0]
            deadline = time.monotonic() + 10
            while poller.stream_id is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert poller.stream_id == first_stream  # found again, not created twice
        assert [r.stream_id for r in upstream.edge.store.owned_by("rp-1")] == [first_stream]
    (record,) = records
    claims = orjson.loads(__import__("base64").urlsafe_b64decode(
        record["value"].split(".")[1] + "=="))
    assert claims["sub_id"]["session"] == {"format": "opaque", "id": "upstream"}
    assert claims["iss"] == upstream.url

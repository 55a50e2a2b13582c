"""SSF 1.0 transmitter metadata and stream management over real HTTP, as the OpenID SSF
transmitter conformance plan checks them: metadata, stream control happy path, error
responses (broken input, invalid token), subject control; streams survive a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from caep.settings import Settings
from tests.conftest import Idp
from tests.edge_support import (
    READ_ONLY_TOKEN,
    RP2_TOKEN,
    RP_AUDIENCE,
    RP_TOKEN,
    RunningEdge,
    bearer,
    edge_settings,
    running_edge,
)

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"


@pytest.fixture
def settings(bootstrap: str, idp: Idp, tmp_path: Path) -> Settings:
    return edge_settings(bootstrap, idp.trust_file, tmp_path)


@pytest.fixture
def edge(settings: Settings) -> Any:
    with running_edge(settings) as running:
        yield running


def call(edge: RunningEdge, method: str, path: str, token: str | None = RP_TOKEN,
         **kwargs: Any) -> httpx.Response:
    headers = bearer(token) if token is not None else {}
    return httpx.request(method, f"{edge.url}{path}", headers=headers, timeout=30, **kwargs)


def create(edge: RunningEdge, body: dict[str, Any], token: str = RP_TOKEN) -> dict[str, Any]:
    answer = call(edge, "POST", "/ssf/stream", token, json=body)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def test_metadata_has_what_the_caep_interop_profile_requires(edge: RunningEdge) -> None:
    answer = httpx.get(f"{edge.url}/.well-known/ssf-configuration", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    meta = answer.json()
    assert meta["spec_version"] == "1_0"
    assert meta["issuer"] == edge.url
    assert set(meta["delivery_methods_supported"]) == {PUSH, POLL}
    assert {"spec_urn": "urn:ietf:rfc:6749"} in meta["authorization_schemes"]
    for name in ("jwks_uri", "configuration_endpoint", "status_endpoint",
                 "add_subject_endpoint", "remove_subject_endpoint", "verification_endpoint"):
        assert meta[name].startswith(edge.url + "/"), name
    assert meta["default_subjects"] == "ALL"
    assert all(value not in ([], None) for value in meta.values())  # SSF §7.2.2
    jwks = httpx.get(meta["jwks_uri"], timeout=10).json()
    (key,) = jwks["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"
    assert "d" not in key and key["kid"] == edge.edge.keys.current["kid"]


def test_stream_control_happy_path(edge: RunningEdge) -> None:
    created = create(edge, {
        "delivery": {"method": PUSH, "endpoint_url": "https://rp1.example.com/events",
                     "authorization_header": "Bearer rp-inbox"},
        "events_requested": [CAEP + "session-revoked", CAEP + "credential-change",
                             "urn:example:secevent:events:type_2"],
        "description": "sessions of rp-1",
    })
    stream_id = created["stream_id"]
    assert created["iss"] == edge.url
    assert created["aud"] == RP_AUDIENCE
    assert created["events_delivered"] == [CAEP + "session-revoked"]
    assert CAEP + "session-revoked" in created["events_supported"]
    assert created["delivery"]["endpoint_url"] == "https://rp1.example.com/events"

    read = call(edge, "GET", "/ssf/stream", params={"stream_id": stream_id})
    assert read.status_code == 200 and read.json() == created
    assert read.headers["cache-control"] == "no-store"
    assert call(edge, "GET", "/ssf/stream").json() == [created]

    patched = call(edge, "PATCH", "/ssf/stream", json={
        "stream_id": stream_id, "description": "renamed", "iss": edge.url})
    assert patched.status_code == 200
    assert patched.json() == {**created, "description": "renamed"}

    replaced = call(edge, "PUT", "/ssf/stream", json={
        "stream_id": stream_id, "delivery": {"method": POLL},
        "events_requested": [CAEP + "token-claims-change"]})
    assert replaced.status_code == 200
    body = replaced.json()
    assert body["delivery"] == {"method": POLL,
                                "endpoint_url": f"{edge.url}/ssf/poll/{stream_id}"}
    assert body["events_delivered"] == [CAEP + "token-claims-change"]
    assert "description" not in body  # missing receiver-supplied members are deleted

    status = call(edge, "GET", "/ssf/status", params={"stream_id": stream_id})
    assert status.json() == {"stream_id": stream_id, "status": "enabled"}
    paused = call(edge, "POST", "/ssf/status", json={
        "stream_id": stream_id, "status": "paused", "reason": "maintenance"})
    assert paused.status_code == 200
    assert paused.json() == {"stream_id": stream_id, "status": "paused", "reason": "maintenance"}
    assert call(edge, "GET", "/ssf/status", params={"stream_id": stream_id}).json()[
        "status"] == "paused"

    subject = {"format": "email", "email": "example.user@example.com"}
    added = call(edge, "POST", "/ssf/subjects:add",
                 json={"stream_id": stream_id, "subject": subject, "verified": True})
    assert added.status_code == 200 and added.content == b""
    removed = call(edge, "POST", "/ssf/subjects:remove",
                   json={"stream_id": stream_id, "subject": subject})
    assert removed.status_code == 204
    record = edge.edge.store.get(stream_id)
    assert record is not None and record.subjects_removed == [subject]

    verify = call(edge, "POST", "/ssf/verify", json={"stream_id": stream_id, "state": "abc"})
    assert verify.status_code == 204

    deleted = call(edge, "DELETE", "/ssf/stream", params={"stream_id": stream_id})
    assert deleted.status_code == 204
    assert call(edge, "GET", "/ssf/stream", params={"stream_id": stream_id}).status_code == 404
    assert call(edge, "GET", "/ssf/stream").json() == []


def test_a_receiver_only_sees_and_changes_its_own_streams(edge: RunningEdge) -> None:
    mine = create(edge, {"delivery": {"method": POLL}})
    theirs = create(edge, {"delivery": {"method": POLL}}, token=RP2_TOKEN)
    assert [s["stream_id"] for s in call(edge, "GET", "/ssf/stream").json()] == [
        mine["stream_id"]]
    other = theirs["stream_id"]
    attempts = [
        ("GET", "/ssf/stream", {"params": {"stream_id": other}}),
        ("PATCH", "/ssf/stream", {"json": {"stream_id": other, "description": "x"}}),
        ("PUT", "/ssf/stream", {"json": {"stream_id": other}}),
        ("DELETE", "/ssf/stream", {"params": {"stream_id": other}}),
        ("GET", "/ssf/status", {"params": {"stream_id": other}}),
        ("POST", "/ssf/status", {"json": {"stream_id": other, "status": "disabled"}}),
        ("POST", "/ssf/subjects:add", {"json": {"stream_id": other, "subject": {
            "format": "email", "email": "a@example.com"}}}),
        ("POST", "/ssf/subjects:remove", {"json": {"stream_id": other, "subject": {
            "format": "email", "email": "a@example.com"}}}),
        ("POST", "/ssf/verify", {"json": {"stream_id": other}}),
        ("POST", f"/ssf/poll/{other}", {"json": {"returnImmediately": True}}),
    ]
    for method, path, kwargs in attempts:
        answer = call(edge, method, path, **kwargs)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["err"] == "not_found"
    record = edge.edge.store.get(other)
    assert record is not None and record.status == "enabled" and record.owner == "rp-2"


def test_invalid_token_and_missing_scope(edge: RunningEdge) -> None:
    stream = create(edge, {"delivery": {"method": POLL}})
    for token in (None, "not-a-known-token"):
        for method, path in (("GET", "/ssf/stream"), ("POST", "/ssf/stream"),
                             ("GET", "/ssf/status"), ("POST", "/ssf/verify")):
            answer = call(edge, method, path, token, json={})
            assert answer.status_code == 401, (token, method, path)
            challenge = answer.headers["www-authenticate"]
            assert challenge.startswith("Bearer")
            assert ('error="invalid_token"' in challenge) == (token is not None)
    query_token = httpx.get(f"{edge.url}/ssf/stream", params={"access_token": RP_TOKEN})
    assert query_token.status_code == 400  # RFC 6750 §2.3 tokens are refused (interop)
    reader = call(edge, "GET", "/ssf/stream", READ_ONLY_TOKEN)
    assert reader.status_code == 200 and reader.json() == []
    refused = call(edge, "POST", "/ssf/stream", READ_ONLY_TOKEN, json={})
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert call(edge, "GET", "/ssf/stream", params={"stream_id": stream["stream_id"]}
                ).status_code == 200


def test_broken_input_answers_400_and_changes_nothing(edge: RunningEdge) -> None:
    stream = create(edge, {"delivery": {"method": POLL}})
    sid = stream["stream_id"]
    broken: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/ssf/stream", {"content": b"{not json"}),
        ("POST", "/ssf/stream", {"json": ["a list"]}),
        ("POST", "/ssf/stream", {"json": {"delivery": {"method": "urn:example:carrier-pigeon"}}}),
        ("POST", "/ssf/stream", {"json": {"delivery": {"method": PUSH}}}),
        ("POST", "/ssf/stream", {"json": {"delivery": {"method": PUSH,
                                                       "endpoint_url": "ftp://x"}}}),
        ("POST", "/ssf/stream", {"json": {"delivery": "push"}}),
        ("POST", "/ssf/stream", {"json": {"events_requested": "session-revoked"}}),
        ("POST", "/ssf/stream", {"json": {"stream_id": "mine"}}),
        ("POST", "/ssf/stream", {"json": {"iss": "https://evil.example"}}),
        ("PATCH", "/ssf/stream", {"json": {"description": "no stream id"}}),
        ("PATCH", "/ssf/stream", {"json": {"stream_id": sid, "aud": "https://other"}}),
        ("PATCH", "/ssf/stream", {"json": {"stream_id": sid, "events_delivered": ["x"]}}),
        ("PUT", "/ssf/stream", {"json": {"stream_id": sid, "iss": "https://evil.example"}}),
        ("DELETE", "/ssf/stream", {}),
        ("GET", "/ssf/status", {}),
        ("POST", "/ssf/status", {"json": {"stream_id": sid, "status": "sleeping"}}),
        ("POST", "/ssf/status", {"json": {"status": "paused"}}),
        ("POST", "/ssf/subjects:add", {"json": {"stream_id": sid, "subject": {"format": 3}}}),
        ("POST", "/ssf/subjects:add", {"json": {"stream_id": sid}}),
        ("POST", "/ssf/subjects:remove", {"json": {"stream_id": sid, "subject": "a@b.c"}}),
        ("POST", "/ssf/verify", {"json": {"state": "no stream"}}),
        ("POST", "/ssf/verify", {"json": {"stream_id": sid, "state": 7}}),
        ("POST", f"/ssf/poll/{sid}", {"json": {"maxEvents": -1}}),
        ("POST", f"/ssf/poll/{sid}", {"json": {"ack": "not-a-list"}}),
    ]
    for method, path, kwargs in broken:
        answer = call(edge, method, path, **kwargs)
        assert answer.status_code == 400, (method, path, kwargs, answer.text)
        assert answer.json()["err"] == "invalid_request"
    for method, path, kwargs in [
        ("GET", "/ssf/stream", {"params": {"stream_id": "nope"}}),
        ("PATCH", "/ssf/stream", {"json": {"stream_id": "nope"}}),
        ("DELETE", "/ssf/stream", {"params": {"stream_id": "nope"}}),
        ("GET", "/ssf/status", {"params": {"stream_id": "nope"}}),
        ("POST", "/ssf/verify", {"json": {"stream_id": "nope"}}),
    ]:
        assert call(edge, method, path, **kwargs).status_code == 404, (method, path)
    assert call(edge, "GET", "/ssf/stream").json() == [stream]


def test_streams_and_keys_survive_a_restart(settings: Settings) -> None:
    with running_edge(settings) as edge:
        kept = create(edge, {"delivery": {"method": POLL}, "description": "kept"})
        gone = create(edge, {"delivery": {"method": POLL}})
        assert call(edge, "POST", "/ssf/status", json={
            "stream_id": kept["stream_id"], "status": "paused"}).status_code == 200
        assert call(edge, "DELETE", "/ssf/stream",
                    params={"stream_id": gone["stream_id"]}).status_code == 204
        kid = edge.edge.keys.current["kid"]
    with running_edge(settings) as edge:
        assert call(edge, "GET", "/ssf/stream").json() == [kept]
        assert call(edge, "GET", "/ssf/status", params={"stream_id": kept["stream_id"]}
                    ).json()["status"] == "paused"
        assert edge.edge.keys.current["kid"] == kid


def test_oauth_access_tokens_of_an_authorization_server(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    """CAEP interop profile: the transmitter is an OAuth resource server; JWT access tokens
    (RFC 9068) are checked for signature, issuer, audience and expiry, and their scope."""
    import time as clock

    import jwt as pyjwt
    import orjson

    from caep.keys import generate_jwk, jwks_of, private_key

    server_key, stranger = generate_jwk("RS256", kid="as-1"), generate_jwk("RS256", kid="as-1")
    (tmp_path / "as.jwks.json").write_bytes(orjson.dumps(jwks_of(server_key)))
    edge_file = tmp_path / "edge-oauth.toml"
    edge_file.write_text(
        '[[receiver]]\nclient_id = "rp-1"\naudience = "https://rp1.example.com"\n\n'
        '[[authorization_server]]\nissuer = "https://as.example.com"\n'
        'jwks_file = "as.jwks.json"\naudience = "https://edge.example.com"\n',
        encoding="utf-8")
    settings = edge_settings(bootstrap, idp.trust_file, tmp_path, edge_config_file=edge_file)

    def token(key: dict[str, Any] = server_key, **claims: Any) -> str:
        now = int(clock.time())
        body = {"iss": "https://as.example.com", "aud": "https://edge.example.com",
                "client_id": "rp-1", "scope": "ssf.manage ssf.read", "iat": now,
                "exp": now + 300, **claims}
        return pyjwt.encode(body, private_key(key), algorithm="RS256",
                            headers={"kid": "as-1", "typ": "at+jwt"})

    with running_edge(settings) as edge:
        created = call(edge, "POST", "/ssf/stream", token(), json={})
        assert created.status_code == 201
        reader = token(scope="ssf.read")
        assert call(edge, "GET", "/ssf/stream", reader).json() == [created.json()]
        assert call(edge, "POST", "/ssf/stream", reader, json={}).status_code == 403
        for refused in (token(exp=int(clock.time()) - 120), token(aud="https://other"),
                        token(iss="https://evil.example"), token(stranger),
                        token(client_id="nobody")):
            answer = call(edge, "GET", "/ssf/stream", refused)
            assert answer.status_code == 401
            assert 'error="invalid_token"' in answer.headers["www-authenticate"]


def test_during_a_key_rotation_the_running_edge_publishes_both_keys(settings: Settings) -> None:
    """One signing key per deployment, kept in its file; after `caep edge --rotate-key` the
    edge signs with the new key and its JWKS endpoint publishes the new and the old one (so
    SETs signed before the rotation still verify) until `--retire-old-keys`."""
    from streams.edge_keys import load_keys, retire, rotate

    assert settings.edge_key_file is not None
    old = load_keys(settings.edge_key_file)
    new = rotate(settings.edge_key_file)
    with running_edge(settings) as edge:
        published = httpx.get(f"{edge.url}/ssf/jwks.json", timeout=10).json()["keys"]
        assert edge.edge.keys.current["kid"] == new.current["kid"]
    assert [k["kid"] for k in published] == [new.current["kid"], old.current["kid"]]
    assert not any("d" in k for k in published)
    retire(settings.edge_key_file)
    with running_edge(settings) as edge:
        published = httpx.get(f"{edge.url}/ssf/jwks.json", timeout=10).json()["keys"]
    assert [k["kid"] for k in published] == [new.current["kid"]]


def test_the_conformance_plans_error_modules(edge: RunningEdge) -> None:
    """The OpenID SSF transmitter plan's stream-control error modules, request for request:
    an access token `invalid:<uuid>` on create, read, update, replace and delete answers
    401; a stream id that existed (created, then deleted) answers 404 to read, update,
    replace and delete; the body `;{ broken` answers 400 to create, update and replace; a
    second create with the same token answers 201 (several streams per receiver)."""
    import uuid

    body = {"description": "Stream for OIDF Conformance Test-Suite",
            "events_requested": [CAEP + "session-revoked", CAEP + "credential-change",
                                 CAEP + "device-compliance-change"],
            "delivery": {"method": POLL}}
    gone = create(edge, body)["stream_id"]
    assert call(edge, "DELETE", "/ssf/stream", params={"stream_id": gone}).status_code == 204
    live = create(edge, body)["stream_id"]
    assert create(edge, body)["stream_id"] != live  # the duplicate-config module: 201
    invalid = f"invalid:{uuid.uuid4()}"
    changes = {**body, "stream_id": live, "description": "Updated"}
    for method, kwargs in [("POST", {"json": body}), ("GET", {"params": {"stream_id": live}}),
                           ("PATCH", {"json": changes}), ("PUT", {"json": changes}),
                           ("DELETE", {"params": {"stream_id": live}})]:
        answer = call(edge, method, "/ssf/stream", invalid, **kwargs)
        assert answer.status_code == 401, (method, answer.text)
    unknown = {**body, "stream_id": gone, "description": "Updated"}
    for method, kwargs in [("GET", {"params": {"stream_id": gone}}), ("PATCH", {"json": unknown}),
                           ("PUT", {"json": unknown}), ("DELETE", {"params": {"stream_id": gone}})]:
        answer = call(edge, method, "/ssf/stream", **kwargs)
        assert answer.status_code == 404, (method, answer.text)
        assert answer.headers["content-type"] == "application/json"
    for method in ("POST", "PATCH", "PUT"):
        answer = httpx.request(method, f"{edge.url}/ssf/stream", content=b";{ broken",
                               headers={**bearer(RP_TOKEN), "Content-Type": "application/json"},
                               timeout=30)
        assert answer.status_code == 400, (method, answer.text)
    assert call(edge, "GET", "/ssf/status", params={"stream_id": live}).json()["status"] == \
        "enabled"

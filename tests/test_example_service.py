"""End to end: a risk-spike SET through a real worker reaches the example Starlette service
(served by uvicorn on a loopback port, called over TCP) and its OpenFeature client within a
second."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import orjson
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.flag_evaluation import Reason
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync import client as sync_client
from websockets.sync.client import connect

from caep.client import Subscriber
from caep.keys import generate_jwk, jwks_of, private_key
from caep.settings import Settings
from examples.relying_service import create_app, jwt_verifier, main, serve_in_background
from streams.broker import free_port
from tests.conftest import Idp, Topics, WorkerProcess, produce

API = "https://api.example.com"
LOGIN = "https://login.example.com"
KEY = generate_jwk("RS256", kid="login-key")
RISK = "https://schemas.openid.net/secevent/caep/event-type/risk-level-change"
MFA = "urn:caep-engine:acr:mfa"
RISC_ACCOUNT_DISABLED = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"


def token(sid: str, email: str, *, acr: str = "urn:pwd", auth_time: float | None = None) -> str:
    now = int(time.time())
    claims = {"iss": LOGIN, "aud": API, "sub": email, "email": email, "sid": sid, "acr": acr,
              "auth_time": int(auth_time if auth_time is not None else now - 5), "iat": now,
              "exp": now + 600}
    return jwt.encode(claims, private_key(KEY), algorithm="RS256", headers={"kid": KEY["kid"]})


class Service:
    def __init__(self, client: httpx.Client, domain: str) -> None:
        self.http = client
        self.flags = api.get_client(domain)
        self.lock = threading.Lock()
        self.changes: list[tuple[float, EventDetails]] = []
        self.flags.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, self._changed)

    def _changed(self, details: EventDetails) -> None:
        with self.lock:
            self.changes.append((time.monotonic(), details))

    def get(self, path: str, bearer: str) -> httpx.Response:
        return self.http.get(path, headers={"Authorization": f"Bearer {bearer}"})


@pytest.fixture(scope="module")
def service(bootstrap: str, topics: Topics, engine: WorkerProcess) -> Iterator[Service]:
    settings = Settings(bootstrap=bootstrap, topic_decisions=topics.decisions,
                        topic_flags=topics.flags, group_session_timeout_seconds=2,
                        group_heartbeat_interval_seconds=0.3, group_rebalance_timeout_seconds=2)
    domain = f"example-{uuid.uuid4().hex[:6]}"
    app = create_app(Subscriber(settings, tenants=["acme"]),
                     jwt_verifier(jwks_of(KEY), issuer=LOGIN, audience=API),
                     flags_domain=domain)
    port = free_port()
    with serve_in_background(app, port), httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
        yield Service(client, domain)


def subject(email: str, sid: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"format": "complex", "user": {"format": "email", "email": email},
                           "tenant": {"format": "opaque", "id": "acme"}}
    if sid:
        out["session"] = {"format": "opaque", "id": sid}
    return out


def events_url(service: Service) -> str:
    return f"ws://{service.http.base_url.host}:{service.http.base_url.port}/events"


def open_events(service: Service, bearer: str) -> Any:
    """The /events websocket, after its first message."""
    socket = connect(events_url(service), open_timeout=5,
                     additional_headers={"Authorization": f"Bearer {bearer}"})
    assert "session_id" in orjson.loads(socket.recv(timeout=5))
    return socket


def test_a_risk_spike_restricts_the_session_within_a_second(
        service: Service, bootstrap: str, idp: Idp, topics: Topics,
        engine: WorkerProcess) -> None:
    email, sid = "ann@example.com", f"sess-{uuid.uuid4().hex[:6]}"
    produce(bootstrap, topics.session_activity, [orjson.dumps({
        "kind": "established", "tenant": "acme", "subject": subject(email), "session_id": sid,
        "observed_at": time.time(), "acr": "urn:pwd"})], key=sid.encode())
    bearer = token(sid, email)
    assert service.get("/downloads/report", bearer).text == "quarterly report\n"
    socket = open_events(service, bearer)
    assert service.get("/me", bearer).json()["flags"] == {
        "downloads.enabled": True, "admin.console": True, "elevated": False}
    context = EvaluationContext(targeting_key=sid)
    before = service.flags.get_boolean_details("downloads.enabled", False, context)
    assert (before.value, before.reason) == (True, Reason.DEFAULT)

    spike = idp.claims(subject(email, sid), RISK, {
        "principal": "USER", "current_level": "HIGH", "previous_level": "LOW",
        "event_timestamp": int(time.time() * 1000)})
    published = time.monotonic()
    produce(bootstrap, topics.security_events, [idp.sign(spike).encode()], key=b"ann")

    refused = None
    while time.monotonic() - published < 3.0:
        response = service.get("/downloads/report", bearer)
        if response.status_code == 401:
            refused = response
            break
    rejected_after = time.monotonic() - published
    assert refused is not None, "no refusal within 3 s; worker:\n" + "".join(
        engine.output[-30:])
    assert refused.headers["www-authenticate"] == (
        'Bearer error="insufficient_user_authentication", '
        'error_description="A different authentication level is required", '
        f'acr_values="{MFA}", max_age="300"')

    while time.monotonic() - published < 3.0 and not service.changes:
        time.sleep(0.005)
    assert service.changes, "no configuration-changed event within 3 s"
    fired_at, event = service.changes[0]
    assert event.flags_changed == ["downloads.enabled"]
    assert event.metadata["session_id"] == sid
    restricted = service.flags.get_boolean_details("downloads.enabled", True, context)
    assert (restricted.value, restricted.reason, restricted.variant) == (
        False, Reason.TARGETING_MATCH, "session")
    assert rejected_after < 1.0, f"the middleware refused after {rejected_after:.2f} s"
    assert fired_at - published < 1.0, f"the event fired after {fired_at - published:.2f} s"
    # the socket opened with the weak token is closed, not left open
    with pytest.raises(ConnectionClosed) as closed, socket:
        while True:
            socket.recv(timeout=1.0)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        1008, "A different authentication level is required")

    # Stepped up, the session is let in, but the engine's restriction still holds...
    stepped_up = token(sid, email, acr=MFA, auth_time=time.time())
    denied = service.get("/downloads/report", stepped_up)
    assert denied.status_code == 403 and denied.json()["reason"] == "TARGETING_MATCH"
    # ...and the service's per-session cache was dropped when the engine changed the session.
    assert service.get("/me", stepped_up).json()["flags"]["downloads.enabled"] is False

    # Then the identity provider revokes the session: the next request is refused outright.
    produce(bootstrap, topics.security_events,
            [idp.sign(idp.claims(subject(email, sid))).encode()], key=b"ann")
    deadline = time.monotonic() + 3.0
    while service.get("/me", stepped_up).status_code != 401:
        assert time.monotonic() < deadline, "the revocation never reached the service"
    last = service.get("/me", stepped_up)
    assert 'error="invalid_token"' in last.headers["www-authenticate"]
    health = service.http.get("/health").json()
    assert health["status"] == "READY" and health["sessions_tracked"] >= 1


def test_an_open_websocket_is_closed_the_moment_its_session_is_revoked(
        service: Service, bootstrap: str, idp: Idp, topics: Topics,
        engine: WorkerProcess) -> None:
    """The middleware guards the handshake; the service's on_change closes what is open."""
    email, sid = "wes@example.com", f"sess-{uuid.uuid4().hex[:6]}"
    other = f"other-{sid}"

    def connect(session: str) -> Any:
        return sync_client.connect(events_url(service), open_timeout=5, additional_headers={
            "Authorization": f"Bearer {token(session, email)}"})

    with connect(sid) as mine, connect(other) as theirs:
        assert orjson.loads(mine.recv(timeout=5))["session_id"] == sid
        assert orjson.loads(theirs.recv(timeout=5))["flags"]["downloads.enabled"] is True
        published = time.monotonic()
        produce(bootstrap, topics.security_events,
                [idp.sign(idp.claims(subject(email, sid))).encode()], key=b"wes")
        with pytest.raises(ConnectionClosed) as closed:
            mine.recv(timeout=3)
        closed_after = time.monotonic() - published
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1008, "The session has been revoked")
        assert closed_after < 1.0, f"closed {closed_after:.2f} s after the SET was published"
        with pytest.raises(TimeoutError):
            theirs.recv(timeout=0.3)  # another session of the same user stays open
    with pytest.raises(InvalidStatus) as refused:
        connect(sid).close()
    assert refused.value.response.status_code == 401
    assert 'error="invalid_token"' in refused.value.response.headers["WWW-Authenticate"]

    # Disabling the account closes the sockets of every session authenticated before it.
    with connect(other) as theirs:
        theirs.recv(timeout=5)
        disabled = idp.claims(subject(email), RISC_ACCOUNT_DISABLED, {"reason": "hijacking"})
        produce(bootstrap, topics.security_events, [idp.sign(disabled).encode()], key=b"wes")
        with pytest.raises(ConnectionClosed) as closed:
            theirs.recv(timeout=3)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1008, "The sessions of this subject have been revoked")


def test_the_example_needs_its_settings(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("EXAMPLE_JWKS_FILE", raising=False)
    assert main([]) == 2
    assert "example: error: set EXAMPLE_JWKS_FILE" in capsys.readouterr().err
    monkeypatch.setenv("EXAMPLE_JWKS_FILE", "/nonexistent.json")
    monkeypatch.setenv("EXAMPLE_ISSUER", LOGIN)
    monkeypatch.setenv("EXAMPLE_AUDIENCE", API)
    assert main([]) == 2
    assert "cannot read the JWKS file" in capsys.readouterr().err

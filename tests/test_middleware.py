"""The ASGI middleware: pure checks, then a real Starlette app behind uvicorn on a loopback
port, a real HTTP client, and decisions from a real engine worker on the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import jwt
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync import client as sync_client

from caep.client import CaepMiddleware, Principal, SessionView, Subscriber, check
from caep.client.middleware import Denial, InvalidToken, bearer_token, challenge, principal_of
from caep.decisions import Action, Decision
from caep.errors import ConfigError
from caep.keys import generate_jwk, jwks_of, private_key
from caep.policy import load_policy
from caep.settings import Settings
from examples.relying_service import email_subject, jwt_verifier, serve_in_background
from streams.broker import free_port
from tests.conftest import Idp, Topics, WorkerProcess, produce

POLICY = load_policy()
NOW = 1_800_000_000.0
API = "https://api.example.com"
TOKEN_ISSUER = "https://login.example.com"
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
TENANT = {"format": "opaque", "id": "acme"}


def view_with(*decisions: Decision) -> SessionView:
    view = SessionView(["acme"], POLICY)
    for d in decisions:
        view.apply(d, NOW)
    return view


def decided(action: Action, sid: str | None = "s1", **extra: Any) -> Decision:
    return Decision(decision_id=str(uuid.uuid4()), action=action, tenant="acme",
                    subject=extra.pop("subject", {"format": "email", "email": "a@x.example"}),
                    subject_key="acme|a", session_id=sid, reasons=[], source="test",
                    decided_at=NOW, **extra)


# -- pure -------------------------------------------------------------------------------------


def test_a_revoked_session_is_an_invalid_token() -> None:
    view = view_with(decided(Action.REVOKE_SESSION))
    assert check(Principal(session_id="s1"), view, NOW) == Denial(
        401, "invalid_token", "The session has been revoked")
    assert check(Principal(session_id="s2"), view, NOW) is None
    assert check(Principal(session_id="s1", tenant="globex"), view, NOW) is None


def test_a_revoked_subject_refuses_sessions_authenticated_before_it() -> None:
    user = {"format": "email", "email": "a@x.example"}
    view = view_with(decided(Action.REVOKE_SUBJECT, None, established_before=NOW - 10))
    before = Principal(session_id="new", subject=user, auth_time=NOW - 11)
    after = Principal(session_id="new", subject=user, auth_time=NOW - 9)
    unknown = Principal(session_id="new", subject=user)
    assert check(before, view, NOW) == Denial(
        401, "invalid_token", "The sessions of this subject have been revoked")
    assert check(after, view, NOW) is None
    assert check(unknown, view, NOW) is not None, "no auth_time: fail closed"


def test_a_session_past_the_policys_absolute_lifetime_is_refused() -> None:
    old = NOW - POLICY.lifetimes.absolute_seconds - 60
    denial = check(Principal(session_id="s9", auth_time=old), view_with(), NOW)
    assert denial is not None and denial.description == "The session is past its lifetime"


def test_step_up_is_asked_until_a_token_proves_it() -> None:
    """RFC 9470: the acr asked for, and with a max_age an auth_time after the engine asked
    (a token from before the risk does not answer it) no older than max_age."""
    view = view_with(decided(Action.STEP_UP, required_acr="urn:mfa", max_age=300))
    ask = Denial(401, "insufficient_user_authentication",
                 "A different authentication level is required", acr_values="urn:mfa",
                 max_age=300)

    def answer(now: float, **claims: Any) -> Denial | None:
        return check(Principal(session_id="s1", **claims), view, now)

    assert answer(NOW, acr="urn:pwd", auth_time=NOW) == ask
    assert answer(NOW, acr="urn:mfa") == ask, "no auth_time: nothing proves it is recent"
    assert answer(NOW, acr="urn:mfa", auth_time=NOW - 200) == ask, "before the engine asked"
    assert answer(NOW + 20, acr="urn:mfa", auth_time=NOW - 6) == ask
    assert answer(NOW + 20, acr="urn:mfa ", auth_time=NOW + 10) == ask, "exactly the acr"
    assert answer(NOW + 20, acr="urn:mfa", auth_time=NOW + 10) is None
    assert answer(NOW + 2, acr="urn:mfa", auth_time=NOW - 4) is None, "within the leeway"
    assert answer(NOW + 10 + 305, acr="urn:mfa", auth_time=NOW + 10) is None
    assert answer(NOW + 10 + 306, acr="urn:mfa", auth_time=NOW + 10) == ask, (
        "older than max_age: authenticate again")
    assert check(Principal(session_id="s2", acr="urn:pwd"), view, NOW) is None

    fresh = view_with(decided(Action.STEP_UP, required_acr="urn:mfa", max_age=0))
    assert check(Principal(session_id="s1", acr="urn:mfa", auth_time=NOW - 60), fresh,
                 NOW) is not None
    assert check(Principal(session_id="s1", acr="urn:mfa", auth_time=NOW + 1), fresh,
                 NOW + 2) is None
    assert check(Principal(session_id="s1", acr="urn:mfa", auth_time=NOW + 1), fresh,
                 NOW + 7) is not None
    any_age = view_with(decided(Action.STEP_UP, required_acr="urn:mfa"))
    assert check(Principal(session_id="s1", acr="urn:mfa"), any_age, NOW) is None
    assert check(Principal(session_id="s1", acr="urn:mfa", auth_time=NOW - 9999), any_age,
                 NOW) is None
    assert check(Principal(session_id="s1", acr="urn:pwd"), any_age, NOW) is not None


def test_challenges_are_rfc_6750_and_rfc_9470_headers() -> None:
    assert challenge(Denial(401, "invalid_token", "The session has been revoked")) == (
        'Bearer error="invalid_token", error_description="The session has been revoked"')
    assert challenge(Denial(401, "insufficient_user_authentication", "A different "
                            "authentication level is required", "urn:mfa", 300), "api") == (
        'Bearer realm="api", error="insufficient_user_authentication", '
        'error_description="A different authentication level is required", '
        'acr_values="urn:mfa", max_age="300"')
    assert challenge(Denial(401, "invalid_token", 'say "hi"\\\n')) == (
        'Bearer error="invalid_token", error_description="say \\"hi\\"\\\\?"')


def test_bearer_tokens_and_claims_are_read_strictly() -> None:
    def scope(value: bytes) -> dict[str, Any]:
        return {"headers": [(b"authorization", value)]}

    assert bearer_token(scope(b"Bearer abc")) == "abc"
    assert bearer_token(scope(b"bearer  abc ")) == "abc"
    assert bearer_token(scope(b"Basic dXNlcg==")) is None
    assert bearer_token({"headers": []}) is None
    with pytest.raises(InvalidToken):
        bearer_token(scope(b"Bearer "))
    with pytest.raises(InvalidToken, match="sid"):
        principal_of({"sid": 7})
    with pytest.raises(InvalidToken, match="auth_time"):
        principal_of({"sid": "s", "auth_time": "yesterday"})
    principal = principal_of({"sid": "s", "iss": "https://i", "sub": "u", "acr": "a",
                              "auth_time": 5, "tid": "acme"}, tenant_claim="tid")
    assert (principal.session_id, principal.tenant, principal.acr, principal.auth_time) == (
        "s", "acme", "a", 5.0)
    assert principal.subject == {"format": "iss_sub", "iss": "https://i", "sub": "u"}


def test_the_middleware_needs_one_way_to_find_the_principal() -> None:
    subscriber = Subscriber(Settings(bootstrap="127.0.0.1:1"), tenants=["acme"])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    with pytest.raises(ConfigError, match="exactly one"):
        CaepMiddleware(app, subscriber)
    with pytest.raises(ConfigError, match="exactly one"):
        CaepMiddleware(app, subscriber, verify=lambda t: {}, extract=lambda s: None)
    with pytest.raises(ConfigError, match="clock_skew"):
        CaepMiddleware(app, subscriber, verify=lambda t: {},
                       leeway=subscriber.view.clock_skew + 1)


# -- a real app, a real server, a real worker ---------------------------------------------------

KEY = generate_jwk("RS256", kid="login-key")


def token(sid: str, email: str, *, acr: str = "urn:pwd", auth_time: float | None = None,
          **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": TOKEN_ISSUER, "aud": API, "sub": email, "email": email, "sid": sid,
            "acr": acr, "auth_time": int(auth_time if auth_time is not None else now - 1),
            "iat": now, "exp": now + 600, **claims}
    return jwt.encode(body, private_key(KEY), algorithm="RS256", headers={"kid": KEY["kid"]})


def protected_app(subscriber: Subscriber, verify: Callable[[str], Mapping[str, Any]]) -> Any:
    """A plain Starlette app: the middleware is the only thing that knows of the engine."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await subscriber.start()
        try:
            yield
        finally:
            await subscriber.stop()

    async def hello(request: Request) -> Response:
        principal = getattr(request.state, "caep_principal", None)
        return JSONResponse({"session": principal.session_id if principal else None})

    async def echo(websocket: WebSocket) -> None:
        principal = getattr(websocket.state, "caep_principal", None)
        await websocket.accept()
        await websocket.send_text(principal.session_id if principal else "-")
        await websocket.close()

    app = Starlette(routes=[Route("/", hello), WebSocketRoute("/ws", echo)], lifespan=lifespan)
    app.add_middleware(CaepMiddleware, subscriber=subscriber, verify=verify,
                       subject=email_subject, realm="example")
    return app


def subscriber_settings(bootstrap: str, topics: Topics) -> Settings:
    return Settings(bootstrap=bootstrap, topic_decisions=topics.decisions,
                    topic_flags=topics.flags, group_session_timeout_seconds=2,
                    group_heartbeat_interval_seconds=0.3, group_rebalance_timeout_seconds=2)


@pytest.fixture(scope="module")
def service(bootstrap: str, topics: Topics, engine: WorkerProcess) -> Iterator[httpx.Client]:
    subscriber = Subscriber(subscriber_settings(bootstrap, topics), tenants=["acme"])
    verify = jwt_verifier(jwks_of(KEY), issuer=TOKEN_ISSUER, audience=API)
    port = free_port()
    with serve_in_background(protected_app(subscriber, verify), port), httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
        yield client


def subject(email: str, sid: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"format": "complex", "user": {"format": "email", "email": email},
                           "tenant": TENANT}
    if sid is not None:
        out["session"] = {"format": "opaque", "id": sid}
    return out


def until_status(client: httpx.Client, bearer: str, status: int, engine: WorkerProcess,
                 within: float = 5.0) -> httpx.Response:
    deadline = time.monotonic() + within
    while True:
        response = client.get("/", headers={"Authorization": f"Bearer {bearer}"})
        if response.status_code == status:
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"still {response.status_code} after {within} s; worker:\n"
                                 + "".join(engine.output[-30:]))
        time.sleep(0.02)


def handshake(client: httpx.Client, bearer: str) -> tuple[int, Any, str]:
    """A websocket handshake to /ws over a real connection: (101, None, the first message) or
    the refusal's (status, headers, body)."""

    url = f"ws://{client.base_url.host}:{client.base_url.port}/ws"
    try:
        with sync_client.connect(url, additional_headers={"Authorization": f"Bearer {bearer}"},
                                 open_timeout=5) as ws:
            return 101, None, str(ws.recv(timeout=5))
    except InvalidStatus as refused:
        response = refused.response
        return response.status_code, response.headers, bytes(response.body or b"").decode()


def test_requests_without_credentials_pass_and_bad_tokens_are_refused(
        service: httpx.Client) -> None:
    assert service.get("/").json() == {"session": None}
    response = service.get("/", headers={"Authorization": "Bearer not.a.jwt"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'Bearer realm="example", error="invalid_token", '
        'error_description="the bearer token did not verify"')
    forged = jwt.encode({"sid": "x"}, private_key(generate_jwk(kid="login-key")),
                        algorithm="RS256", headers={"kid": "login-key"})
    assert service.get("/", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_a_revoked_session_is_refused_with_invalid_token(
        service: httpx.Client, bootstrap: str, idp: Idp, topics: Topics,
        engine: WorkerProcess) -> None:
    sid = f"sess-{uuid.uuid4().hex[:6]}"
    bearer = token(sid, "rita@example.com")
    response = service.get("/", headers={"Authorization": f"Bearer {bearer}"})
    assert response.status_code == 200 and response.json() == {"session": sid}

    produce(bootstrap, topics.security_events,
            [idp.sign(idp.claims(subject("rita@example.com", sid))).encode()])
    refused = until_status(service, bearer, 401, engine)
    assert refused.headers["www-authenticate"] == (
        'Bearer realm="example", error="invalid_token", '
        'error_description="The session has been revoked"')
    assert refused.json() == {"error": "invalid_token",
                              "error_description": "The session has been revoked"}
    other = token(f"other-{sid}", "rita@example.com")
    assert service.get("/", headers={"Authorization": f"Bearer {other}"}).status_code == 200

    # A websocket handshake gets the same answer, challenge included, over a real connection.
    status, headers, body = handshake(service, bearer)
    assert status == 401, (status, body)
    assert headers["WWW-Authenticate"] == refused.headers["www-authenticate"]
    assert orjson.loads(body)["error"] == "invalid_token"
    assert handshake(service, other) == (101, None, f"other-{sid}")


def test_a_risk_spike_asks_for_step_up_until_the_token_shows_it(
        service: httpx.Client, bootstrap: str, idp: Idp, topics: Topics,
        engine: WorkerProcess) -> None:
    sid = f"sess-{uuid.uuid4().hex[:6]}"
    bearer = token(sid, "sam@example.com")
    assert service.get("/", headers={"Authorization": f"Bearer {bearer}"}).status_code == 200
    spike = idp.claims(subject("sam@example.com", sid), CAEP + "risk-level-change",
                       {"principal": "USER", "current_level": "HIGH",
                        "event_timestamp": int(time.time() * 1000)})
    assert handshake(service, bearer) == (101, None, sid)
    produce(bootstrap, topics.security_events, [idp.sign(spike).encode()])
    refused = until_status(service, bearer, 401, engine)
    assert refused.headers["www-authenticate"] == (
        'Bearer realm="example", error="insufficient_user_authentication", '
        'error_description="A different authentication level is required", '
        'acr_values="urn:caep-engine:acr:mfa", max_age="300"')
    status, headers, _ = handshake(service, bearer)
    assert (status, headers["WWW-Authenticate"]) == (401, refused.headers["www-authenticate"])

    # The right acr from before the engine asked does not answer it; authenticating again does.
    mfa = "urn:caep-engine:acr:mfa"
    earlier = token(sid, "sam@example.com", acr=mfa, auth_time=time.time() - 60)
    assert service.get("/", headers={"Authorization": f"Bearer {earlier}"}).status_code == 401
    stepped_up = token(sid, "sam@example.com", acr=mfa, auth_time=time.time())
    response = service.get("/", headers={"Authorization": f"Bearer {stepped_up}"})
    assert response.status_code == 200, response.text
    assert handshake(service, stepped_up) == (101, None, sid)


def test_revoking_a_subject_refuses_its_older_sessions_only(
        service: httpx.Client, bootstrap: str, idp: Idp, topics: Topics,
        engine: WorkerProcess) -> None:
    email = f"una-{uuid.uuid4().hex[:6]}@example.com"
    before = token("una-phone", email, auth_time=time.time() - 30)
    assert service.get("/", headers={"Authorization": f"Bearer {before}"}).status_code == 200
    claims = idp.claims(subject(email), RISC + "account-disabled", {"reason": "hijacking"})
    produce(bootstrap, topics.security_events, [idp.sign(claims).encode()])
    refused = until_status(service, before, 401, engine)
    assert "sessions of this subject have been revoked" in refused.headers["www-authenticate"]
    later = token("una-laptop", email, auth_time=time.time() + 5)
    assert service.get("/", headers={"Authorization": f"Bearer {later}"}).status_code == 200


def test_until_the_view_has_caught_up_requests_with_credentials_get_503() -> None:
    subscriber = Subscriber(Settings(bootstrap="127.0.0.1:1"), tenants=["acme"])
    verify = jwt_verifier(jwks_of(KEY), issuer=TOKEN_ISSUER, audience=API)

    async def hello(request: Request) -> Response:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/", hello)])  # its subscriber is never started
    app.add_middleware(CaepMiddleware, subscriber=subscriber, verify=verify)
    port = free_port()
    with serve_in_background(app, port), httpx.Client(
            base_url=f"http://127.0.0.1:{port}") as client:
        bearer = token("s1", "x@example.com")
        response = client.get("/", headers={"Authorization": f"Bearer {bearer}"})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["error"] == "temporarily_unavailable"
        assert client.get("/").status_code == 200
        status, headers, _ = handshake(client, bearer)
        assert (status, headers["Retry-After"]) == (503, "1")


def test_websocket_handshakes_are_refused_with_a_close_frame_and_lifespan_passes() -> None:
    subscriber = Subscriber(Settings(bootstrap="127.0.0.1:1"), tenants=["acme"])
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    middleware = CaepMiddleware(app, subscriber, extract=lambda scope: Principal("s1"))
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    async def scenario() -> None:
        await middleware({"type": "websocket", "headers": []}, receive, send)
        await middleware({"type": "lifespan"}, receive, send)

    asyncio.run(scenario())
    assert sent == [{"type": "websocket.close", "code": 1013,
                     "reason": "Session decisions are unavailable (NOT_READY)"}]
    assert reached == ["lifespan"]

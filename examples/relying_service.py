"""An example relying service (Starlette) that uses all three client pieces of caep-engine:

- a `Subscriber` keeps the engine's decisions in memory and drops this service's per-session
  cache whenever one of them changes a session (`on_change`);
- `CaepMiddleware` refuses revoked sessions (401 invalid_token) and sessions the engine wants
  stepped up (401 insufficient_user_authentication, RFC 9470) on every request;
- `CaepProvider` answers OpenFeature flag evaluations per session: `/downloads/report` is
  served only while `downloads.enabled` holds for the caller's session;
- `/events` is a websocket that pushes the session's flags whenever the engine changes them,
  and is closed (1008, policy violation) the moment the engine revokes the session or its
  subject, or asks for a step-up: the middleware only guards the handshake, so open sockets are
  re-checked from `on_change` with the same rule (`caep.client.check`).

Run it against the engine's cluster (tokens are JWTs with `sid`, `email`, `acr`, `auth_time`
from the issuer whose keys are in the JWKS file):

    CAEP_BOOTSTRAP=127.0.0.1:9092 CAEP_CLIENT_TENANTS=acme \\
    EXAMPLE_JWKS_FILE=idp.jwks.json EXAMPLE_ISSUER=https://idp.example.com \\
    EXAMPLE_AUDIENCE=https://api.example.com python -m examples.relying_service --port 8000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jwt
import orjson
import uvicorn
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.no_op_provider import NoOpProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from caep.client import CaepMiddleware, CaepProvider, Change, Principal, Subscriber, check
from caep.errors import CaepError, ConfigError


def jwt_verifier(jwks: Mapping[str, Any], *, issuer: str,
                 audience: str) -> Callable[[str], Mapping[str, Any]]:
    """The application's own token check: signature by a key of the JWKS, issuer, audience,
    expiry. The middleware only reads what this returns."""
    keys = {k["kid"]: jwt.PyJWK(dict(k)) for k in jwks.get("keys", []) if "kid" in k}

    def verify(token: str) -> Mapping[str, Any]:
        key = keys[jwt.get_unverified_header(token).get("kid")]
        claims: dict[str, Any] = jwt.decode(
            token, key.key, algorithms=[key.algorithm_name], audience=audience, issuer=issuer,
            options={"require": ["exp", "iat", "sub"]})
        return claims

    return verify


def email_subject(claims: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The identity provider names users by email in its SETs, so the service does too."""
    email = claims.get("email")
    return {"format": "email", "email": email} if isinstance(email, str) and email else None


def create_app(subscriber: Subscriber, verify: Callable[[str], Mapping[str, Any]], *,
               flags_domain: str | None = None) -> Starlette:
    """The service. Its lifespan starts the subscriber (returning once it has caught up) and
    registers the OpenFeature provider; `flags_domain` picks an OpenFeature domain."""
    provider = CaepProvider(subscriber)
    flags = api.get_client(flags_domain)
    profiles: dict[str, dict[str, Any]] = {}  # per-session cache, dropped on any engine change
    sockets: dict[WebSocket, Principal] = {}  # open /events sockets and who they are for

    async def react(change: Change) -> None:
        """Drop the cache, then re-check every open socket the change may concern."""
        if change.session_id is not None:
            profiles.pop(change.session_id, None)
        else:  # a subject revocation: which sessions are its is not known here
            profiles.clear()
        now = time.time()
        for socket, who in list(sockets.items()):
            if change.session_id is not None and who.session_id != change.session_id:
                continue
            denial = check(who, subscriber.view, now)
            # The client may have gone meanwhile: then there is nothing left to close.
            with contextlib.suppress(RuntimeError, OSError):
                if denial is not None:
                    sockets.pop(socket, None)
                    await socket.close(code=1008, reason=denial.description)
                elif change.flags_changed and who.session_id is not None:
                    await socket.send_json({"flags": subscriber.flags(who.session_id),
                                            "changed": sorted(change.flags_changed)})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await subscriber.start()
        unsubscribe = subscriber.on_change(react)
        api.set_provider(provider, flags_domain)
        try:
            yield
        finally:
            api.set_provider(NoOpProvider(), flags_domain)
            unsubscribe()
            await subscriber.stop()

    def principal(request: Request) -> Principal | None:
        found = getattr(request.state, "caep_principal", None)
        return found if isinstance(found, Principal) and found.session_id else None

    def unauthenticated() -> Response:
        return JSONResponse({"error": "a bearer token with a sid claim is required"}, 401,
                            headers={"WWW-Authenticate": "Bearer"})

    async def me(request: Request) -> Response:
        who = principal(request)
        if who is None or who.session_id is None:
            return unauthenticated()
        sid = who.session_id
        if sid not in profiles:
            context = EvaluationContext(targeting_key=sid)
            profiles[sid] = {
                "session_id": sid,
                "subject": dict(who.subject or {}),
                "flags": {key: flags.get_boolean_value(key, False, context)
                          for key in ("downloads.enabled", "admin.console", "elevated")},
            }
        return JSONResponse(profiles[sid])

    async def report(request: Request) -> Response:
        who = principal(request)
        if who is None or who.session_id is None:
            return unauthenticated()
        details = flags.get_boolean_details(
            "downloads.enabled", False, EvaluationContext(targeting_key=who.session_id))
        if not details.value:
            return JSONResponse({"error": "downloads are disabled for this session",
                                 "reason": str(details.reason)}, 403)
        return PlainTextResponse("quarterly report\n")

    async def events(websocket: WebSocket) -> None:
        who = getattr(websocket.state, "caep_principal", None)
        if not isinstance(who, Principal) or who.session_id is None:
            await websocket.close(code=1008, reason="a bearer token with a sid claim is required")
            return
        await websocket.accept()
        sockets[websocket] = who
        try:
            await websocket.send_json({"session_id": who.session_id,
                                       "flags": subscriber.flags(who.session_id)})
            while True:  # the client has nothing to say; this waits for it to leave
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            sockets.pop(websocket, None)

    async def health(request: Request) -> Response:
        body = {"status": subscriber.status.value, "reason": subscriber.reason,
                "sessions_tracked": len(subscriber.view),
                "ignored_other_tenants": subscriber.view.counters.other_tenant,
                "malformed": subscriber.view.counters.malformed}
        return JSONResponse(body, 200 if subscriber.status.value in ("READY", "STALE") else 503)

    app = Starlette(routes=[Route("/me", me), Route("/downloads/report", report),
                            Route("/health", health), WebSocketRoute("/events", events)],
                    lifespan=lifespan)
    app.add_middleware(CaepMiddleware, subscriber=subscriber, verify=verify,
                       subject=email_subject)
    return app


@contextlib.contextmanager
def serve_in_background(app: Any, port: int, host: str = "127.0.0.1",
                        startup_timeout: float = 60.0) -> Iterator[uvicorn.Server]:
    """Run `app` under uvicorn on a thread of its own until the block ends (tests, notebooks).
    Returns once the server listens, which is after the app's lifespan started."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, lifespan="on",
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="example-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError(f"the service did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(30)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.relying_service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        jwks_file = os.environ.get("EXAMPLE_JWKS_FILE")
        issuer, audience = os.environ.get("EXAMPLE_ISSUER"), os.environ.get("EXAMPLE_AUDIENCE")
        if not (jwks_file and issuer and audience):
            raise ConfigError("set EXAMPLE_JWKS_FILE, EXAMPLE_ISSUER and EXAMPLE_AUDIENCE")
        try:
            jwks = orjson.loads(Path(jwks_file).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the JWKS file {jwks_file}: {exc}") from None
        app = create_app(Subscriber(), jwt_verifier(jwks, issuer=issuer, audience=audience))
    except CaepError as exc:
        print(f"example: error: {exc.description}", file=sys.stderr)
        return 2
    except ValueError as exc:  # pydantic's ValidationError of a bad CAEP_* variable
        print(f"example: error: invalid settings: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())

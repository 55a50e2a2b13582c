"""Pure ASGI enforcement of the engine's decisions (Starlette, FastAPI, any ASGI app).

For each HTTP or websocket request that carries a principal (by default: the bearer JWT's
`sid` and `sub`, verified by the application's own `verify` function), the subscriber's view
answers, with no network call:

- a revoked session, a revoked subject, or a session past the policy's absolute lifetime:
  401 with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750 §3.1);
- a session the engine wants stepped up, whose token does not prove that authentication (see
  `check`): 401 with `error="insufficient_user_authentication"`, `acr_values` and `max_age`
  (RFC 9470 §3);
- while the view is not caught up, or in ERROR: 503 with `Retry-After` (fail closed); while it
  is STALE the last known view keeps answering unless `serve_when_stale=False`.

A request without credentials passes untouched: authenticating is the application's job, this
middleware only applies what the engine decided. A websocket handshake is refused with the same
HTTP response where the server offers the ASGI `websocket.http.response` extension (uvicorn
does), else with a close before accepting (the server answers 403); sockets already open are
the application's to close, from `Subscriber.on_change` (see `examples/relying_service.py`).
The principal is left in `scope["state"]["caep_principal"]` (Starlette: `request.state`).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from types import CoroutineType
from typing import Any

import orjson

from caep.client.subscriber import Status, Subscriber
from caep.client.view import SessionView, StepUp
from caep.errors import CaepError, ConfigError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is for, as far as the engine's decisions go."""

    session_id: str | None = None
    subject: Mapping[str, Any] | None = None
    tenant: str | None = None
    acr: str | None = None
    auth_time: float | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


class InvalidToken(CaepError):
    """The request's credentials cannot be used: answered 401 `invalid_token`."""


Extractor = Callable[[Scope], Principal | Awaitable[Principal | None] | None]
Verifier = Callable[[str], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]
SubjectOf = Callable[[Mapping[str, Any]], Mapping[str, Any] | None]
ExtractAsync = Callable[[Scope], Awaitable[Principal | None]]


def bearer_token(scope: Scope) -> str | None:
    """The RFC 6750 bearer token of the `Authorization` header; None without one."""
    for name, value in scope.get("headers") or ():
        if name.lower() != b"authorization":
            continue
        header: str = bytes(value).decode("latin-1")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token.strip()
        if not token:
            raise InvalidToken("the bearer token is empty")
        return token
    return None


def iss_sub(claims: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The default subject: RFC 9493 `iss_sub` from the token's `iss` and `sub`."""
    iss, sub = claims.get("iss"), claims.get("sub")
    if isinstance(iss, str) and iss and isinstance(sub, str) and sub:
        return {"format": "iss_sub", "iss": iss, "sub": sub}
    return None


def _text_claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"the token's {name} claim must be a non-empty string")
    return value


def principal_of(claims: Mapping[str, Any], *, subject: SubjectOf = iss_sub,
                 tenant_claim: str | None = None) -> Principal:
    """A principal from verified JWT claims: `sid`, the subject, `acr`, `auth_time`."""
    auth_time = claims.get("auth_time")
    if auth_time is not None and (isinstance(auth_time, bool)
                                  or not isinstance(auth_time, int | float)):
        raise InvalidToken("the token's auth_time claim must be a number")
    return Principal(
        session_id=_text_claim(claims, "sid"), subject=subject(claims),
        tenant=_text_claim(claims, tenant_claim) if tenant_claim else None,
        acr=_text_claim(claims, "acr"),
        auth_time=float(auth_time) if auth_time is not None else None, claims=claims)


def bearer_claims(verify: Verifier, *, subject: SubjectOf = iss_sub,
                  tenant_claim: str | None = None) -> ExtractAsync:
    """The default extractor: the bearer JWT, verified by `verify` (the application's: it
    returns the claims or raises), read by `principal_of`."""

    async def extract(scope: Scope) -> Principal | None:
        token = bearer_token(scope)
        if token is None:
            return None
        try:
            claims = verify(token)
            if type(claims) is not dict and inspect.isawaitable(claims):  # a dict: never
                claims = await claims
        except Exception:  # whatever the verifier raises, the token is not usable
            raise InvalidToken("the bearer token did not verify") from None
        if type(claims) is not dict and not isinstance(claims, Mapping):
            raise InvalidToken("the bearer token's claims are not a JSON object")
        return principal_of(claims, subject=subject, tenant_claim=tenant_claim)

    return extract


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a request is refused, and the RFC 6750 / RFC 9470 parameters to say so."""

    status: int
    error: str
    description: str
    acr_values: str | None = None
    max_age: int | None = None


def check(principal: Principal, view: SessionView, now: float, *,
          leeway: float = 5.0) -> Denial | None:
    """What the engine's decisions say about this principal: None, or why it is refused.

    A step-up is satisfied only by a token that proves it: its `acr` is exactly the one
    required and, when the engine set a `max_age`, its `auth_time` is not before the step-up
    decision (the user authenticated again after the engine asked) and at most `max_age`
    seconds old (RFC 9470 §3: the allowable time since the last active authentication);
    without a `max_age` the `acr` alone satisfies it. `leeway` absorbs clock skew between the
    identity provider, the engine and this service. Raises InvalidRequest for a subject that
    is not RFC 9493."""
    sid, tenant = principal.session_id, principal.tenant
    if sid is not None and view.is_revoked(sid, tenant):
        return Denial(401, "invalid_token", "The session has been revoked")
    if principal.subject is not None and view.is_revoked_subject(
            principal.subject, tenant, principal.auth_time):
        return Denial(401, "invalid_token", "The sessions of this subject have been revoked")
    if principal.auth_time is not None and now - principal.auth_time > view.lifetime + leeway:
        return Denial(401, "invalid_token", "The session is past its lifetime")
    step = view.step_up(sid, tenant) if sid is not None else None
    if step is None or _proves(principal, step, now, leeway):
        return None
    return Denial(401, "insufficient_user_authentication",
                  "A different authentication level is required", acr_values=step.acr,
                  max_age=step.max_age)


def _proves(principal: Principal, step: StepUp, now: float, leeway: float) -> bool:
    """Whether the token shows the authentication a step-up asks for (see `check`)."""
    if principal.acr != step.acr:
        return False
    if step.max_age is None:
        return True
    at = principal.auth_time
    return at is not None and at >= step.decided_at - leeway and (
        now - at <= step.max_age + leeway)


def _quoted(value: str) -> str:
    """An RFC 9110 quoted-string of printable ASCII (anything else becomes `?`)."""
    clean = "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in value)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(denial: Denial, realm: str | None = None) -> str:
    """The `WWW-Authenticate` value for a 401 denial."""
    params = [("realm", realm)] if realm else []
    params += [("error", denial.error), ("error_description", denial.description)]
    if denial.acr_values is not None:
        params.append(("acr_values", denial.acr_values))
    if denial.max_age is not None:
        params.append(("max_age", str(denial.max_age)))
    return "Bearer " + ", ".join(f"{name}={_quoted(value)}" for name, value in params)


class CaepMiddleware:
    """`app.add_middleware(CaepMiddleware, subscriber=subscriber, verify=verify_jwt)`.

    Give `verify` (token -> verified claims, or raise) to read the bearer JWT, or `extract`
    (ASGI scope -> Principal or None) to find the session another way.
    """

    def __init__(self, app: ASGIApp, subscriber: Subscriber, *, verify: Verifier | None = None,
                 extract: Extractor | None = None, subject: SubjectOf = iss_sub,
                 tenant_claim: str | None = None, realm: str | None = None,
                 serve_when_stale: bool = True, leeway: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.extract: Extractor
        if extract is not None and verify is None:
            self.extract = extract
        elif verify is not None and extract is None:
            self.extract = bearer_claims(verify, subject=subject, tenant_claim=tenant_claim)
        else:
            raise ConfigError("CaepMiddleware needs exactly one of verify= (verifies the bearer "
                              "JWT and returns its claims) or extract= (ASGI scope -> Principal)")
        if not 0 <= leeway <= subscriber.view.clock_skew:
            raise ConfigError(f"leeway must be between 0 and the view's clock_skew "
                              f"({subscriber.view.clock_skew:g} s), which keeps revocations "
                              "longer than any token the leeway lets in")
        self.app = app
        self.subscriber = subscriber
        self.realm = realm
        self.serve_when_stale = serve_when_stale
        self.leeway = leeway
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            found = self.extract(scope)
            # The default extractor is a coroutine function: skip the general check for it.
            principal = await found if (type(found) is CoroutineType
                                        or inspect.isawaitable(found)) else found
        except CaepError as exc:
            await self._refuse(scope, send, Denial(401, "invalid_token", exc.description))
            return
        if principal is None:
            await self.app(scope, receive, send)
            return
        status = self.subscriber.status
        if status in (Status.NOT_READY, Status.ERROR) or (
                status is Status.STALE and not self.serve_when_stale):
            await self._refuse(scope, send, Denial(
                503, "temporarily_unavailable",
                f"Session decisions are unavailable ({status.value})"))
            return
        try:
            denial = check(principal, self.subscriber.view, self.clock(), leeway=self.leeway)
        except CaepError:
            denial = Denial(401, "invalid_token", "The token's subject is not usable")
        if denial is not None:
            await self._refuse(scope, send, denial)
            return
        scope.setdefault("state", {})["caep_principal"] = principal
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, denial: Denial) -> None:
        prefix = "http"
        if scope["type"] == "websocket":
            if "websocket.http.response" not in (scope.get("extensions") or {}):
                await send({"type": "websocket.close",
                            "code": 1013 if denial.status == 503 else 1008,
                            "reason": denial.description})
                return
            prefix = "websocket.http"  # the handshake's own HTTP answer, challenge included
        body = orjson.dumps({"error": denial.error, "error_description": denial.description})
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
        if denial.status == 401:
            headers.append((b"www-authenticate", challenge(denial, self.realm).encode()))
        else:
            headers.append((b"retry-after", b"1"))
        await send({"type": f"{prefix}.response.start", "status": denial.status,
                    "headers": headers})
        await send({"type": f"{prefix}.response.body", "body": body})

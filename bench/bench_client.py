"""Relying-service benchmark: what `caep.client` costs a service per request.

- `is_revoked` look-ups per second per core on a view holding a realistic load of decisions
  (half the look-ups hit a revoked session), next to the bare `dict` membership test the view
  is built on (the ceiling).
- OpenFeature flag evaluations per second per core through the SDK with `CaepProvider`, next
  to the same SDK with its own `InMemoryProvider` (the SDK's cost alone: the ceiling), and
  the provider called directly.
- The middleware's cost per request: the same Starlette app driven in-process by an ASGI
  driver (no server, no sockets: every microsecond is the app's), (A) bare, (B) with its own
  bearer-token check (the application's `verify`, as any service authenticates), (C) with
  `CaepMiddleware` using that same `verify`. C against B is the middleware's own cost; the
  goal is under 5% at the app's max rate, which in-process is 1 / (CPU per request). With a
  real server and load generator the server's HTTP work would dilute the share; in-process is
  the strictest measure. Tokens are RS256 JWTs checked by pyjwt as in
  `examples/relying_service.py`.

The view is filled in memory (no broker): decisions applied as the subscriber applies them,
then the subscriber marked READY.

    python -m bench.bench_client [--quick] [--json PATH] [--profile]

Exits 0 whether or not a goal is met: the figure is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bench import results
from caep.client import CaepMiddleware, CaepProvider, Status, Subscriber
from caep.decisions import Action, Decision
from caep.keys import generate_jwk, jwks_of, private_key
from caep.policy import load_policy
from caep.settings import Settings
from examples.relying_service import email_subject, jwt_verifier

GOAL_LOOKUPS = 1_000_000.0
GOAL_FLAGS = 100_000.0
GOAL_MIDDLEWARE = 0.05
TENANT = "acme"
ISS = "https://idp.example.com"
AUD = "https://api.example.com"


@dataclass(frozen=True)
class Mode:
    revoked: int  # sessions revoked in the view
    lookups: int  # per round
    flags: int  # flag evaluations per round
    requests: int  # per round and app
    rounds: int
    chunks: int


FULL = Mode(revoked=100_000, lookups=400_000, flags=60_000, requests=6_000, rounds=5,
            chunks=10)
QUICK = Mode(revoked=5_000, lookups=40_000, flags=6_000, requests=400, rounds=1, chunks=4)


def decision(action: Action, session: str | None, now: float, **extra: Any) -> Decision:
    user = session or uuid.uuid4().hex
    return Decision(decision_id=str(uuid.uuid4()), action=action, tenant=TENANT,
                    subject={"format": "email", "email": f"{user}@example.com"},
                    subject_key=f"{TENANT}|{user}", session_id=session, reasons=["bench"],
                    source="bench", decided_at=now, **extra)


def ready_subscriber(mode: Mode, now: float) -> Subscriber:
    """A subscriber whose view holds `mode.revoked` revoked sessions plus step-ups, flags and
    subject revocations in proportion, marked READY without a broker."""
    policy = load_policy()
    subscriber = Subscriber(Settings(bootstrap="127.0.0.1:9"), tenants=[TENANT], policy=policy)
    view = subscriber.view
    for index in range(mode.revoked):
        view.apply(decision(Action.REVOKE_SESSION, f"revoked-{index}", now), now)
    for index in range(mode.revoked // 10):
        view.apply(decision(Action.STEP_UP, f"stepped-{index}", now,
                            required_acr="urn:caep-engine:acr:mfa", max_age=300), now)
        view.apply(decision(Action.SET_FLAGS, f"flagged-{index}", now,
                            flags={"downloads.enabled": False}), now)
        view.apply(decision(Action.REVOKE_SUBJECT, None, now, established_before=now), now)
    subscriber._set_status(Status.READY, "benchmark: view filled in memory")
    return subscriber


# ----------------------------------------------------------------------------------- measuring

Op = Callable[[Any], object]


def interleaved(contenders: Mapping[str, tuple[Op, Sequence[Any]]], rounds: int,
                chunks: int) -> dict[str, list[float]]:
    """Ops per CPU second per round, each contender's chunks interleaved with the others'."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    clock = time.process_time
    for round_index in range(rounds):
        gc.collect()
        spent = dict.fromkeys(contenders, 0.0)
        done = dict.fromkeys(contenders, 0)
        names = list(contenders)
        for chunk in range(chunks):
            shift = (round_index + chunk) % len(names)
            for name in names[shift:] + names[:shift]:
                op, items = contenders[name]
                size = -(-len(items) // chunks)
                part = items[chunk * size:(chunk + 1) * size]
                start = clock()
                for item in part:
                    op(item)
                spent[name] += clock() - start
                done[name] += len(part)
        for name in contenders:
            rates[name].append(done[name] / spent[name])
    return rates


def lookups(subscriber: Subscriber, mode: Mode) -> dict[str, list[float]]:
    ids = [f"revoked-{i % mode.revoked}" if i % 2 else f"live-{i}" for i in range(mode.lookups)]
    revoked_keys = subscriber.view._revoked
    keys = [(TENANT, sid) for sid in ids]
    view = subscriber.view
    if sum(map(subscriber.is_revoked, ids)) != mode.lookups // 2:
        raise AssertionError("the view did not find the revoked sessions")

    def scoped(sid: str) -> bool:
        return view.is_revoked(sid, TENANT)

    return interleaved({
        "subscriber.is_revoked(sid)": (subscriber.is_revoked, ids),
        "view.is_revoked(sid, tenant)": (scoped, ids),
        "ceiling: key in dict": (revoked_keys.__contains__, keys),
    }, 3 if mode.rounds > 1 else 1, mode.chunks)


def flag_evaluations(subscriber: Subscriber, mode: Mode) -> dict[str, list[float]]:
    provider = CaepProvider(subscriber)
    api.set_provider(provider, "bench-caep")
    policy = subscriber.view.policy
    memory = InMemoryProvider({key: InMemoryFlag("on", {"on": value, "off": not value})
                               for key, value in policy.flags.items()
                               if isinstance(value, bool)})
    api.set_provider(memory, "bench-memory")
    caep_client, memory_client = api.get_client("bench-caep"), api.get_client("bench-memory")
    contexts = [EvaluationContext(targeting_key=f"flagged-{i % 1000}" if i % 4 == 0
                                  else f"live-{i}") for i in range(mode.flags)]
    deadline = time.monotonic() + 10
    while caep_client.get_provider_status().value != "READY":
        if time.monotonic() > deadline:
            raise AssertionError("the provider never became READY")
        time.sleep(0.01)
    flagged = caep_client.get_boolean_value("downloads.enabled", True, contexts[0])
    if flagged is not False:
        raise AssertionError("the provider did not answer the session's flag")

    def through_caep(context: EvaluationContext) -> bool:
        return caep_client.get_boolean_value("downloads.enabled", True, context)

    def through_memory(context: EvaluationContext) -> bool:
        return memory_client.get_boolean_value("downloads.enabled", True, context)

    def direct(context: EvaluationContext) -> object:
        return provider.resolve_boolean_details("downloads.enabled", True, context)

    try:
        return interleaved({
            "SDK + CaepProvider": (through_caep, contexts),
            "ceiling: SDK + InMemoryProvider": (through_memory, contexts),
            "CaepProvider.resolve_boolean_details": (direct, contexts),
        }, mode.rounds, mode.chunks)
    finally:
        api.clear_providers()


# ------------------------------------------------------------------------------- the middleware

def signer() -> tuple[Callable[[dict[str, Any]], str], Callable[[str], Mapping[str, Any]]]:
    jwk = generate_jwk("RS256", kid="bench-rp")
    key = private_key(jwk)

    def sign(claims: dict[str, Any]) -> str:
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench-rp"})

    return sign, jwt_verifier(jwks_of(jwk), issuer=ISS, audience=AUD)


def tokens(count: int, now: float) -> list[str]:
    sign, _ = SIGNER
    return [sign({"iss": ISS, "aud": AUD, "sub": f"user-{i}", "email": f"user-{i}@example.com",
                  "sid": f"live-{i}", "acr": "urn:caep-engine:acr:mfa", "auth_time": int(now),
                  "iat": int(now), "exp": int(now) + 3600}) for i in range(count)]


SIGNER = signer()


class OwnAuth:
    """What the app does without CaepMiddleware: verify the bearer token, keep its claims."""

    def __init__(self, app: Any, verify: Callable[[str], Mapping[str, Any]]) -> None:
        self.app, self.verify = app, verify

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"authorization":
                    claims = self.verify(value.decode("latin-1").partition(" ")[2])
                    scope.setdefault("state", {})["claims"] = claims
        await self.app(scope, receive, send)


def apps(subscriber: Subscriber) -> dict[str, Any]:
    verify = SIGNER[1]

    async def hello(request: Request) -> Response:
        return PlainTextResponse("ok")

    def app() -> Starlette:
        return Starlette(routes=[Route("/hello", hello)])

    bare = app()
    own = app()
    own.add_middleware(OwnAuth, verify=verify)
    caep = app()
    caep.add_middleware(CaepMiddleware, subscriber=subscriber, verify=verify,
                        subject=email_subject)
    return {"A bare app": bare, "B app + own token check": own,
            "C app + CaepMiddleware": caep}


def middleware(subscriber: Subscriber, mode: Mode, now: float) -> dict[str, list[float]]:
    loop = asyncio.new_event_loop()
    requests = [{"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": "/hello", "raw_path": b"/hello",
                 "query_string": b"", "root_path": "", "server": ("127.0.0.1", 8000),
                 "client": ("127.0.0.1", 50000),
                 "headers": [(b"host", b"127.0.0.1:8000"),
                             (b"authorization", f"Bearer {token}".encode())]}
                for token in tokens(min(mode.requests, 2000), now)]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Mapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    def driver(app: Any) -> Op:
        def one(scope: dict[str, Any]) -> None:
            loop.run_until_complete(app(dict(scope), receive, send))
        return one

    def batch(app: Any) -> Op:
        async def run(scopes: Sequence[dict[str, Any]]) -> None:
            for scope in scopes:
                await app(dict(scope), receive, send)

        def go(scopes: Sequence[dict[str, Any]]) -> None:
            loop.run_until_complete(run(scopes))
        return go

    built = apps(subscriber)
    for app in built.values():  # warm up; every request must be served
        statuses.clear()
        driver(app)(requests[0])
        if statuses != [200]:
            raise AssertionError(f"the app answered {statuses}")
    # Requests go through one coroutine per chunk (one loop turn per chunk, as a server's
    # connection task would), so the event loop's own cost is not counted per request.
    per_chunk = 50
    work = [requests[i:i + per_chunk] for i in range(0, len(requests), per_chunk)]
    work = (work * (-(-mode.requests // len(requests))))[:max(1, mode.requests // per_chunk)]
    rates = interleaved({name: (batch(app), work) for name, app in built.items()},
                        mode.rounds, mode.chunks)
    loop.close()
    if any(status != 200 for status in statuses):
        raise AssertionError("a request was refused")
    return {name: [rate * per_chunk for rate in samples] for name, samples in rates.items()}


def profile_middleware(subscriber: Subscriber, now: float, top: int = 14) -> str:
    loop = asyncio.new_event_loop()
    app = apps(subscriber)["C app + CaepMiddleware"]
    scopes = [{"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
               "method": "GET", "scheme": "http", "path": "/hello", "raw_path": b"/hello",
               "query_string": b"", "root_path": "", "server": ("127.0.0.1", 8000),
               "client": ("127.0.0.1", 50000),
               "headers": [(b"authorization", f"Bearer {token}".encode())]}
              for token in tokens(500, now)]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Mapping[str, Any]) -> None:
        return None

    async def run() -> None:
        for scope in scopes:
            await app(scope, receive, send)

    profiler = cProfile.Profile()
    profiler.enable()
    loop.run_until_complete(run())
    profiler.disable()
    loop.close()
    title = "profile: 500 requests through app + CaepMiddleware, cProfile own time"
    return "\n".join(results.profile_lines(pstats.Stats(profiler), title, top))


# ------------------------------------------------------------------------------------ the run

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small view, one round")
    parser.add_argument("--json", type=Path, default=results.RESULTS_PATH, metavar="PATH",
                        help="results file to merge the figures into (default: %(default)s)")
    parser.add_argument("--profile", action="store_true",
                        help="also print where a request's time goes in the middleware")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    began = time.perf_counter()
    now = time.time()
    subscriber = ready_subscriber(mode, now)

    looked = lookups(subscriber, mode)
    flagged = flag_evaluations(subscriber, mode)
    served = middleware(subscriber, mode, now)
    median = {name: statistics.median(samples)
              for name, samples in (looked | flagged | served).items()}
    per_request_us = {name: 1e6 / median[name] for name in served}
    overhead = statistics.median(r_own / r_caep - 1 for r_own, r_caep in zip(
        served["B app + own token check"], served["C app + CaepMiddleware"], strict=True))
    over_bare = statistics.median(r_bare / r_caep - 1 for r_bare, r_caep in zip(
        served["A bare app"], served["C app + CaepMiddleware"], strict=True))
    added_us = per_request_us["C app + CaepMiddleware"] - per_request_us["B app + own token check"]
    details: dict[str, Any] = {
        "view_entries": len(subscriber.view), "revoked_sessions": mode.revoked,
        "rounds": mode.rounds, "chunks": mode.chunks,
        "rates": {name: {"median": median[name], "rounds": samples}
                  for name, samples in (looked | flagged | served).items()},
        "middleware": {"per_request_us": per_request_us, "overhead_vs_own_check": overhead,
                       "overhead_vs_bare_app": over_bare, "added_us": added_us,
                       "driver": "in-process ASGI, 50 requests per event-loop turn"},
    }
    lookup = median["subscriber.is_revoked(sid)"]
    flag = median["SDK + CaepProvider"]
    figures: list[results.Figure] = [
        {"name": name, "value": median[name], "unit": "lookups/s/core"} for name in looked
    ] + [
        {"name": name, "value": median[name], "unit": "evals/s/core"} for name in flagged
    ] + [
        {"name": f"{name} (max rate)", "value": median[name], "unit": "req/s/core"}
        for name in served
    ] + [
        {"name": "CaepMiddleware added per request", "value": added_us, "unit": "us"},
        {"name": "CaepMiddleware overhead vs own check", "value": overhead * 100, "unit": "%"},
        {"name": "CaepMiddleware + check vs bare app", "value": over_bare * 100, "unit": "%"},
    ]
    checks = [
        results.check("is_revoked / 1M per core", lookup / GOAL_LOOKUPS, 1.0),
        results.check("flag evaluations / 100k per core", flag / GOAL_FLAGS, 1.0),
        results.check_at_most("middleware overhead / 5%", overhead / GOAL_MIDDLEWARE, 1.0),
    ]
    print(_table(details, figures, checks, time.perf_counter() - began, quick=args.quick))
    if args.profile:
        print()
        print(profile_middleware(subscriber, now))
    results.record("client", figures=figures, checks=checks, details=details, quick=args.quick,
                   path=args.json)
    print(f"\nfigures merged into {args.json} under 'client'")
    return 0


def _table(details: dict[str, Any], figures: list[results.Figure],
           checks: list[results.Check], seconds: float, *, quick: bool) -> str:
    machine = results.machine_facts()
    lines = [
        f"relying-service benchmark{' (--quick)' if quick else ''}: a view of "
        f"{details['view_entries']:,} entries ({details['revoked_sessions']:,} revoked "
        f"sessions), {details['rounds']} round(s) x {details['chunks']} interleaved chunks",
        f"{machine['implementation']} {machine['python']}, {machine['cpu_count']} CPUs; rates "
        f"are per core (CPU time of 1 process); run took {seconds:.1f} s",
        f"middleware driver: {details['middleware']['driver']}; per request: " + ", ".join(
            f"{name} {us:.1f} us" for name, us in details["middleware"]["per_request_us"].items()),
        "",
    ]
    lines += results.figure_lines(figures, checks)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

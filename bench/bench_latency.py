"""Latency: a SET published to its decision consumed, and a revocation to its enforcement.

1. Event to decision. One worker on the embedded broker; this process publishes pre-signed
   RS256 session-revoked SETs on a schedule (one every 1/rate s, each a session of its own,
   one decision each) and reads `caep.decisions`; a SET's latency is from just before its
   send to the moment its decision (matched by `source_jti`) is read here. First the worker's
   maximum rate is measured (a burst, decisions over the span they arrived in), then the
   latency at 25%, 50% and 80% of it and at a fixed 1,000 SETs/s (which may be above it: then
   SETs queue and latency grows with the backlog, as it would in production).
2. Signal to enforcement. The example service (`examples/relying_service.py`: Subscriber,
   CaepMiddleware, OpenFeature provider) is served by uvicorn on a loopback port in this
   process; a client sends requests for a session over HTTP, back to back, while a
   session-revoked SET for it is published; the latency is until the middleware's first 401.

SETs are written keyed by their tenant and subject, as the push and poll edge write them, so
the worker evaluates each where it arrives. Tansu holds every fetch for the consumer's full
max-wait, so each consumer hop on the way (worker: security-events; this reader or the
subscriber: decisions) can add up to `CAEP_CONSUMER_FETCH_MAX_WAIT_MS` (default 100 ms); a SET
keyed otherwise takes one hop more, through engine-input. Both parts are run at the default
and again at 10 ms (worker, subscriber and reader alike).

    python -m bench.bench_latency [--quick] [--json PATH] [--bootstrap H:P]

Exits 0 whether or not a goal is met: the figure is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import harness, results
from bench.bench_pipeline import signed_sets
from caep.client import Subscriber
from caep.keys import generate_jwk, jwks_of, private_key
from caep.settings import Settings
from examples.relying_service import create_app, jwt_verifier, serve_in_background
from streams.broker import free_port

GOAL_P99_MS = 100.0
FIXED_RATE = 1000.0
SHARES = (0.25, 0.50, 0.80)
LOGIN = "https://login.example.com"
API = "https://api.example.com"
TENANT = "acme"


@dataclass(frozen=True)
class Mode:
    burst: int  # SETs in the max-rate burst
    seconds: float  # per fixed-rate phase
    fixed_seconds: float  # at 1,000 SETs/s
    enforcements: int  # revocations timed through the example service
    fetch_waits: tuple[int, ...]


FULL = Mode(burst=2000, seconds=8.0, fixed_seconds=2.0, enforcements=20, fetch_waits=(100, 10))
QUICK = Mode(burst=60, seconds=0.5, fixed_seconds=0.2, enforcements=2, fetch_waits=(100,))


class Tokens:
    """Pre-signed SETs handed out in order: (jti, key, token)."""

    def __init__(self, idp: harness.Idp, count: int) -> None:
        self.idp = idp
        self.items: list[tuple[str, bytes, bytes]] = []
        self.next = 0
        self._sign(count)

    def _sign(self, count: int) -> None:
        # Distinct users and sessions, the tenant from the issuer.
        tokens = signed_sets(self.idp, count, len(self.items))
        for token, key in zip(tokens, harness.subject_keys(self.idp, tokens), strict=True):
            claims = orjson.loads(_b64(token.split(".")[1]))
            self.items.append((claims["jti"], key, token.encode()))

    def take(self, count: int) -> list[tuple[str, bytes, bytes]]:
        missing = self.next + count - len(self.items)
        if missing > 0:
            self._sign(missing + 200)
        taken = self.items[self.next:self.next + count]
        self.next += count
        return taken


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


async def timed_phase(bootstrap: str, topics: harness.Topics,
                      tokens: list[tuple[str, bytes, bytes]], rate: float | None,
                      fetch_max_wait_ms: int, settle: float) -> dict[str, Any]:
    """Publish `tokens` at `rate` (None: all at once) and time each decision's arrival."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=fetch_max_wait_ms)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    stamped: list[int] = []  # the decision records' own timestamps (the worker's clock)
    try:
        partitions = await harness._partitions(consumer, topics.name("decisions"))
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)
        wanted = {jti for jti, _, _ in tokens}
        done = asyncio.Event()

        async def read() -> None:
            while not done.is_set():
                batch = await consumer.getmany(timeout_ms=50)
                now = time.time()
                for records in batch.values():
                    for record in records:
                        jti = orjson.loads(record.value).get("source_jti")
                        if jti in wanted and jti not in arrived:
                            arrived[jti] = now
                            stamped.append(record.timestamp)
                if len(arrived) == len(wanted):
                    done.set()

        reader = asyncio.create_task(read())
        target = topics.name("security-events")
        started = time.perf_counter()
        pending = []
        for index, (jti, key, token) in enumerate(tokens):
            if rate is not None:
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent[jti] = time.time()
            pending.append(await producer.send(target, key=key, value=token))
        published = time.perf_counter() - started
        await asyncio.gather(*pending)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), settle)
        done.set()
        await reader
    finally:
        await producer.stop()
        await consumer.stop()
    latencies = [(arrived[jti] - sent[jti]) * 1000 for jti in arrived]
    summary: dict[str, Any] = harness.percentiles(latencies)
    summary.update(sent=len(sent), decided=len(arrived), publish_seconds=published,
                   offered_rate=len(sent) / published if published > 0 else float("inf"))
    if len(stamped) > 1:
        # As the pipeline benchmark counts it: decisions over the span of their timestamps
        # (arrivals here come a fetch at a time, which would shorten the span).
        span = (max(stamped) - min(stamped)) / 1000
        if span <= 0:
            # all in one millisecond (a small burst decided in one batch): over the span from
            # the first SET sent instead, a lower bound
            span = max(stamped) / 1000 - min(sent.values())
        summary["decided_rate"] = (len(stamped) - 1) / span if span > 0 else float("nan")
    return summary


# ------------------------------------------------------------------------ signal to enforcement

def user_token(key: dict[str, Any], sid: str, email: str) -> str:
    now = int(time.time())
    return jwt.encode({"iss": LOGIN, "aud": API, "sub": email, "email": email, "sid": sid,
                       "acr": "urn:pwd", "auth_time": now - 5, "iat": now, "exp": now + 600},
                      private_key(key), algorithm="RS256", headers={"kid": key["kid"]})


def enforcement(bootstrap: str, topics: harness.Topics, idp: harness.Idp, count: int,
                fetch_max_wait_ms: int) -> dict[str, Any]:
    """Revocations published while a client keeps calling the example service: ms to 401."""
    key = generate_jwk("RS256", kid="login-key")
    settings = Settings(bootstrap=bootstrap, topic_decisions=topics.name("decisions"),
                        topic_flags=topics.name("flags"), group_session_timeout_seconds=2,
                        group_heartbeat_interval_seconds=0.3, group_rebalance_timeout_seconds=2,
                        consumer_fetch_max_wait_ms=fetch_max_wait_ms)
    app = create_app(Subscriber(settings, tenants=[TENANT]),
                     jwt_verifier(jwks_of(key), issuer=LOGIN, audience=API),
                     flags_domain=f"bench-{uuid.uuid4().hex[:6]}")
    loop = asyncio.new_event_loop()

    async def started() -> AIOKafkaProducer:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        return producer

    producer = loop.run_until_complete(started())
    latencies: list[float] = []
    requests: list[int] = []
    port = free_port()
    try:
        with serve_in_background(app, port), httpx.Client(
                base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
            for index in range(count):
                sid, email = f"enf-{uuid.uuid4().hex[:8]}", f"enf{index}@example.com"
                headers = {"Authorization": f"Bearer {user_token(key, sid, email)}"}
                if client.get("/me", headers=headers).status_code != 200:
                    raise RuntimeError("the example service refused a fresh session")
                token = idp.session_revoked(f"enf{index}", sid, time.time(), tenant=TENANT)
                revocation_key = harness.subject_keys(idp, [token])[0]
                refused: list[float] = []
                calls = [0]
                stop = threading.Event()

                def hammer(headers: dict[str, str] = headers, refused: list[float] = refused,
                           calls: list[int] = calls, stop: threading.Event = stop) -> None:
                    while not stop.is_set():
                        status = client.get("/me", headers=headers).status_code
                        calls[0] += 1
                        if status == 401:
                            refused.append(time.time())
                            return

                thread = threading.Thread(target=hammer, daemon=True)
                thread.start()
                time.sleep(0.05)
                published = time.time()
                loop.run_until_complete(producer.send_and_wait(
                    topics.name("security-events"), key=revocation_key, value=token.encode()))
                thread.join(10)
                stop.set()
                if refused:
                    latencies.append((refused[0] - published) * 1000)
                    requests.append(calls[0])
    finally:
        loop.run_until_complete(producer.stop())
        loop.close()
    summary: dict[str, Any] = harness.percentiles(latencies)
    summary.update(revocations=count, enforced=len(latencies),
                   requests_per_revocation=sum(requests) / max(1, len(requests)))
    return summary


# ------------------------------------------------------------------------------------ the run

def run_with(bootstrap: str, idp: harness.Idp, tokens: Tokens, mode: Mode, fetch_ms: int,
             max_rate: float | None) -> dict[str, Any]:
    """One worker at one fetch max-wait: max rate (unless given), the rate phases, and the
    enforcement timings."""
    topics = harness.fresh_topics(bootstrap)
    worker = harness.start_worker(bootstrap, idp.trust_file, topics,
                                  CAEP_CONSUMER_FETCH_MAX_WAIT_MS=str(fetch_ms))
    out: dict[str, Any] = {"fetch_max_wait_ms": fetch_ms, "phases": {}}
    try:
        out["ready_seconds"] = worker.wait_ready()
        # Warm up (first records of each partition, caches), then the burst.
        asyncio.run(timed_phase(bootstrap, topics, tokens.take(20), None, fetch_ms, 30))
        if max_rate is None:
            burst = asyncio.run(timed_phase(bootstrap, topics, tokens.take(mode.burst), None,
                                            fetch_ms, 120))
            out["burst"] = burst
            max_rate = burst["decided_rate"]
        out["max_rate"] = max_rate
        rates = {f"{share:.0%} of max": share * max_rate for share in SHARES}
        rates["1,000/s"] = FIXED_RATE
        for name, rate in rates.items():
            seconds = mode.fixed_seconds if name == "1,000/s" else mode.seconds
            count = max(5, int(rate * seconds))
            backlog = count / max(1.0, max_rate)
            out["phases"][name] = asyncio.run(timed_phase(
                bootstrap, topics, tokens.take(count), rate, fetch_ms, 15 + 3 * backlog))
            out["phases"][name]["rate"] = rate
        out["enforcement"] = enforcement(bootstrap, topics, idp, mode.enforcements, fetch_ms)
    finally:
        worker.stop()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short phases (seconds)")
    parser.add_argument("--json", type=Path, default=results.RESULTS_PATH, metavar="PATH")
    parser.add_argument("--bootstrap", default=os.environ.get("CAEP_TEST_BOOTSTRAP"),
                        help="an existing broker (default: an embedded Tansu for the run)")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    if args.quick:
        harness.quick_group_timeouts()
    began = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-latency") as scratch, \
            harness.broker(args.bootstrap) as bootstrap:
        idp = harness.make_idp(Path(scratch))
        per_run = 20 + mode.burst + int(sum(SHARES) * 400 * mode.seconds) + int(
            FIXED_RATE * mode.fixed_seconds) + 50
        tokens = Tokens(idp, per_run * len(mode.fetch_waits) + 1000)
        for fetch_ms in mode.fetch_waits:  # each max-wait at its own measured maximum
            runs.append(run_with(bootstrap, idp, tokens, mode, fetch_ms, None))

    figures: list[results.Figure] = []
    checks: list[results.Check] = []
    for run in runs:
        wait = f"{run['fetch_max_wait_ms']} ms wait"
        if "burst" in run:
            figures.append({"name": f"max rate (burst, {wait})", "value": run["max_rate"],
                            "unit": "SETs/s"})
        for name, phase in run["phases"].items():
            for stat in ("p50", "p99", "max"):
                figures.append({"name": f"SET->decision {stat} at {name} ({wait})",
                                "value": phase[stat], "unit": "ms"})
        enforced = run["enforcement"]
        for stat in ("p50", "p99", "max"):
            figures.append({"name": f"revocation->401 {stat} ({wait})",
                            "value": enforced[stat], "unit": "ms"})
        fixed = run["phases"]["1,000/s"]
        checks.append(results.check_at_most(f"p99 at 1,000/s / 100 ms ({wait})",
                                            fixed["p99"] / GOAL_P99_MS, 1.0))
        checks.append(results.check_at_most(f"revocation->401 p99 / 100 ms ({wait})",
                                            enforced["p99"] / GOAL_P99_MS, 1.0))
    details = {"runs": runs, "alg": "RS256", "shares": SHARES, "fixed_rate": FIXED_RATE}
    print(_table(details, figures, checks, time.perf_counter() - began, quick=args.quick))
    results.record("latency", figures=figures, checks=checks, details=details,
                   quick=args.quick, path=args.json)
    print(f"\nfigures merged into {args.json} under 'latency'")
    return 0


def _table(details: dict[str, Any], figures: list[results.Figure],
           checks: list[results.Check], seconds: float, *, quick: bool) -> str:
    machine = results.machine_facts()
    lines = [f"latency benchmark{' (--quick)' if quick else ''}: RS256 session-revoked SETs, "
             f"one worker on the embedded broker; {machine['implementation']} "
             f"{machine['python']}, {machine['cpu_count']} CPUs shared by broker, worker and "
             f"this process; run took {seconds:.1f} s", ""]
    for run in details["runs"]:
        lines.append(f"fetch max-wait {run['fetch_max_wait_ms']} ms (worker ready after "
                     f"{run['ready_seconds']:.1f} s), max rate {run['max_rate']:,.0f} SETs/s"
                     + (" (measured)" if "burst" in run else " (as measured above)"))
        lines.append(f"  {'offered':>22} {'sent':>6} {'decided':>8} {'p50 ms':>8} "
                     f"{'p99 ms':>8} {'max ms':>8}")
        for name, phase in run["phases"].items():
            label = f"{name} ({phase['rate']:,.0f}/s)"
            lines.append(f"  {label:>22} {phase['sent']:>6} "
                         f"{phase['decided']:>8} {phase['p50']:>8.1f} {phase['p99']:>8.1f} "
                         f"{phase['max']:>8.1f}")
        enforced = run["enforcement"]
        lines.append(f"  revocation -> 401 through the example service: {enforced['enforced']}"
                     f"/{enforced['revocations']} enforced, p50 {enforced['p50']:.1f} ms, p99 "
                     f"{enforced['p99']:.1f} ms, max {enforced['max']:.1f} ms "
                     f"({enforced['requests_per_revocation']:.0f} requests each meanwhile)")
        lines.append("")
    width = max(len(c["name"]) for c in checks)
    for item in checks:
        lines.append("  " + results.format_check(item, width))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""Unknown-kid flood (issue 10, item 5): 10,000 SETs with random `kid`s for issuers whose keys
come from a `jwks_uri`.

A real HTTPS server on loopback (private CA) serves each issuer's JWKS and counts the requests
per issuer; it answers slowly (`DELAY`), like a distant identity provider, so a fetch that
blocked the event loop would show as loop lag. Properties:

- through the codec's async path (`KeyRefresher.averify`, one SET at a time as the edge calls
  it; the worker's batch path, `averify_all`, is flooded through a real worker below), with
  four concurrent consumers: none accepted (each refused `invalid_key`), at most one fetch
  per issuer per `jwks_min_refetch_seconds` (30 s), counted at the server, and the loop stays
  responsive: the lag of a 5 ms ticker stays under 200 ms;
- the same over five minutes of a simulated clock (a refetch every 30 s at most, never more);
- through a real worker on the real broker, the JWKS answering in 1.5 s: every SET on the
  dead-letter topic as `invalid_key`, nothing on engine-input, at most one fetch per issuer
  per 30 s, and the worker's web server (on the worker's event loop) answering every probe
  within 1 s meanwhile (so no fetch held the loop).

Figures go to `$CAEP_REPORT_DIR/kid-flood*.json` (default: the test's tmp dir), with a summary
line such as `kid flood: 10000 sets, 0 accepted, 2 fetches (2 issuers), max loop lag 12 ms`.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import itertools
import os
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from caep.codec import SetVerifier, sign_set
from caep.errors import ErrorCode, SetError
from caep.jwks import KeyRefresher, fetch_jwks
from caep.keys import generate_jwk, jwks_of, private_key
from caep.trust import IssuerConfig, TrustStore
from tests.conftest import collect, fresh_topics, start_worker, stop_worker
from tests.test_attack_corpus import inputs_taken
from tests.test_jwks import _certificate

AUD = "https://rp.example.com"
ISSUERS = {"x": "https://idp-x.example.com", "y": "https://idp-y.example.com"}
REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
KEYS = {name: generate_jwk("RS256", kid=f"{name}-key-1") for name in ISSUERS}
FLOOD = 10_000
WORKER_FLOOD = int(os.environ.get("CAEP_KID_FLOOD_WORKER_SETS", str(FLOOD)))
DELAY = float(os.environ.get("CAEP_KID_FLOOD_JWKS_DELAY", "0.3"))  # the JWKS server's answer time
WORKER_DELAY = 1.5  # above the worker's bound below: a fetch that blocked its loop would show
MAX_LAG_MS = 200.0
REFETCH = 30.0


class JwksHttps:
    """A real HTTPS server on loopback, signed by a private CA, serving `/x` and `/y`; counts
    requests per path and when they came."""

    def __init__(self, directory: Path, delay: float) -> None:
        self.directory = directory
        self.delay = delay
        self.requests: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {name: [] for name in ISSUERS}
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("flood CA", ca_key, ca_key.public_key(), "flood CA", ca=True)
        key = ec.generate_private_key(ec.SECP256R1())
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        cert = _certificate("127.0.0.1", ca_key, key.public_key(), "flood CA", ca=False, san=san)
        (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (directory / "server.pem").write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.strip("/")
                owner.requests[name] += 1
                if name in owner.times:
                    owner.times[name].append(time.monotonic())
                time.sleep(owner.delay)
                body = orjson.dumps(jwks_of(KEYS[name])) if name in KEYS else b"{}"
                self.send_response(200 if name in KEYS else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "server.pem")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trust_file(self) -> Path:
        entries = [f'[[issuer]]\niss = "{iss}"\naudience = "{AUD}"\n'
                   f'jwks_uri = "https://127.0.0.1:{self.port}/{name}"\n'
                   f'jwks_ca_file = "ca.pem"\njwks_min_refetch_seconds = {REFETCH}\n'
                   for name, iss in ISSUERS.items()]
        trust = self.directory / "trust.toml"
        trust.write_text("\n".join(entries), encoding="utf-8")
        return trust


@pytest.fixture
def jwks(tmp_path: Path) -> Iterator[JwksHttps]:
    server = JwksHttps(tmp_path, DELAY)
    yield server
    server.server.shutdown()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def flood(count: int) -> list[tuple[str, bytes]]:
    """(issuer name, SET) with a random kid each, alternating issuers. One SET per issuer is
    really signed; the others carry its signature under their own header: the kid is looked up
    before any signature is checked, so signing each would only slow the test."""
    out = []
    base = {}
    for name, iss in ISSUERS.items():
        claims = {"iss": iss, "aud": AUD, "iat": int(time.time()),
                  "sub_id": {"format": "email", "email": f"victim@{name}.example.com"},
                  "events": {REVOKED: {"initiating_entity": "policy"}}}
        token = sign_set(claims, private_key(KEYS[name]), kid=f"{name}-key-1").encode()
        _, payload, signature = token.split(b".")
        base[name] = (payload, signature)
    names = list(ISSUERS)
    for i in range(count):
        name = names[i % len(names)]
        payload, signature = base[name]
        head = _b64(orjson.dumps({"alg": "RS256", "typ": "secevent+jwt",
                                  "kid": uuid.uuid4().hex}))
        out.append((name, b".".join((head, payload, signature))))
    return out


def report(name: str, figures: dict[str, Any], tmp_path: Path) -> None:
    directory = Path(os.environ.get("CAEP_REPORT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode(), encoding="utf-8")
    print(f"\n{figures['summary']} (report {path})")


def allowed_fetches(seconds: float) -> int:
    """Fetches one issuer may cause in `seconds`: one at once, one more per interval."""
    return 1 + int(seconds // REFETCH)


def test_kid_flood_through_the_async_codec_path(jwks: JwksHttps, tmp_path: Path) -> None:
    verifier = SetVerifier(TrustStore.from_file(jwks.trust_file()))
    at_load = dict(jwks.requests)
    assert at_load == {"x": 1, "y": 1}
    tokens = flood(FLOOD)
    refresher = KeyRefresher()

    async def run() -> dict[str, Any]:
        lags: list[float] = []
        refused: Counter[str] = Counter()
        accepted = 0
        slowest_step = 0.0
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - before - 0.005)

        async def consume(share: list[tuple[str, bytes]]) -> None:
            nonlocal accepted, slowest_step
            for _, token in share:
                step = time.perf_counter()
                try:
                    await refresher.averify(verifier, token)
                    accepted += 1
                except SetError as error:
                    refused[error.code.value] += 1
                slowest_step = max(slowest_step, time.perf_counter() - step)
                await asyncio.sleep(0)  # the next record, as a consumer loop takes it

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        started = time.monotonic()
        await asyncio.gather(*(consume(tokens[i::4]) for i in range(4)))
        elapsed = time.monotonic() - started
        stop.set()
        await tick
        return {"accepted": accepted, "refused": dict(refused), "seconds": elapsed,
                "max_lag_ms": max(lags) * 1000, "ticks": len(lags),
                "slowest_verify_await_ms": slowest_step * 1000}

    result = asyncio.run(run())
    during = {name: jwks.requests[name] - at_load[name] for name in ISSUERS}
    figures = {
        "path": "KeyRefresher.averify, 4 concurrent consumers",
        "sets": FLOOD, **result,
        "fetches_during_flood": during,
        "fetches_allowed_per_issuer": allowed_fetches(result["seconds"]),
        "refresher_fetches": refresher.fetches,
        "jwks_answer_delay_s": DELAY,
    }
    figures["summary"] = (
        f"kid flood: {FLOOD} sets, {result['accepted']} accepted, "
        f"{sum(during.values())} fetches ({len(ISSUERS)} issuers), "
        f"max loop lag {result['max_lag_ms']:.0f} ms, {result['seconds']:.1f} s")
    report("kid-flood-async", figures, tmp_path)

    assert result["accepted"] == 0
    assert result["refused"] == {ErrorCode.INVALID_KEY.value: FLOOD}
    for name in ISSUERS:
        assert 1 <= during[name] <= allowed_fetches(result["seconds"]), during
    assert refresher.fetches == sum(during.values())
    assert result["max_lag_ms"] < MAX_LAG_MS, result


def test_kid_flood_over_five_simulated_minutes_refetches_at_most_every_30_s(
    tmp_path: Path,
) -> None:
    """The clock advances 30 ms per SET: 10,000 SETs span 300 s. The fetches (real HTTPS
    requests, counted at the server) of each issuer are at least 30 s apart on that clock."""
    server = JwksHttps(tmp_path, 0.0)
    try:
        verifier = SetVerifier(TrustStore.from_file(server.trust_file()))
        now = [1000.0]
        fetched_at: dict[str, list[float]] = {iss: [] for iss in ISSUERS.values()}

        def fetch(config: IssuerConfig) -> Any:
            fetched_at[config.iss].append(now[0])
            return fetch_jwks(config)

        refresher = KeyRefresher(fetch=fetch, clock=lambda: now[0])

        async def run() -> Counter[str]:
            refused: Counter[str] = Counter()
            for _, token in flood(FLOOD):
                now[0] += 0.03
                try:
                    await refresher.averify(verifier, token)
                    refused["ACCEPTED"] += 1
                except SetError as error:
                    refused[error.code.value] += 1
            return refused

        refused = asyncio.run(run())
    finally:
        server.server.shutdown()
    span = FLOOD * 0.03
    gaps = {iss: [round(b - a, 2) for a, b in itertools.pairwise(times)]
            for iss, times in fetched_at.items()}
    figures = {"sets": FLOOD, "simulated_seconds": span, "refused": dict(refused),
               "fetches": {iss: len(t) for iss, t in fetched_at.items()},
               "server_requests": dict(server.requests), "min_gap_s": {
                   iss: min(g) if g else None for iss, g in gaps.items()}}
    figures["summary"] = (f"kid flood (simulated {span:.0f} s): {FLOOD} sets, "
                          f"{refused.get('ACCEPTED', 0)} accepted, "
                          f"fetches {figures['fetches']}")
    report("kid-flood-simulated", figures, tmp_path)

    assert refused == {ErrorCode.INVALID_KEY.value: FLOOD}
    for iss, times in fetched_at.items():
        assert len(times) <= allowed_fetches(span), (iss, times)
        assert all(gap >= REFETCH for gap in gaps[iss]), (iss, gaps[iss])
    assert sum(server.requests.values()) == len(ISSUERS) + sum(map(len, fetched_at.values()))


def test_kid_flood_through_a_worker(bootstrap: str, tmp_path: Path) -> None:
    jwks = JwksHttps(tmp_path, WORKER_DELAY)
    topics = fresh_topics(bootstrap)
    worker = start_worker(bootstrap, jwks.trust_file(), topics)
    try:
        worker.wait_ready()
        assert worker.web is not None
        at_start = dict(jwks.requests)
        tokens = flood(WORKER_FLOOD)
        keys = {name: f'{name}|{{"email":"victim@{name}.example.com","format":"email"}}'
                .encode() for name in ISSUERS}

        web_latencies: list[float] = []
        done = threading.Event()

        def probe() -> None:
            """The worker's web server runs on the worker's event loop: its answer time is
            the loop's responsiveness, seen from outside."""
            with httpx.Client(timeout=30) as http:
                while not done.is_set():
                    before = time.perf_counter()
                    http.get(f"{worker.web}/metrics")
                    web_latencies.append(time.perf_counter() - before)
                    done.wait(0.05)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        started = time.monotonic()
        asyncio.run(_publish(bootstrap, topics.security_events,
                             [(keys[name], token) for name, token in tokens]))
        letters = collect(bootstrap, topics.dead_letter, lambda r: len(r) >= WORKER_FLOOD,
                          timeout=240)
        elapsed = time.monotonic() - started
        done.set()
        prober.join(30)
        accepted = inputs_taken(bootstrap, topics.engine_input, worker.web)
        alive = worker.process.poll() is None
    finally:
        stop_worker(worker)
        jwks.server.shutdown()
    during = {name: jwks.requests[name] - at_start.get(name, 0) for name in ISSUERS}
    codes = Counter(letter["value"]["err"] for letter in letters)
    figures = {
        "path": "worker (caep.security-events -> dead letter)",
        "sets": WORKER_FLOOD, "dead_letters": len(letters), "codes": dict(codes),
        "accepted": accepted, "fetches_at_start": at_start,
        "fetches_during_flood": during, "fetches_allowed_per_issuer": allowed_fetches(elapsed),
        "seconds": round(elapsed, 2), "worker_alive": alive, "jwks_answer_delay_s": WORKER_DELAY,
        "web_probes": len(web_latencies),
        "web_max_ms": round(max(web_latencies, default=0) * 1000, 1),
        "web_p50_ms": round(sorted(web_latencies)[len(web_latencies) // 2] * 1000, 1)
        if web_latencies else None,
        "web_slow_probes_over_200ms": sum(latency > 0.2 for latency in web_latencies),
    }
    figures["summary"] = (
        f"kid flood (worker): {WORKER_FLOOD} sets, {accepted} accepted, "
        f"{sum(during.values())} fetches ({len(ISSUERS)} issuers), "
        f"web max {figures['web_max_ms']:.0f} ms, {elapsed:.1f} s")
    report("kid-flood-worker", figures, tmp_path)

    assert len(letters) == WORKER_FLOOD
    assert codes == {ErrorCode.INVALID_KEY.value: WORKER_FLOOD}
    assert accepted == 0
    assert alive
    for name in ISSUERS:
        assert at_start[name] == 1
        assert 1 <= during[name] <= allowed_fetches(elapsed), during
    assert web_latencies, "the worker's web server never answered during the flood"
    assert figures["web_max_ms"] < 1000, figures


async def _publish(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from streams.kafka_io import publish

    await publish(bootstrap, topic, records)

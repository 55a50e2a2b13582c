"""The attack corpus through every entry point (issue 10, item 3): Kafka, HTTP push, poll.

The corpus is the codec's own (`tests/test_codec_attacks.py`: alg none and its spellings, HMAC
key confusion with the RSA public key, header/payload/signature tampering and splicing, kid
injection, oversized and deeply nested JSON, duplicate members, wrong typ/iss/aud, exp, crit,
encodings...) plus structural attacks built here against the clock of the running engine
(`iat` beyond the skew now), SETs moved across tenants (another tenant's audience, key or
issuer), key-confusion and kid-injection variants, and Kafka-only shapes (a null value, a
non-UTF-8 record key, a half-megabyte value).

- Kafka (`caep.security-events` of a real worker on the real broker): 0 accepted (0 records on
  engine-input, 0 evaluated on arrival), 0 decisions, 0 writes to the tables' changelogs, each
  case on the dead-letter topic with its RFC 8935 `err`; the worker keeps running and still takes
  in a valid SET sent after the corpus (which proves the observations would have shown an
  acceptance).
- HTTP push (`POST /ssf/push` of a real edge): 0 HTTP 500, 0 202, each answer 400 (413 for an
  oversized body) with its code; nothing written to security-events; a valid SET of another
  tenant's issuer from this transmitter is `access_denied`.
- Poll (the edge's RFC 8936 client against a real HTTP transmitter): each SET reported back in
  `setErrs` with its code, 0 acknowledged, nothing written.

Figures go to `$CAEP_REPORT_DIR/attack-corpus-<entry>.json` (default: the test's tmp dir) with a
summary line such as `attack corpus (kafka): 331 cases, 0 accepted, 0 wrong codes, ...`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from caep.codec import SetVerifier
from caep.errors import ErrorCode, SetError
from caep.keys import generate_jwk, jwks_of, public_jwk
from caep.trust import TrustStore
from streams.broker import free_port
from streams.edge_clients import PollClient
from streams.edge_server import serving
from streams.edge_sink import DurableSink
from streams.kafka_io import publish
from streams.topics import ensure_topics
from tests.conftest import (
    Topics,
    WorkerProcess,
    collect,
    fresh_topics,
    start_worker,
    stop_worker,
)
from tests.edge_support import (
    PUSH_TOKEN,
    bearer,
    edge_settings,
    running_edge,
    write_edge_file,
)
from tests.jose_helpers import b64, unb64
from tests.test_codec_attacks import (
    ATTACKS,
    AUD,
    EC_A,
    ISS_A,
    ISS_B,
    REVOKED,
    RSA_A,
    RSA_B,
    SHARED_A,
    SHARED_B,
    TINY_VERIFIER,
    claims,
    header,
    hmac_signed,
    jws,
    unsigned,
)

IR = ErrorCode.INVALID_REQUEST
IK = ErrorCode.INVALID_KEY
II = ErrorCode.INVALID_ISSUER
IA = ErrorCode.INVALID_AUDIENCE
AD = ErrorCode.ACCESS_DENIED

ISS_C = "https://idp.tenant-c.example"
AUD_C = "https://rp.tenant-c.example"
RSA_C = generate_jwk("RS256", kid="c-rsa")
SUBJECT_KEY = b'tenant-a|{"email":"a@example.com","format":"email"}'

# The codec corpus' cases whose outcome depends on its fixed clock (NOW = 2025-06-15): their
# `iat` lies beyond the skew of that clock, not of the engine's; equivalents against the real
# clock are built below. Cases for a verifier with a 200-byte limit are valid SETs elsewhere.
RELATIVE_TO_THE_CORPUS_CLOCK = {"iat-just-beyond-skew", "iat-float-beyond-skew"}


@dataclass(frozen=True)
class WireCase:
    id: str
    value: bytes | None
    code: ErrorCode
    origin: str  # "codec corpus" or "structural"


def _wire(token: Any) -> bytes | str | None:
    """The record value a token is on Kafka; a reason string when it cannot be one."""
    if token is None:
        return None  # a null value (tombstone): no SET at all
    if isinstance(token, str):
        return token.encode("utf-8")
    if type(token) is bytes:
        return token
    return f"a {type(token).__name__} is not a record value"


def structural_cases(now: int) -> list[WireCase]:
    """Attacks against the engine's real clock and trust configuration (issuers A, B, C)."""
    fresh = {"iat": now - 5}
    n_bytes = unb64(public_jwk(RSA_A)["n"])
    cases = [
        # iat beyond the skew of the clock the engine runs on
        # (an hour beyond: the cases are built once per module and must stay beyond it)
        ("iat-beyond-skew-now", jws(header(), claims(iat=now + 3600)), IR),
        ("iat-a-day-ahead-now", jws(header(), claims(iat=now + 86400)), IR),
        ("iat-float-beyond-skew-now", jws(header(), claims(iat=now + 3600.5)), IR),
        ("exp-present-now", jws(header(), claims(exp=now + 3600, **fresh)), IR),
        ("exp-in-the-past-now", jws(header(), claims(exp=now - 3600, **fresh)), IR),
        # key confusion: the RSA public key in other raw forms as the HMAC secret
        ("hs256-secret-rsa-modulus-bytes", hmac_signed("HS256", n_bytes), IK),
        ("hs256-secret-rsa-modulus-b64url", hmac_signed("HS256", public_jwk(RSA_A)["n"]
                                                        .encode()), IK),
        ("hs256-kid-of-rsa-key-real-clock",
         _hmac(header(alg="HS256"), claims(**fresh), orjson.dumps(public_jwk(RSA_A))), IK),
        ("alg-none-real-clock", unsigned(header(alg="none"), claims(**fresh)), IK),
        ("alg-none-es256-kid-real-clock",
         unsigned(header(alg="none", kid="a-ec"), claims(**fresh), "AAAA"), IK),
        # kid injection
        ("kid-crlf-header-injection", jws(header(kid="a-rsa\r\nX-Injected: 1"), claims()), IK),
        ("kid-json-breakout", jws(header(kid='a-rsa","alg":"none'), claims()), IK),
        ("kid-ansi-escape", jws(header(kid="\x1b[31ma-rsa\x1b[0m"), claims()), IK),
        ("kid-ldap-wildcard", jws(header(kid="a-*)(uid=*"), claims()), IK),
        ("kid-of-issuer-c-signed-by-c", jws(header(kid="c-rsa"), claims(), RSA_C), IK),
        ("kid-file-url", jws(header(kid="file:///etc/passwd"), claims()), IK),
        # across tenants: issuer A is tenant-a, issuer B tenant-b, issuer C tenant-c (own aud)
        ("cross-tenant-a-signed-aud-of-tenant-c", jws(header(), claims(aud=AUD_C, **fresh)), IA),
        ("cross-tenant-a-signed-aud-a-and-c",
         jws(header(), claims(aud=[AUD, AUD_C], **fresh)), IA),
        ("cross-tenant-c-signed-iss-c-aud-of-a",
         jws(header(kid="c-rsa"), claims(iss=ISS_C, **fresh), RSA_C), IA),
        ("cross-tenant-a-signed-iss-c-aud-c",
         jws(header(), claims(iss=ISS_C, aud=AUD_C, **fresh)), IK),
        ("cross-tenant-c-signed-iss-a", jws(header(kid="c-rsa"), claims(**fresh), RSA_C), IK),
        ("cross-tenant-b-signed-iss-a-kid-b",
         jws(header(kid="b-rsa"), claims(**fresh), RSA_B), IK),
        ("cross-tenant-b-signed-iss-a-shared-kid",
         jws(header(kid="shared"), claims(**fresh), SHARED_B), IK),
        ("cross-tenant-a-set-iss-rewritten-to-b",
         _reclaimed(jws(header(), claims(**fresh)), iss=ISS_B), IK),
        ("cross-tenant-a-set-aud-rewritten-to-c",
         _reclaimed(jws(header(), claims(**fresh)), aud=AUD_C), IA),
        ("cross-tenant-a-set-tenant-member-added",
         _reclaimed(jws(header(), claims(**fresh)), sub_id={
             "format": "complex", "user": {"format": "email", "email": "a@example.com"},
             "tenant": {"format": "opaque", "id": "tenant-b"}}), IK),
        # shapes only Kafka carries
        ("oversized-half-megabyte-value", b"A" * 500_000, IR),
        ("oversized-signed-set-real-clock",
         jws(header(), claims(txn="x" * 70_000, **fresh)), IR),
        ("deeply-nested-payload-within-size-limit",
         jws(header(), b'{"iss":' + b"[" * 20_000 + b"]" * 20_000 + b"}"), IR),
        ("valid-set-with-nul-appended", jws(header(), claims(**fresh)) + "\x00", IR),
        ("two-valid-sets-concatenated",
         jws(header(), claims(**fresh)) + jws(header(), claims(jti="second", **fresh)), IR),
        # the malformed inputs of tests/test_codec.py (inline parameters there) not above
        *[(f"malformed-{i}", token, IR) for i, token in enumerate(
            ("abc", "a.b", "a.b.c.d", "!!!.???.***", "eyJ=.eyJ=.sig", b"\xff\xfe\x00",
             "\u00e9.\u00e9.\u00e9"))],
        ("typ-with-suffix", jws(header(typ="application/secevent+jwt+x"), claims()), IR),
    ]
    out = []
    for case_id, token, code in cases:
        value = _wire(token)
        assert not isinstance(value, str), case_id
        out.append(WireCase(case_id, value, code, "structural"))
    return out


def _hmac(head: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = unsigned(head, payload).rstrip(".")
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def _reclaimed(token: str, **changes: Any) -> str:
    h, p, s = token.split(".")
    payload = orjson.loads(unb64(p))
    payload.update(changes)
    return f"{h}.{b64(orjson.dumps(payload))}.{s}"


def corpus(now: int) -> tuple[list[WireCase], dict[str, str]]:
    """Every case as a record value, and the codec cases left out with the reason."""
    cases, skipped = [], {}
    for attack in ATTACKS:
        if attack.verifier is TINY_VERIFIER:
            skipped[attack.id] = "a valid SET under the default size limit"
            continue
        if attack.id in RELATIVE_TO_THE_CORPUS_CLOCK:
            skipped[attack.id] = "iat relative to the corpus' fixed clock (rebuilt: *-now)"
            continue
        value = _wire(attack.token)
        if isinstance(value, str):
            skipped[attack.id] = value
            continue
        cases.append(WireCase(attack.id, value, attack.code, "codec corpus"))
    cases += structural_cases(int(time.time()))
    assert len({c.id for c in cases}) == len(cases)
    return cases, skipped


def control_set(now: int | None = None) -> bytes:
    """A valid SET of issuer A about a subject of its own: what the entry points must take."""
    jti = f"control-{uuid.uuid4().hex}"
    return jws(header(), claims(jti=jti, iat=now or int(time.time()),
                                sub_id={"format": "email", "email": "control@example.com"},
                                events={REVOKED: {"initiating_entity": "policy",
                                                  "event_timestamp": int(time.time() * 1000)}}
                                )).encode()


def write_trust(directory: Path) -> Path:
    """Issuers A and B exactly as the codec corpus' store trusts them, plus C (own audience)."""
    for name, keys in (("a", (RSA_A, EC_A, SHARED_A)), ("b", (RSA_B, SHARED_B)), ("c", (RSA_C,))):
        (directory / f"{name}.jwks.json").write_bytes(orjson.dumps(jwks_of(*keys)))
    trust = directory / "trust.toml"
    trust.write_text(
        f'[[issuer]]\niss = "{ISS_A}"\naudience = "{AUD}"\njwks_file = "a.jwks.json"\n'
        'algorithms = ["RS256", "ES256"]\ntenant = "tenant-a"\n\n'
        f'[[issuer]]\niss = "{ISS_B}"\naudience = "{AUD}"\njwks_file = "b.jwks.json"\n'
        'tenant = "tenant-b"\n\n'
        f'[[issuer]]\niss = "{ISS_C}"\naudience = "{AUD_C}"\njwks_file = "c.jwks.json"\n'
        'tenant = "tenant-c"\n', encoding="utf-8")
    return trust


def records_on(bootstrap: str, names: list[str], idle: float = 1.5) -> dict[str, int]:
    """Records on each topic, counted by reading every partition from its start until none
    has come for `idle` seconds. Not from the end offsets: under load the embedded Tansu was
    seen answering a partition's latest offset one short of the records it serves (2 records
    readable at offsets 0 and 1, ListOffsets latest 1, for 20 s and more), so a count from
    `topic_size` can hide a record."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> dict[str, int]:
        counts = dict.fromkeys(names, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=100)
        await consumer.start()
        try:
            await consumer.topics()
            partitions = [TopicPartition(name, p) for name in names
                          for p in sorted(consumer.partitions_for_topic(name) or ())]
            if not partitions:
                return counts
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            last = time.monotonic()
            while time.monotonic() - last < idle:
                batch = await consumer.getmany(timeout_ms=200)
                for tp, got in batch.items():
                    if got:
                        counts[tp.topic] += len(got)
                        last = time.monotonic()
            return counts
        finally:
            await consumer.stop()

    return asyncio.run(run())


def report(name: str, figures: dict[str, Any], tmp_path: Path) -> None:
    directory = Path(os.environ.get("CAEP_REPORT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode(), encoding="utf-8")
    print(f"\n{figures['summary']} (report {path})")


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_trust(tmp_path_factory.mktemp("attack-trust"))


@pytest.fixture(scope="module")
def cases() -> tuple[list[WireCase], dict[str, str]]:
    return corpus(int(time.time()))


def test_every_case_is_refused_by_the_codec_with_its_code(
    trust: Path, cases: tuple[list[WireCase], dict[str, str]]
) -> None:
    """The oracle for the entry points: under the engine's trust file and real clock, each
    case is refused with exactly its code (so a wrong code below is the entry point's)."""
    verifier = SetVerifier(TrustStore.from_file(trust))
    wrong = {}
    for case in cases[0]:
        try:
            verifier.verify(case.value)  # type: ignore[arg-type]
        except SetError as error:
            if error.code is not case.code:
                wrong[case.id] = f"{error.code.value}: {error.description}"
            continue
        wrong[case.id] = "ACCEPTED"
    assert not wrong, wrong
    assert verifier.verify(control_set()).iss == ISS_A


# --- Kafka -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kafka_worker(bootstrap: str, trust: Path) -> Iterator[tuple[WorkerProcess, Topics, str]]:
    topics = fresh_topics(bootstrap)
    app_id = f"caep-attack-{uuid.uuid4().hex[:8]}"
    worker = start_worker(bootstrap, trust, topics, CAEP_APP_ID=app_id)
    try:
        worker.wait_ready()
        yield worker, topics, app_id
    finally:
        stop_worker(worker)


def _dead_letter_value(record: dict[str, Any]) -> bytes:
    body = record["value"]
    if "value_hex" in body:
        return bytes.fromhex(body["value_hex"])
    return str(body["value"]).encode("utf-8")


def _metric(text: str, name: str) -> dict[str, float]:
    """`name{labels} value` lines of a Prometheus exposition, by their label text."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name):].rsplit(" ", 1)
            out[labels] = float(value)
    return out


def metric_total(text: str, name: str) -> float:
    """The value of an unlabelled `name value` line of a Prometheus exposition (0 if none)."""
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " "))


def inputs_taken(bootstrap: str, engine_input: str, web: str | None) -> int:
    """Inputs a worker took in so far: its records on engine-input, plus the SETs it evaluated
    on arrival (keyed by their subject, they skip engine-input; `caep_evaluated_on_arrival`)."""
    assert web is not None, "the worker serves no metrics"
    on_arrival = metric_total(httpx.get(f"{web}/metrics", timeout=10).text,
                              "caep_evaluated_on_arrival_total")
    return records_on(bootstrap, [engine_input])[engine_input] + int(on_arrival)


def test_kafka_entry_point_refuses_every_attack(
    bootstrap: str, kafka_worker: tuple[WorkerProcess, Topics, str],
    cases: tuple[list[WireCase], dict[str, str]], tmp_path: Path,
) -> None:
    worker, topics, app_id = kafka_worker
    wire, skipped = cases
    changelogs = [f"{app_id}-{table}-changelog" for table in ("subjects", "taken-in", "devices")]
    started = time.monotonic()
    records: list[tuple[bytes | None, bytes]] = [
        (b"\xff\xfe not utf-8" if c.id == "alg-none-real-clock" else SUBJECT_KEY,
         c.value)
        for c in wire]
    asyncio.run(publish(bootstrap, topics.security_events, records))
    letters = collect(bootstrap, topics.dead_letter, lambda r: len(r) >= len(wire), timeout=180)
    processed_in = time.monotonic() - started

    # everything refused is on the dead-letter topic with its code, matched by its value
    expected: dict[bytes, list[str]] = defaultdict(list)
    names: dict[bytes, list[str]] = defaultdict(list)
    for case in wire:
        value = case.value if case.value is not None else b""  # a null value keeps b""
        expected[value].append(case.code.value)
        names[value].append(case.id)
    got: dict[bytes, list[str]] = defaultdict(list)
    for letter in letters:
        got[_dead_letter_value(letter)].append(letter["value"]["err"])
    wrong = {", ".join(names[v]): {"expected": sorted(codes), "got": sorted(got.get(v, []))}
             for v, codes in expected.items() if sorted(codes) != sorted(got.get(v, []))}
    unexpected_letters = [v[:80] for v in got if v not in expected]

    counted = records_on(bootstrap, [topics.decisions, *changelogs])
    accepted_before = inputs_taken(bootstrap, topics.engine_input, worker.web)
    decisions_before = counted[topics.decisions]
    state_writes_before = {name: counted[name] for name in changelogs}

    # a valid SET after the corpus: the worker still runs and takes it in (the observation
    # would have seen an acceptance)
    control = control_set()
    asyncio.run(publish(bootstrap, topics.security_events,
                        [(b'tenant-a|{"email":"control@example.com","format":"email"}',
                          control)]))
    # the control is remembered in the taken-in table once evaluated: the changelogs observed
    # above are the worker's real ones, where an accepted attack would have shown
    control_state_writes = len(collect(bootstrap, changelogs[1], lambda r: len(r) >= 1, 60))
    control_taken = inputs_taken(bootstrap, topics.engine_input, worker.web) - accepted_before
    exposition = httpx.get(f"{worker.web}/metrics", timeout=10).text
    accepted_metric = sum(v for labels, v in _metric(exposition, "caep_events_in_total").items()
                          if 'outcome="accepted"' in labels)
    dead_metric = Counter({labels: v for labels, v in
                           _metric(exposition, "caep_dead_letters_total").items()})
    alive = worker.process.poll() is None

    figures = {
        "entry_point": "kafka",
        "cases": len(wire),
        "from_codec_corpus": sum(c.origin == "codec corpus" for c in wire),
        "structural": sum(c.origin == "structural" for c in wire),
        "skipped_codec_cases": skipped,
        "codes": dict(Counter(c.code.value for c in wire)),
        "dead_letters": len(letters),
        "wrong_codes": wrong,
        "unexpected_dead_letters": len(unexpected_letters),
        "accepted": accepted_before,
        "decisions": decisions_before,
        "state_writes": state_writes_before,
        "worker_alive": alive,
        "control_taken_in": control_taken,
        "control_taken_in_changelog": control_state_writes,
        "metrics_accepted": accepted_metric,
        "metrics_dead_letters": dict(dead_metric),
        "seconds": round(processed_in, 2),
    }
    figures["summary"] = (
        f"attack corpus (kafka): {len(wire)} cases, {accepted_before} accepted, "
        f"{len(wrong)} wrong codes, {sum(state_writes_before.values())} state changes, "
        f"{decisions_before} decisions, worker {'alive' if alive else 'DEAD'}, "
        f"{processed_in:.1f} s")
    report("attack-corpus-kafka", figures, tmp_path)

    assert not wrong, wrong
    assert not unexpected_letters, unexpected_letters
    assert len(letters) == len(wire)
    assert accepted_before == 0, "an attack was taken in (engine-input, or evaluated on arrival)"
    assert decisions_before == 0
    assert sum(state_writes_before.values()) == 0, state_writes_before
    assert alive, "".join(worker.output[-40:])
    assert control_taken == 1, "the worker did not take in a valid SET after the corpus"
    assert control_state_writes == 1
    assert accepted_metric == 1
    assert sum(dead_metric.values()) == len(wire)


# --- HTTP push --------------------------------------------------------------------------------

def test_http_push_refuses_every_attack_with_its_code(
    bootstrap: str, trust: Path, cases: tuple[list[WireCase], dict[str, str]], tmp_path: Path,
) -> None:
    wire, _ = cases
    # the IdP's transmitter may send SETs of issuer A only: B is another tenant's issuer
    settings = edge_settings(bootstrap, trust, tmp_path,
                             edge_config_file=write_edge_file(tmp_path, issuers=[ISS_A]))
    answers: dict[str, tuple[int, Any]] = {}
    started = time.monotonic()
    b_token = jws(header(kid="b-rsa"), claims(iss=ISS_B, iat=int(time.time()),
                                              jti=f"b-{uuid.uuid4().hex}"), RSA_B).encode()
    with running_edge(settings) as edge, httpx.Client(timeout=30) as http:
        headers = {**bearer(PUSH_TOKEN), "Content-Type": "application/secevent+jwt"}
        for case in wire:
            answer = http.post(f"{edge.url}/ssf/push", content=case.value or b"",
                               headers=headers)
            try:
                body = answer.json()
            except ValueError:
                body = answer.text[:200]
            answers[case.id] = (answer.status_code, body)
        other_tenant = http.post(f"{edge.url}/ssf/push", content=b_token, headers=headers)
        written_by_attacks = records_on(bootstrap, [settings.topic_security_events])[
            settings.topic_security_events]
        control = http.post(f"{edge.url}/ssf/push", content=control_set(), headers=headers)
        written_after_control = len(collect(bootstrap, settings.topic_security_events,
                                            lambda r: len(r) >= 2, 3))
    elapsed = time.monotonic() - started

    statuses = Counter(status for status, _ in answers.values())
    wrong = {}
    for case in wire:
        status, body = answers[case.id]
        code = body.get("err") if isinstance(body, dict) else None
        if status not in (400, 413) or code != case.code.value:
            wrong[case.id] = {"status": status, "body": body, "expected": case.code.value}
    figures = {
        "entry_point": "http-push",
        "cases": len(wire),
        "statuses": {str(k): v for k, v in statuses.items()},
        "http_500": sum(v for k, v in statuses.items() if k >= 500),
        "accepted_202": statuses.get(202, 0),
        "wrong_codes": wrong,
        "written_to_security_events": written_by_attacks,
        "other_tenants_issuer": [other_tenant.status_code, other_tenant.json()],
        "control": control.status_code,
        "seconds": round(elapsed, 2),
    }
    figures["summary"] = (
        f"attack corpus (http push): {len(wire)} cases, {statuses.get(202, 0)} accepted, "
        f"{figures['http_500']} HTTP 500, {len(wrong)} wrong codes, "
        f"{written_by_attacks} written, {elapsed:.1f} s")
    report("attack-corpus-push", figures, tmp_path)

    assert figures["http_500"] == 0
    assert statuses.get(202, 0) == 0
    assert not wrong, wrong
    assert written_by_attacks == 0
    assert other_tenant.status_code == 400 and other_tenant.json()["err"] == AD.value
    assert control.status_code == 202 and written_after_control == 1


# --- poll ---------------------------------------------------------------------------------------

class Transmitter:
    """A real RFC 8936 poll endpoint offering the corpus once, keeping every request."""

    def __init__(self, sets: dict[str, str]) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.offered = sets
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()

        async def poll(request: Request) -> JSONResponse:
            self.requests.append(orjson.loads(await request.body()))
            sets, self.offered = self.offered, {}
            return JSONResponse({"sets": sets, "moreAvailable": False})

        self.app = Starlette(routes=[Route("/poll", poll, methods=["POST"])])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/poll"


def test_poll_client_reports_every_attack_in_set_errs(
    bootstrap: str, trust: Path, cases: tuple[list[WireCase], dict[str, str]], tmp_path: Path,
) -> None:
    wire, _ = cases
    # a poll response is JSON: a value that is not UTF-8 travels as the text its bytes spell
    offered = {case.id: (case.value or b"").decode("latin-1") for case in wire}
    control = control_set().decode()
    control_jti = orjson.loads(unb64(control.split(".")[1]))["jti"]
    offered[control_jti] = control
    topic = f"poll-intake-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(bootstrap, [topic], 2))
    transmitter = Transmitter(offered)
    verifier = SetVerifier(TrustStore.from_file(trust))
    started = time.monotonic()

    async def drain() -> tuple[Any, int]:
        sink = DurableSink(bootstrap, idempotence=False, max_in_flight=64, timeout=10)
        await sink.start()
        try:
            client = PollClient(transmitter.url, token="poll-token", verifier=verifier,
                                sink=sink, topic=topic)
            outcome = await client.poll_once()
            await client.flush()
            await client.http.aclose()
            return outcome, 0
        finally:
            await sink.stop()

    with serving(transmitter.app, "127.0.0.1", transmitter.port):
        outcome, _ = asyncio.run(drain())
    elapsed = time.monotonic() - started
    written = records_on(bootstrap, [topic])[topic]
    reported = transmitter.requests[-1]
    set_errs = reported.get("setErrs", {})
    wrong = {case.id: {"expected": case.code.value, "got": set_errs.get(case.id)}
             for case in wire
             if (set_errs.get(case.id) or {}).get("err") != case.code.value}
    figures = {
        "entry_point": "poll",
        "cases": len(wire),
        "acknowledged": [jti for jti in reported.get("ack", []) if jti != control_jti],
        "set_errs": len(set_errs),
        "wrong_codes": wrong,
        "written": written,
        "control_acknowledged": control_jti in reported.get("ack", []),
        "seconds": round(elapsed, 2),
    }
    figures["summary"] = (
        f"attack corpus (poll): {len(wire)} cases, {len(figures['acknowledged'])} accepted, "
        f"{len(wrong)} wrong codes, {written - 1} written besides the control, {elapsed:.1f} s")
    report("attack-corpus-poll", figures, tmp_path)

    assert not figures["acknowledged"]
    assert not wrong, wrong
    assert outcome.written == [control_jti]
    assert figures["control_acknowledged"]
    assert written == 1

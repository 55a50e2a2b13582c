"""Soak (issue 10, item 7): 500 SETs/s pushed to the edge for 2 minutes (`make soak
SOAK_PROFILE=ci`, and the last step of `make test`) or 10 minutes (`make soak`). tests/long/ is
not collected by the parallel test run: the soak measures latency and needs the machine to
itself. The broker, the edge, one engine worker and the load generator on the same machine.
Goals: 0 errors, receiver p99 < 250 ms, revoke->decision p99 < 1 s, resident memory growth
after warm-up < 10 %, and no revocation left undecided.

The path is the real one: an identity provider's SETs go over HTTP to the running `caep edge`
(`POST /ssf/push`, in this process, on its own thread and event loop), which answers 202 once
the broker acknowledged the record on the security-events topic, keyed by its subject; a worker
process verifies and evaluates them where they arrive and writes its decisions. The harness's
own objects (the planned workload) are frozen out of the garbage collector before the edge
starts: a separate `caep edge` process would not walk them, and here every full collection of
the edge's would (130-175 ms each, about every 6.5 s, in a CI-profile run that measured them).

The edge gathers pushed SETs for 50 ms (`CAEP_EDGE_LINGER_MS`; the default is 5 ms) into each
partition's batch. That is for the broker on this machine: Tansu's in-memory storage lists
every batch a partition holds to answer each fetch (README, Known limits), so the cost of
reading security-events grows with the batches written, and at 5 ms the long profile fills it
with about 200,000 of them, which slows the whole machine after a few minutes. At 50 ms a push
waits up to that much longer for its 202, within the receiver goal. For the same reason the
topics have 2 partitions, not the 4 of the other integration tests: a linger gathers SETs per
partition, so fewer partitions make fewer, larger batches, and a fetch lists every partition
it finds new records in. One worker reads them all either way; partitions are what more
workers share (`bench/bench_scaleout.py`).

The workload, signed (ES256, on every core) before the timed phase: sessions of 2,000 users,
each session established, presented three times and revoked, one second apart (CAEP
session-established, session-presented x3, session-revoked, all about a complex user+session
subject), so one SET in five is a revocation and each revocation gives one revoke_session
decision naming it (`source_jti`). The load generator is a process of its own (so it does not
share the edge's interpreter lock): 64 keep-alive HTTP clients (aiohttp) pushing on a fixed
schedule, SET i at start + i/rate, whatever the answers before it took (open loop; with the
linger about 25 pushes are awaiting their answer at any time).

Measured: every push's status (anything but 202 is an error) and its receiver latency (request
sent to response read); revoke->decision, from the push of each revocation to the Kafka
timestamp of its decision record (both wall clock on this machine). A worker far enough behind
evaluates a revocation after its session's short lifetime here (below) has already ended the
session: that revocation decides nothing, is counted apart (`ended_by_lifetime_first`, a
failure) and is late until the lifetime's decision, and only a revocation whose session was
never ended at all counts as lost. The resident memory (VmRSS)
and CPU time of the worker, of this process (the edge, plus the harness), of the load
generator and of the broker, sampled every second. Memory growth compares the mean of the last
30 s of the push phase with the mean of the 10 s after a 20 s warm-up.

Every user has a subject state from its first session on, kept after its sessions are gone
(about 0.8 kB in the worker each, from one-off runs: memory grew with the users seen, 5.4%
over the 2 minutes with 10,000 users of whom some 1,800 had been seen at the baseline and
7,000 by the end). So the users number 2,000 and all have a session before the baseline.
A subject state also keeps the marks of the last MAX_SEEN (256) inputs applied to it, so that
an input read again after a crash applies once: about 19 bytes each as stored, up to some
5 kB a subject. A user gets 150 SETs in the long profile, so its marks would grow all along
(a one-off long run: worker RSS +16.6%; +4.7% with the bound patched to 16). The worker
therefore starts from warm states: every user's subject state, with MAX_SEEN marks and no
session, is written to the subject table's changelog before the worker starts, which restores
it; the soak checks that the states the worker wrote last all hold MAX_SEEN marks, which a
user's own SETs fill for few users if any (150 a user on average, 30 in the CI profile).

The worker forgets a SET's (iss, jti) after the replay window (by default a day: about 320
bytes per SET, 160 kB/s at this rate). That is retention by configuration, not growth: the soak
runs the worker with a window shorter than the warm-up, so what stays is what a leak would
leave. The same holds for sessions: a revoked session is forgotten once its absolute lifetime
and the clock skew allowed have passed (a day and a minute by default, when no token of it can
be valid any more); the soak's policy makes that 14 s, also shorter than the warm-up.

Figures go to `soak.json` in the test's tmp dir (or `CAEP_RESULTS_DIR`), and one line
`soak: N sets in S s (R/s), E errors, receiver p99 X ms, revoke->decision p99 Y ms, worker RSS
growth Z%` is printed. `CAEP_SOAK_RATE` and `CAEP_SOAK_SECONDS` override the profile's rate
and duration (for trying things out; the goals stay the same).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import multiprocessing
import os
import random
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from caep.codec import SetVerifier, sign_set
from caep.evaluation import security_events
from caep.keys import generate_jwk, jwks_of, private_key
from caep.policy import TIME_EVENTS
from caep.state import MAX_SEEN, SubjectState, seen_mark
from caep.trust import TrustStore
from streams.topics import ensure_topics
from tests.conftest import (
    AUDIENCE,
    ISSUER,
    fresh_topics,
    start_worker,
    stop_worker,
    write_policy,
)
from tests.edge_support import PUSH_TOKEN, edge_settings, running_edge

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
LIFECYCLE = ("session-established", "session-presented", "session-presented",
             "session-presented", "session-revoked")
STEP_SECONDS = 1.0  # between two SETs of one session
USERS = 2_000  # each has a session within the warm-up (see `plan`)
CLIENTS = 64
EDGE_LINGER_MS = 50
PARTITIONS = 2  # of every topic (see the module's docstring)
WARM_UP = 20.0  # seconds of the push phase before the memory baseline
BASELINE = 10.0  # seconds the baseline is averaged over
TAIL = 30.0  # the last seconds of the push phase, compared with the baseline
REPLAY_WINDOW = 10  # seconds: shorter than the warm-up (see the module's docstring)
SIGNING_RATE = 2000  # SETs/s, a low guess: the push phase is planned to start after signing
SETUP_SECONDS = 40  # and after the worker and edge are up (the events' times start there)
LIFETIME = 12  # seconds: a session's absolute lifetime, 8 s past its revocation
CLOCK_SKEW = 2  # seconds: revoked sessions are forgotten LIFETIME + CLOCK_SKEW after it
DECISIONS_WITHIN = 60.0  # seconds after the last push for every revocation to be decided

# the goals of issue 10, item 7
MAX_ERRORS = 0
RECEIVER_P99_MS = 250.0
REVOKE_P99_MS = 1000.0
MAX_RSS_GROWTH = 0.10
MIN_RATE_SHARE = 0.95


@dataclass(frozen=True)
class Profile:
    name: str
    rate: int
    seconds: float


CI = Profile("ci", rate=500, seconds=120)
LONG = Profile("long", rate=500, seconds=600)


def profile() -> Profile:
    chosen = LONG if os.environ.get("CAEP_SOAK_PROFILE") == "long" else CI
    return Profile(chosen.name, int(os.environ.get("CAEP_SOAK_RATE") or chosen.rate),
                   float(os.environ.get("CAEP_SOAK_SECONDS") or chosen.seconds))


def results_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("CAEP_RESULTS_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


# -- the workload --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Planned:
    event: str  # a CAEP event name of LIFECYCLE
    user: str
    session: str
    jti: str
    at: float  # seconds into the workload: the order of one session's SETs


def plan(count: int, rate: int, seed: int = 7) -> list[Planned]:
    """`count` SETs in push order: a session starts every len(LIFECYCLE)/rate seconds and has
    its SETs STEP_SECONDS apart, so the mix is steady once the first sessions are revoked.
    The first USERS sessions go to the users in turn (all of them within the warm-up at
    500/s), the others to users drawn at random: every user then has its subject state
    before the memory baseline, so growth after it is not the working set filling."""
    rng = random.Random(seed)
    every = len(LIFECYCLE) / rate
    sessions = math.ceil(count / len(LIFECYCLE)) + math.ceil(
        len(LIFECYCLE) * STEP_SECONDS / every) + 1
    items: list[Planned] = []
    for n in range(sessions):
        user = f"soak{(n if n < USERS else rng.randrange(USERS)):05d}"
        session = f"sess-{n:07d}"
        for step, event in enumerate(LIFECYCLE):
            items.append(Planned(event, user, session, uuid.UUID(int=rng.getrandbits(128)).hex,
                                 n * every + step * STEP_SECONDS))
    items.sort(key=lambda item: item.at)
    return items[:count]


def _sign_chunk(args: tuple[dict[str, Any], list[Planned], float]) -> list[bytes]:
    jwk, items, base = args
    key = private_key(jwk)
    iat = int(time.time())
    tokens = []
    for item in items:
        claims = {
            "iss": ISSUER, "aud": AUDIENCE, "jti": item.jti, "iat": iat,
            "sub_id": {"format": "complex", "user": {"format": "opaque", "id": item.user},
                       "session": {"format": "opaque", "id": item.session}},
            "events": {CAEP + item.event: {
                **({"initiating_entity": "policy"} if item.event == "session-revoked" else {}),
                "event_timestamp": int((base + item.at) * 1000)}},
        }
        tokens.append(sign_set(claims, key, alg="ES256", kid=jwk["kid"]).encode())
    return tokens


def sign_all(jwk: dict[str, Any], items: list[Planned], base: float) -> list[bytes]:
    """Every SET signed, on every core. Event times are the planned push times from `base`,
    the push phase's planned start, so the engine sees each session's lifecycle as planned and
    a session's absolute lifetime runs from when it is pushed."""
    cores = max(1, os.cpu_count() or 1)
    step = -(-len(items) // (cores * 4))
    chunks = [(jwk, items[i:i + step], base) for i in range(0, len(items), step)]
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn")) as pool:
        return [token for chunk in pool.map(_sign_chunk, chunks) for token in chunk]


def write_trust(directory: Path) -> tuple[dict[str, Any], Path]:
    """An ES256 identity provider (RS256 signing would cost ~1 ms per SET) and its trust."""
    jwk = generate_jwk("ES256", kid=f"soak-{uuid.uuid4().hex[:6]}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "idp.jwks.json").write_bytes(orjson.dumps(jwks_of(jwk)))
    trust = directory / "trust.toml"
    trust.write_text(f'[[issuer]]\niss = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
                     'jwks_file = "idp.jwks.json"\nalgorithms = ["ES256"]\n', encoding="utf-8")
    return jwk, trust


# -- the load generator (a process of its own) ---------------------------------------------------

def load_generator(url: str, tokens_file: str, rate: float, clients: int, results_file: str,
                   started: Any, not_before: float) -> None:
    """Push every SET of `tokens_file` (one per line) at `rate` per second from `clients`
    concurrent keep-alive connections; SET i is due at start + i/rate. Puts the start (wall
    clock) on `started`, writes [sent, latency, status, late] per SET to `results_file`."""
    import aiohttp

    tokens = Path(tokens_file).read_bytes().split(b"\n")
    headers = {"Content-Type": "application/secevent+jwt", "Authorization": f"Bearer {PUSH_TOKEN}"}
    sent = [0.0] * len(tokens)
    latency = [0.0] * len(tokens)
    status = [0] * len(tokens)
    late = [0.0] * len(tokens)
    failures: Counter[str] = Counter()

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=clients, force_close=False)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            # one request per connection first, so connecting is not part of the figures
            async def warm() -> None:
                async with http.get(f"{url}/.well-known/ssf-configuration") as answer:
                    await answer.read()
            await asyncio.gather(*(warm() for _ in range(clients)))
            start = max(time.time() + 0.5, not_before)
            started.put(start)
            upcoming = iter(range(len(tokens)))

            async def client() -> None:
                for i in upcoming:
                    due = start + i / rate
                    delay = due - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sent[i] = time.time()
                    late[i] = sent[i] - due
                    began = time.perf_counter()
                    try:
                        async with http.post(f"{url}/ssf/push", data=tokens[i],
                                             headers=headers) as answer:
                            await answer.read()
                            status[i] = answer.status
                    except Exception as exc:  # counted as an error, never retried
                        status[i] = -1
                        failures[type(exc).__name__] += 1
                    latency[i] = time.perf_counter() - began

            await asyncio.gather(*(client() for _ in range(clients)))

    asyncio.run(run())
    Path(results_file).write_bytes(orjson.dumps(
        {"sent": sent, "latency": latency, "status": status, "late": late,
         "failures": dict(failures)}))


# -- what the processes use ----------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def runqueue_wait(pid: int) -> float | None:
    """Seconds the process's threads were runnable but waiting for a core, so far
    (/proc/PID/task/*/schedstat, second field): how starved of CPU it was."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[1])
    except OSError:
        return None
    return total / 1e9


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / TICK, sum(values) / TICK


def broker_pid() -> int | None:
    """The embedded Tansu, a child of this process (None with CAEP_TEST_BOOTSTRAP)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat.split("(", 1)[1].rsplit(")", 1)
        if int(rest.split()[1]) == me and "tansu" in comm:
            return int(entry.name)
    return None


class Sampler:
    """Every second: (t, RSS MB, CPU s) of each named process, and the machine's CPU."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            busy, total = machine_busy()
            self.samples.append({"t": time.time(), "machine": (busy, total), **{
                name: (rss_mb(pid), cpu_seconds(pid), runqueue_wait(pid))
                for name, pid in self.pids.items()}})
            if self._stop.wait(1.0):
                return

    def rss_growth(self, name: str, start: float, end: float) -> dict[str, float]:
        """Mean RSS over [start+WARM_UP, +BASELINE] against the mean over the last TAIL s."""
        def mean(a: float, b: float) -> float:
            values = [s[name][0] for s in self.samples
                      if a <= s["t"] <= b and s.get(name) and s[name][0] is not None]
            return statistics.mean(values) if values else float("nan")
        baseline = mean(start + WARM_UP, start + WARM_UP + BASELINE)
        tail = mean(end - TAIL, end)
        peak = max((s[name][0] for s in self.samples if s.get(name) and s[name][0]),
                   default=float("nan"))
        return {"baseline_mb": round(baseline, 1), "tail_mb": round(tail, 1),
                "peak_mb": round(peak, 1), "growth": round(tail / baseline - 1, 4)}

    def cpu_cores(self, name: str, start: float, end: float) -> float:
        """Mean cores a process used over [start, end] (from the samples nearest)."""
        return self._rate(name, 1, start, end)

    def waiting(self, name: str, start: float, end: float) -> float:
        """Mean threads of a process waiting for a core over [start, end]."""
        return self._rate(name, 2, start, end)

    def _rate(self, name: str, column: int, start: float, end: float) -> float:
        """How fast a process's cumulative counter `column` grew over [start, end], per second."""
        inside = [s for s in self.samples if start <= s["t"] <= end and s.get(name)
                  and s[name][column] is not None]
        if len(inside) < 2:
            return float("nan")
        first, last = inside[0], inside[-1]
        return round((last[name][column] - first[name][column]) / (last["t"] - first["t"]), 3)

    def machine_share(self, start: float, end: float) -> float:
        inside = [s for s in self.samples if start <= s["t"] <= end]
        if len(inside) < 2:
            return float("nan")
        (b0, t0), (b1, t1) = inside[0]["machine"], inside[-1]["machine"]
        return round((b1 - b0) / (t1 - t0), 3) if t1 > t0 else float("nan")


# -- decisions -----------------------------------------------------------------------------------

def warm_states(trust: Path, items: list[Planned], tokens: list[bytes]) -> dict[str, bytes]:
    """Each user's subject state as a worker that has run a while holds it: no session yet
    (the workload brings them), and MAX_SEEN marks of inputs applied before, the bound the
    state stops growing at (see the module's docstring). Tenant, key and subject are the
    evaluation's own, from each user's first SET. Returns {table key: encoded state}."""
    verifier = SetVerifier(TrustStore.from_file(trust))
    states: dict[str, bytes] = {}
    users: set[str] = set()
    for item, token in zip(items, tokens, strict=False):
        if item.user in users:
            continue
        users.add(item.user)
        [event] = security_events(verifier.verify(token.decode()))
        marks = tuple(seen_mark(f"before the soak {item.user} {n}") for n in range(MAX_SEEN))
        state = SubjectState(tenant=event.tenant, key=event.key, subject=dict(event.subject),
                             seen=marks)
        states[event.key] = state.to_bytes()
        if len(states) == USERS:
            break
    return states


async def seed_subjects_table(bootstrap: str, app_id: str, states: Mapping[str, bytes],
                              partitions: int) -> None:
    """Write `states` to the worker's subject table changelog before the worker starts, so it
    restores them: in the partition of each key's input records (the default partitioner,
    as the edge's), and the last record of each partition once more, alone (Tansu answers
    a partition's end as one past its last batch's first record; README, Tansu's high
    watermark)."""
    changelog = f"{app_id}-subjects-changelog"
    await ensure_topics(bootstrap, [changelog], partitions, compacted={changelog})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        last: dict[int, tuple[bytes, bytes]] = {}
        sent = [await producer.send(changelog, key=key.encode(), value=value)
                for key, value in states.items()]
        for (key, value), delivery in zip(states.items(), sent, strict=True):
            last[(await delivery).partition] = (key.encode(), value)
        for partition, (last_key, last_value) in sorted(last.items()):
            await producer.send_and_wait(changelog, key=last_key, value=last_value,
                                         partition=partition)
    finally:
        await producer.stop()


async def _last_states(bootstrap: str, topic: str, count: int = 50) -> dict[bytes, bytes]:
    """The latest value of each key among the last `count` records of every partition."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                              enable_auto_commit=False)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        for tp in tps:
            reader.seek(tp, max(0, ends[tp] - count))
        latest: dict[bytes, bytes] = {}
        while [tp for tp in tps if await reader.position(tp) < ends[tp]]:
            for records in (await reader.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.key is not None and record.value is not None:
                        latest[record.key] = record.value
        return latest
    finally:
        await reader.stop()


async def _decided(bootstrap: str, topic: str, wanted: Mapping[str, str], deadline: float
                   ) -> tuple[dict[str, float], dict[str, float]]:
    """Read from the topic's start until every revocation in `wanted` (jti -> session) is
    decided or its session ended otherwise, or the deadline passes: source_jti -> Kafka
    timestamp (s) of the revoke_session decision naming it, and session -> timestamp of the
    first revoke_session its lifetime caused (a revocation evaluated after its session's
    lifetime was over finds it ended already and decides nothing)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                              enable_auto_commit=False, fetch_max_wait_ms=100,
                              max_partition_fetch_bytes=4 * 1024 * 1024)
    await reader.start()
    found: dict[str, float] = {}
    ended: dict[str, float] = {}
    try:
        await reader.topics()
        tps = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        while time.time() < deadline and any(
                jti not in found and session not in ended for jti, session in wanted.items()):
            for records in (await reader.getmany(timeout_ms=500, max_records=5000)).values():
                for record in records:
                    decision = orjson.loads(record.value)
                    if decision.get("action") != "revoke_session":
                        continue
                    jti = decision.get("source_jti")
                    if jti in wanted:
                        found.setdefault(jti, record.timestamp / 1000)
                    elif decision.get("source") in TIME_EVENTS:
                        ended.setdefault(decision.get("session_id"), record.timestamp / 1000)
        return found, ended
    finally:
        await reader.stop()


# -- the test ------------------------------------------------------------------------------------

def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def windows(values: list[tuple[float, float]], start: float, width: float = 10.0
            ) -> list[dict[str, Any]]:
    """(time, value) pairs -> count and p99 (ms) per `width`-second window of the run."""
    buckets: dict[int, list[float]] = {}
    for at, value in values:
        buckets.setdefault(int((at - start) // width), []).append(value)
    return [{"from_s": int(k * width), "count": len(v), "p99_ms": ms(percentile(v, 0.99))}
            for k, v in sorted(buckets.items())]


def test_soak_sustained_rate_through_the_edge(bootstrap: str, tmp_path: Path) -> None:
    shape = profile()
    count = int(shape.rate * shape.seconds)
    prepared = time.monotonic()
    jwk, trust = write_trust(tmp_path / "idp")
    items = plan(count, shape.rate)
    planned_start = time.time() + SETUP_SECONDS + count / SIGNING_RATE
    tokens = sign_all(jwk, items, planned_start)
    tokens_file = tmp_path / "sets.txt"
    tokens_file.write_bytes(b"\n".join(tokens))
    signing_seconds = time.monotonic() - prepared

    topics = fresh_topics(bootstrap, PARTITIONS)
    app_id = f"caep-soak-{uuid.uuid4().hex[:8]}"
    warm = warm_states(trust, items, tokens)
    del tokens
    asyncio.run(seed_subjects_table(bootstrap, app_id, warm, PARTITIONS))
    # The edge runs in this process: without this, every full collection of its garbage
    # collector walks the workload planned above too (~150 ms at the CI profile's size).
    gc.collect()
    gc.freeze()
    worker = start_worker(bootstrap, trust, topics, CAEP_APP_ID=app_id,
                          CAEP_TOPIC_PARTITIONS=str(PARTITIONS),
                          CAEP_LOG_LEVEL="warning",
                          CAEP_REPLAY_WINDOW_SECONDS=str(REPLAY_WINDOW),
                          CAEP_POLICY_FILE=str(write_policy(
                              tmp_path, absolute_seconds=LIFETIME,
                              clock_skew_seconds=CLOCK_SKEW)))
    settings = edge_settings(bootstrap, trust, tmp_path,
                             topic_security_events=topics.security_events,
                             topic_decisions=topics.decisions, topic_partitions=PARTITIONS,
                             edge_linger_ms=EDGE_LINGER_MS)
    results_file = tmp_path / "pushes.json"
    context = multiprocessing.get_context("spawn")
    try:
        worker.wait_ready()
        with running_edge(settings) as edge:
            started = context.Queue()
            generator = context.Process(
                target=load_generator, name="soak-load",
                args=(edge.url, str(tokens_file), shape.rate, CLIENTS, str(results_file),
                      started, planned_start))
            generator.start()
            sampler = Sampler({"worker": worker.pid, "edge": os.getpid(),
                               "load": generator.pid, "broker": broker_pid()}).start()
            try:
                start = started.get(timeout=120)
                generator.join(shape.seconds + 180)
                assert generator.exitcode == 0, f"load generator exit code {generator.exitcode}"
            finally:
                if generator.is_alive():
                    generator.kill()
                sampler.stop()
            pushes = orjson.loads(results_file.read_bytes())
            answered = max(s + lat for s, lat in zip(pushes["sent"], pushes["latency"],
                                                     strict=True))
            revocations = [(item, sent) for item, sent, status in zip(
                items, pushes["sent"], pushes["status"], strict=True)
                if item.event == "session-revoked" and status == 202]
            accepted = {item.jti: sent for item, sent in revocations}
            session_of = {item.jti: item.session for item, _ in revocations}
            decided, ended = asyncio.run(_decided(bootstrap, topics.decisions, session_of,
                                                  answered + DECISIONS_WITHIN))
            last_states = asyncio.run(_last_states(bootstrap, f"{app_id}-subjects-changelog"))
        setup_and_run = time.monotonic() - prepared
    finally:
        code = stop_worker(worker)

    full_states = sum(len(SubjectState.from_bytes(value).seen) == MAX_SEEN
                      for value in last_states.values())
    statuses = Counter(pushes["status"])
    errors = sum(n for status, n in statuses.items() if status != 202)
    latencies = pushes["latency"]
    phase = answered - start
    achieved = count / phase
    # A revocation evaluated after its session's lifetime ran out (behind a backlog) finds
    # the session ended by that lifetime: not lost, and late until that end.
    ended_first = {jti: ended[session_of[jti]] for jti in set(accepted) - set(decided)
                   if session_of[jti] in ended}
    revoke = {jti: max(0.0, at - accepted[jti]) for jti, at in (decided | ended_first).items()}
    lost = sorted(set(accepted) - set(decided) - set(ended_first))
    end = start + shape.seconds  # the schedule's end: memory's tail is taken before it
    worker_rss = sampler.rss_growth("worker", start, end)
    cores: dict[str, float] = {name: sampler.cpu_cores(name, start, end) for name in sampler.pids}
    machine = sampler.machine_share(start, end) * (os.cpu_count() or 1)
    # what else ran on the machine meanwhile (another test, a benchmark): it shares the cores
    cores |= {"machine": round(machine, 3), "others": round(machine - sum(cores.values()), 3),
              "machine_cores": os.cpu_count() or 1}
    edge_rss = sampler.rss_growth("edge", start, end)
    figures: dict[str, Any] = {
        "profile": shape.name, "target_rate": shape.rate, "target_seconds": shape.seconds,
        "sets": count, "revocation_sets": sum(i.event == "session-revoked" for i in items),
        "clients": CLIENTS, "edge_linger_ms": EDGE_LINGER_MS, "partitions": PARTITIONS,
        "users": USERS,
        "replay_window_s": REPLAY_WINDOW,
        "session_lifetime_s": LIFETIME, "clock_skew_s": CLOCK_SKEW,
        "push_start_after_planned_s": round(start - planned_start, 1),
        "push_phase_s": round(phase, 1), "achieved_rate": round(achieved, 1),
        "errors": errors, "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "failures": pushes["failures"],
        "receiver_ms": {"p50": ms(percentile(latencies, 0.5)),
                        "p90": ms(percentile(latencies, 0.9)),
                        "p99": ms(percentile(latencies, 0.99)),
                        "max": ms(max(latencies))},
        "schedule_late_ms": {"p50": ms(percentile(pushes["late"], 0.5)),
                             "p99": ms(percentile(pushes["late"], 0.99)),
                             "max": ms(max(pushes["late"]))},
        "revocations_accepted": len(accepted), "revocations_decided": len(decided),
        "ended_by_lifetime_first": len(ended_first),
        "lost": len(lost), "lost_jtis": lost[:20],
        # the states the worker wrote last: all hold MAX_SEEN marks only if the warm states
        # were restored (a user gets fewer SETs than that here, on average)
        "warm_states": {"seeded": len(warm), "last_written": len(last_states),
                        "with_max_seen_marks": full_states},
        "revoke_to_decision_ms": {
            "p50": ms(percentile(list(revoke.values()), 0.5)),
            "p90": ms(percentile(list(revoke.values()), 0.9)),
            "p99": ms(percentile(list(revoke.values()), 0.99)),
            "max": ms(max(revoke.values(), default=0.0))},
        "last_decision_after_last_answer_s": round(max(decided.values(), default=answered)
                                                   - answered, 2),
        "rss": {"worker": worker_rss, "edge_process": edge_rss,
                "load_generator": sampler.rss_growth("load", start, end),
                **({"broker": sampler.rss_growth("broker", start, end)}
                   if "broker" in sampler.pids else {})},
        "cpu_cores": cores,
        # per second, the seconds its threads were runnable but had no core
        "runqueue_wait": {name: sampler.waiting(name, start, end) for name in sampler.pids},
        "timeline": {
            "receiver": windows([(s, lat) for s, lat in zip(
                pushes["sent"], latencies, strict=True)], start),
            "revoke_to_decision": windows([(accepted[j], v) for j, v in revoke.items()],
                                          start),
            "worker_rss_mb": [round(s["worker"][0], 1) for s in sampler.samples
                              if s.get("worker") and s["worker"][0] is not None][::10],
            # which process's cost grew over the run (the broker's, on Tansu: README)
            "cpu_cores_per_minute": {name: [sampler.cpu_cores(name, at, min(at + 60, end))
                                            for at in range(int(start), int(end), 60)]
                                     for name in sampler.pids},
        },
        "signing_s": round(signing_seconds, 1), "wall_s": round(setup_and_run, 1),
        "worker_exit_code": code,
    }
    (results_dir(tmp_path) / "soak.json").write_text(orjson.dumps(
        figures, option=orjson.OPT_INDENT_2).decode(), encoding="utf-8")
    receiver_p99 = figures["receiver_ms"]["p99"]
    revoke_p99 = figures["revoke_to_decision_ms"]["p99"]
    print(f"\nsoak: {count} sets in {phase:.0f} s ({achieved:.0f}/s), {errors} errors, "
          f"receiver p99 {receiver_p99:.0f} ms, revoke->decision p99 {revoke_p99:.0f} ms, "
          f"worker RSS growth {worker_rss['growth'] * 100:.1f}%")

    missed = []
    if errors > MAX_ERRORS:
        missed.append(f"{errors} pushes not answered 202: {figures['statuses']} "
                      f"{figures['failures']}")
    if achieved < MIN_RATE_SHARE * shape.rate:
        missed.append(f"achieved {achieved:.0f} SETs/s of {shape.rate} (schedule late p99 "
                      f"{figures['schedule_late_ms']['p99']} ms)")
    if receiver_p99 >= RECEIVER_P99_MS:
        missed.append(f"receiver p99 {receiver_p99} ms >= {RECEIVER_P99_MS:.0f} ms")
    if lost:
        missed.append(f"{len(lost)} of {len(accepted)} revocations not decided within "
                      f"{DECISIONS_WITHIN:.0f} s of the last push, nor their sessions ended "
                      f"otherwise, e.g. {lost[:3]}")
    if ended_first:
        missed.append(f"{len(ended_first)} revocations came after their session's "
                      f"{LIFETIME} s lifetime had ended it (counted as late until then)")
    if not last_states or full_states < len(last_states):
        missed.append(f"only {full_states} of the {len(last_states)} subject states written last "
                      f"hold {MAX_SEEN} marks: the warm states were not restored")
    if revoke_p99 >= REVOKE_P99_MS:
        missed.append(f"revoke->decision p99 {revoke_p99} ms >= {REVOKE_P99_MS:.0f} ms "
                      f"(p50 {figures['revoke_to_decision_ms']['p50']} ms)")
    for name, rss in (("worker", worker_rss), ("edge process", edge_rss)):
        if not rss["growth"] < MAX_RSS_GROWTH:
            missed.append(f"{name} RSS grew {rss['growth'] * 100:.1f}% after the warm-up "
                          f"({rss['baseline_mb']} -> {rss['tail_mb']} MB)")
    if missed:
        (tmp_path / "worker.log").write_text("".join(worker.output), encoding="utf-8")
    assert not missed, ("; ".join(missed) + f" (CPU cores used: {figures['cpu_cores']}, "
                        f"waiting for a core: {figures['runqueue_wait']}; "
                        f"figures in {results_dir(tmp_path) / 'soak.json'})")

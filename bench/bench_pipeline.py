"""Pipeline throughput: one worker on the embedded broker against a bare aiokafka loop.

Why: the codec and the evaluation core are fast alone; what a worker sustains end to end is
what they cost plus faust, the tables' changelogs and every broker round trip on the way.

How: a backlog of signed RS256 session-revoked SETs (each about another session of another
user: one verification, one evaluation, one decision each) is written to a fresh
`security-events` topic before anyone reads it. Then, in turn:

- ceiling: a bare aiokafka consume-then-produce loop (one process, the bench's own) reads the
  backlog from its start and writes every record to another topic, a fetched batch at a time,
  awaiting the batch's acknowledgements before it fetches again: the transport's ceiling here;
- engine: one worker process (`caep worker`, fresh consumer group) drains the same backlog
  through verify, evaluate and publish; its rate is decisions over the span of the decision
  records' timestamps (the worker's start-up is not counted). The backlog's records are keyed
  by tenant and subject, as the push and poll edge write them, so each SET is evaluated where
  it arrives;
- the ceiling again, so a drift of the machine's load shows;
- engine via engine-input: the same SETs keyed otherwise (by user name), on fresh topics, so
  each takes the second hop through the subject-keyed engine-input topic.

Both read with the same fetch max-wait (`CAEP_CONSUMER_FETCH_MAX_WAIT_MS`, 100 ms unless
`--fetch-wait-ms`; Tansu holds every fetch that long). With `--profile` (or in full runs), the
worker is sampled by py-spy while it drains, and the functions it spends its samples in are
summarized (`py-spy` from the dev extra).

    python -m bench.bench_pipeline [--quick] [--json PATH] [--bootstrap H:P] [--profile]

Exits 0 whether or not a goal is met: the figure is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import harness, results

GOAL_SHARE = 0.50


@dataclass(frozen=True)
class Mode:
    sets: int
    profile: bool


FULL = Mode(sets=8_000, profile=True)
QUICK = Mode(sets=300, profile=False)


def _sign_chunk(args: tuple[dict[str, Any], int, int, float]) -> list[str]:
    jwk, start, stop, now = args
    idp = harness.Idp(jwk, Path("-"))
    return [idp.session_revoked(f"user{i:07d}", f"sess-{i:07d}", now) for i in range(start, stop)]


def signed_sets(idp: harness.Idp, count: int, start: int = 0) -> list[str]:
    """`count` distinct SETs (users and sessions numbered from `start`), signed on every core
    (RSA signing is the slow part here)."""
    now = time.time()
    workers = max(1, os.cpu_count() or 1)
    step = -(-count // workers)
    chunks = [(idp.jwk, i, min(start + count, i + step), now)
              for i in range(start, start + count, step)]
    with ProcessPoolExecutor(workers) as pool:
        return [token for chunk in pool.map(_sign_chunk, chunks) for token in chunk]


async def ceiling(bootstrap: str, source: str, target: str, count: int,
                  fetch_max_wait_ms: int) -> dict[str, float]:
    """Move `count` records from `source` to `target`: consume a batch, produce it, await."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=fetch_max_wait_ms)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        partitions = await harness._partitions(consumer, source)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        moved, started, cpu = 0, 0.0, time.process_time()
        while moved < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not started and batch:
                started = time.perf_counter()
            pending = [await producer.send(target, key=record.key, value=record.value)
                       for records in batch.values() for record in records]
            await asyncio.gather(*pending)
            moved += len(pending)
        seconds = time.perf_counter() - started
        return {"rate": moved / seconds, "seconds": seconds,
                "cpu_seconds": time.process_time() - cpu}
    finally:
        await producer.stop()
        await consumer.stop()


def py_spy() -> str | None:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else shutil.which("py-spy")


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    spy = py_spy()
    if spy is None:
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", "200", "--format", "raw", "--idle", "--nonblocking",
                             "--threads", "--output", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


# Functions whose share of the event loop's working samples says where a SET's time goes:
# a sample counts for every one of them on its stack.
STAGES = (
    ("ingest agent (streams/app.py)", "create_app.<locals>.ingest "),
    ("  verify (SetVerifier.verify_all)", "SetVerifier.verify_all "),
    ("evaluate agent (streams/app.py)", "create_app.<locals>.evaluate_inputs "),
    ("  evaluate (caep.evaluation)", "evaluate (caep/evaluation.py"),
    ("  outbox flushes (streams/outbox.py)", "Outbox.flush "),
    ("faust: consumer drain loop, per record", "Consumer._drain_messages "),
    ("mode's wait_first (faust wraps each record's hand-over in it)", "Service.wait_first "),
    ("faust: stream iteration and acks", "Stream._c_aiter "),
    ("aiokafka: producer sender", "Sender._sender_routine "),
)


def _is_idle(leaf: str) -> bool:
    return ("select" in leaf and "selectors" in leaf) or "epoll" in leaf or "poll (" in leaf


def summarize_profile(raw: Path, top: int = 14) -> dict[str, Any]:
    """py-spy's collapsed stacks (`--threads`) as shares of the event loop's thread, the one
    that runs the engine (aiokafka's consumer has a thread of its own, reported apart): how
    much of it is waiting (idle in epoll), and where its working samples are, by the innermost
    frame of this project, faust, mode or aiokafka, by leaf function and by stage (STAGES)."""
    own: collections.Counter[str] = collections.Counter()
    area: collections.Counter[str] = collections.Counter()
    stages: collections.Counter[str] = collections.Counter()
    total = idle = other = other_idle = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[0].startswith("thread ("):
            thread, frames = frames[0], frames[1:]
            if not thread.endswith("MainThread"):
                other += count
                other_idle += count if frames and _is_idle(frames[-1]) else 0
                continue
        if not frames:
            continue
        total += count
        if _is_idle(frames[-1]):
            idle += count
            continue
        own[_short(frames[-1])] += count
        area[_area(frames)] += count
        joined = ";".join(frames)
        for name, marker in STAGES:
            if marker in joined:
                stages[name] += count
    working = max(1, total - idle)
    return {
        "samples": total, "idle_share": idle / max(1, total),
        "other_threads_samples": other,
        "other_threads_busy_share": (other - other_idle) / max(1, other),
        "areas": {name: n / working for name, n in area.most_common(top)},
        "leaves": {name: n / working for name, n in own.most_common(top)},
        "stages": {name: stages[name] / working for name, _ in STAGES},
    }


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rpartition(":")[0]
    parts = Path(path).parts
    keep = "/".join(parts[-2:]) if parts else path
    return f"{name} ({keep})"


AREAS = (("caep/codec", "verify (caep.codec, signatures)"), ("caep/signatures", "verify "
         "(caep.codec, signatures)"), ("caep/evaluation", "evaluate (caep.evaluation)"),
         ("caep/state", "state (de)serialization"), ("caep/decisions", "decisions"),
         ("caep/wire", "engine-input records"), ("caep/events", "event models"),
         ("caep/subjects", "subjects"), ("pydantic", "pydantic"), ("streams/", "streams (app)"),
         ("faust/tables", "faust tables"), ("faust/", "faust"), ("mode/", "mode"),
         ("aiokafka/", "aiokafka"), ("asyncio/", "asyncio"), ("prometheus", "metrics"),
         ("logging", "logging"))


def _area(frames: list[str]) -> str:
    for frame in reversed(frames):
        for marker, name in AREAS:
            if marker in frame:
                return name
    return "other"


def engine_run(bootstrap: str, idp: harness.Idp, topics: harness.Topics, count: int,
               fetch_max_wait_ms: int, profile_out: Path | None,
               expected_seconds: float) -> dict[str, Any]:
    worker = harness.start_worker(bootstrap, idp.trust_file, topics,
                                  CAEP_CONSUMER_FETCH_MAX_WAIT_MS=str(fetch_max_wait_ms))
    spy = None
    try:
        ready = worker.wait_ready()
        cpu_before, wall_before = _cpu_seconds(worker.pid), time.perf_counter()
        if profile_out is not None:
            spy = start_profile(worker.pid, max(60.0, expected_seconds * 8), profile_out)
        decided = asyncio.run(harness.read(bootstrap, topics.name("decisions"), count,
                                           within=max(60.0, expected_seconds * 8)))
        busy = (_cpu_seconds(worker.pid) - cpu_before) / (time.perf_counter() - wall_before)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # the drain is over: py-spy writes and exits
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()
        worker.stop()
    stamps = sorted(stamp for stamp, _, _ in decided)
    if len(stamps) < 2:
        raise RuntimeError(f"the worker made {len(stamps)} decisions of {count}:\n"
                           + "".join(worker.output[-30:]))
    span = (stamps[-1] - stamps[0]) / 1000
    return {"decisions": len(stamps), "seconds": span,
            "rate": (len(stamps) - 1) / span if span > 0 else float("nan"),
            "ready_seconds": ready, "cpu_busy": busy}


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small backlog (seconds)")
    parser.add_argument("--json", type=Path, default=results.RESULTS_PATH, metavar="PATH")
    parser.add_argument("--bootstrap", default=os.environ.get("CAEP_TEST_BOOTSTRAP"),
                        help="an existing broker (default: an embedded Tansu for the run)")
    parser.add_argument("--fetch-wait-ms", type=int, default=100,
                        help="consumer fetch max-wait for both contenders (default 100)")
    parser.add_argument("--profile", action="store_true", help="sample the worker with py-spy")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    if args.quick:
        harness.quick_group_timeouts()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline") as scratch, \
            harness.broker(args.bootstrap) as bootstrap:
        idp = harness.make_idp(Path(scratch))
        tokens = signed_sets(idp, mode.sets)
        topics = harness.fresh_topics(bootstrap, harness.PARTITIONS, "moved-1", "moved-2")
        keys = harness.subject_keys(idp, tokens)
        records: list[tuple[bytes | None, bytes]] = [
            (key, token.encode()) for key, token in zip(keys, tokens, strict=True)]
        publish_seconds = asyncio.run(harness.produce(bootstrap, topics.name("security-events"),
                                                      records))
        source = topics.name("security-events")
        first = asyncio.run(ceiling(bootstrap, source, topics.name("moved-1"), mode.sets,
                                    args.fetch_wait_ms))
        profile_file = Path(scratch) / "worker.pyspy"
        profiling = mode.profile or args.profile
        engine = engine_run(bootstrap, idp, topics, mode.sets, args.fetch_wait_ms,
                            profile_file if profiling else None,
                            expected_seconds=mode.sets / 400)
        second = asyncio.run(ceiling(bootstrap, source, topics.name("moved-2"), mode.sets,
                                     args.fetch_wait_ms))
        hopping = harness.fresh_topics(bootstrap, harness.PARTITIONS)
        asyncio.run(harness.produce(bootstrap, hopping.name("security-events"), [
            (f"user{i:07d}".encode(), token.encode()) for i, token in enumerate(tokens)]))
        via_engine_input = engine_run(bootstrap, idp, hopping, mode.sets, args.fetch_wait_ms,
                                      None, expected_seconds=mode.sets / 400)
        profile = (summarize_profile(profile_file)
                   if profiling and profile_file.exists() else None)

    ceiling_rate = statistics.mean([first["rate"], second["rate"]])
    share = engine["rate"] / ceiling_rate
    details: dict[str, Any] = {
        "sets": mode.sets, "partitions": harness.PARTITIONS,
        "fetch_max_wait_ms": args.fetch_wait_ms, "alg": "RS256",
        "publish_rate": mode.sets / publish_seconds,
        "ceiling_runs": [first, second], "engine": engine, "share": share,
        "engine_via_engine_input": via_engine_input,
        "profile": profile,
        "settings": {
            "worker": "faust defaults (producer linger 0 ms, max batch 16 KiB, acks=all; "
                      "consumer fetch max-wait CAEP_CONSUMER_FETCH_MAX_WAIT_MS, max poll "
                      "records unbounded), agents at concurrency 1 taking batches "
                      "(CAEP_BATCH_MAX_*), a batch's records sent as one produce batch per "
                      "partition (streams/outbox.py) and awaited together, its table writes "
                      "likewise and each changelog partition's last record once more alone",
            "ceiling": "aiokafka defaults (linger 0 ms, max batch 16 KiB, acks=all), "
                       "getmany up to 10,000 records, a batch's sends awaited together",
        },
    }
    figures: list[results.Figure] = [
        {"name": "engine (verify, evaluate, publish)", "value": engine["rate"], "unit": "SETs/s"},
        {"name": "engine, SETs keyed otherwise (hop via engine-input)",
         "value": via_engine_input["rate"], "unit": "SETs/s"},
        {"name": "ceiling (bare aiokafka consume-produce)", "value": ceiling_rate,
         "unit": "records/s"},
        {"name": "engine / ceiling", "value": share * 100, "unit": "%"},
        {"name": "backlog publish rate (acks=all)", "value": details["publish_rate"],
         "unit": "records/s"},
    ]
    figures.append({"name": "worker CPU use while it drains", "value": engine["cpu_busy"] * 100,
                    "unit": "% of a core"})
    checks = [results.check("engine / ceiling", share, GOAL_SHARE)]
    print(_table(details, figures, checks, time.perf_counter() - began, quick=args.quick))
    results.record("pipeline", figures=figures, checks=checks, details=details,
                   quick=args.quick, path=args.json)
    print(f"\nfigures merged into {args.json} under 'pipeline'")
    return 0


def _table(details: dict[str, Any], figures: list[results.Figure],
           checks: list[results.Check], seconds: float, *, quick: bool) -> str:
    machine = results.machine_facts()
    engine = details["engine"]
    lines = [
        f"pipeline throughput benchmark{' (--quick)' if quick else ''}: a backlog of "
        f"{details['sets']:,} RS256 session-revoked SETs on {details['partitions']} partitions,"
        f" fetch max-wait {details['fetch_max_wait_ms']} ms",
        f"{machine['implementation']} {machine['python']}, {machine['cpu_count']} CPUs (broker,"
        f" worker and this process share them); run took {seconds:.1f} s",
        "ceiling runs: " + ", ".join(f"{r['rate']:,.0f}/s" for r in details["ceiling_runs"])
        + "; "
        f"engine: {engine['decisions']:,} decisions in {engine['seconds']:.2f} s "
        f"(worker ready after {engine['ready_seconds']:.1f} s); via engine-input: "
        f"{details['engine_via_engine_input']['decisions']:,} in "
        f"{details['engine_via_engine_input']['seconds']:.2f} s",
        f"worker settings: {details['settings']['worker']}",
        "",
    ]
    lines += results.figure_lines(figures, checks)
    profile = details["profile"]
    if profile:
        lines += ["", f"profile (py-spy, {profile['samples']:,} samples of the worker's event loop"
                      f" thread while it drained): {profile['idle_share']:.0%} of them in the "
                      "event loop's poll, which includes polls that return at once (aiokafka's"
                      " consumer thread, apart: busy in "
                      f"{profile['other_threads_busy_share']:.0%} of its samples); of "
                      "the working samples, by stage (a sample counts for every stage on its "
                      "stack; a task's stack starts at its coroutine, so what tasks run for "
                      "faust is partly counted under asyncio only):"]
        lines += [f"  {share:6.1%}  {name}" for name, share in profile["stages"].items()]
        lines.append("  by area (innermost frame that names one):")
        lines += [f"  {share:6.1%}  {name}" for name, share in profile["areas"].items()]
        lines.append("  by leaf function:")
        lines += [f"  {share:6.1%}  {name}" for name, share in profile["leaves"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

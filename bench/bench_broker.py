"""The embedded broker's cost as it fills: why long runs on Tansu slow down.

Why: the long soak and the long chaos run fall behind after a few minutes on a broker that
keeps every record in memory. Tansu's in-memory storage keeps each produced batch as an object
of its own and, to answer a fetch, lists every batch the partition holds (tansu-storage
`dynostore.rs`, `fetch`), so reading a partition costs more the more batches it holds, however
few records each carries. A Kafka broker finds the offset in an index instead.

How: an embedded Tansu of its own per series (its CPU read from `/proc`); a steady load of
500 records/s (400-byte values, acks=all, a batch every 50 ms) produced to a 4-partition topic
while a consumer reads it back from its end, for a window; then a bulk load between windows,
and the steady window again. Three series: the bulk as one-record batches (what an edge that
answers each push once the broker has it tends to write at a moderate rate) into the topic
being read; the same records in batches of 100 into it; one-record batches into another topic.
The figure per window is the broker's CPU over that window, in cores; the headline is the last
window's against the first in the first series.

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


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    per_batch: int  # records per bulk batch
    into_read_topic: bool


FULL = Mode(window_seconds=10, bulk=20_000, steps=4)
QUICK = Mode(window_seconds=3, bulk=4_000, steps=2)
SERIES = (Series("one_record_batches", "one-record batches in the topic read", 1, True),
          Series("batches_of_100", "batches of 100 in the topic read", 100, True),
          Series("other_topic", "one-record batches in another topic", 1, False))


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


async def bulk(bootstrap: str, topic: str, count: int, per_batch: int) -> None:
    """`count` records as batches of `per_batch`, each sent as a batch of its own."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                max_batch_size=per_batch * (len(VALUE) + 64))
    await producer.start()
    try:
        pending = []
        for first in range(0, count, per_batch):
            batch = producer.create_batch()
            for i in range(first, min(count, first + per_batch)):
                if batch.append(timestamp=None, key=f"k{i % 1000}".encode(),
                                value=VALUE) is None:
                    raise RuntimeError(f"a batch took fewer than {per_batch} records")
            batch.close()
            pending.append(await producer.send_batch(batch, topic,
                                                     partition=(first // per_batch) % PARTITIONS))
            if len(pending) >= 64:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def run_series(bootstrap: str, pid: int, mode: Mode, series: Series
                     ) -> list[dict[str, float]]:
    """Steady windows on topic `read`, with `mode.bulk` records added between them: the bulk
    batches and records held, and broker cores, per window."""
    filled = "read" if series.into_read_topic else "other"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in {"read", filled}])
    finally:
        await admin.close()
    windows: list[dict[str, float]] = []
    records = batches = 0
    for step in range(mode.steps):
        before, started = cpu_seconds(pid), time.monotonic()
        read = await steady(bootstrap, "read", mode.window_seconds)
        cores = (cpu_seconds(pid) - before) / (time.monotonic() - started)
        windows.append({"bulk_records": records, "bulk_batches": batches, "cores": cores,
                        "read": read})
        if step < mode.steps - 1:
            await bulk(bootstrap, filled, mode.bulk, series.per_batch)
            records += mode.bulk
            batches += -(-mode.bulk // series.per_batch)
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
    for series in SERIES:
        with EmbeddedBroker() as broker:  # each series from an empty broker
            details[series.key] = asyncio.run(run_series(broker.bootstrap, broker.pid, mode,
                                                         series))
    figures: list[results.Figure] = []
    for series in SERIES:
        for window in details[series.key]:
            figures.append({"name": f"broker CPU at {RATE}/s, {window['bulk_records']:,.0f} "
                                    f"records as {series.label}",
                            "value": window["cores"] * 100, "unit": "% of a core"})
    first = details[SERIES[0].key]
    growth = first[-1]["cores"] / first[0]["cores"] if first[0]["cores"] > 0 else float("nan")
    figures.append({"name": f"last window / first ({SERIES[0].label})", "value": growth,
                    "unit": "x"})
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

"""Plain aiokafka producing and consuming, for the CLI tools and the demo (not the engine path)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def publish(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    *,
    idempotence: bool = False,
) -> int:
    """Write (key, value) records and wait until the broker has acknowledged every one."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotence
    )
    await producer.start()
    count = 0
    try:
        pending = [await producer.send(topic, value=value, key=key) for key, value in records]
        for future in pending:
            await future
            count += 1
    finally:
        await producer.stop()
    return count


def record_as_json(topic: str, partition: int, offset: int, key: bytes | None,
                   value: bytes | None, timestamp_ms: int) -> dict[str, Any]:
    """A consumed record as one JSON object; JSON values are embedded, others kept as text."""
    decoded: Any = None
    if value is not None:
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            decoded = value.decode("utf-8", "replace")
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp_ms": timestamp_ms,
        "key": key.decode("utf-8", "replace") if key is not None else None,
        "value": decoded,
    }


async def watch(
    bootstrap: str,
    topic: str,
    *,
    from_beginning: bool = True,
    idle_timeout: float | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Yield a topic's records as JSON objects until `idle_timeout` seconds pass with none."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    try:
        last = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    last = time.monotonic()
                    yield record_as_json(r.topic, r.partition, r.offset, r.key, r.value,
                                         r.timestamp)
            if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                return
            await asyncio.sleep(0)
    finally:
        await consumer.stop()

"""The outbox against the real broker: where records land, in what order, what flush returns."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.outbox import Outbox
from streams.topics import ensure_topics

PARTITIONS = 4


async def _read_all(bootstrap: str, topic: str, count: int) -> list[tuple[int, int, bytes | None,
                                                                         bytes | None, int]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    seen: list[tuple[int, int, bytes | None, bytes | None, int]] = []
    try:
        async with asyncio.timeout(30):
            while len(seen) < count:
                for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                    seen += [(tp.partition, m.offset, m.key, m.value, m.timestamp)
                             for m in messages]
    finally:
        await consumer.stop()
    return seen


async def _scenario(bootstrap: str) -> None:
    keyed, placed, reference = (f"outbox-{uuid.uuid4().hex[:8]}-{name}"
                                for name in ("keyed", "placed", "reference"))
    await ensure_topics(bootstrap, [keyed, placed, reference], PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                max_batch_size=4096)  # Tansu has no idempotent producer
    await producer.start()
    try:
        box = Outbox(producer)
        keys = [f"subject-{i % 37}".encode() for i in range(600)]
        big = b"x" * 10_000  # larger than a whole produce batch: goes alone
        for i, key in enumerate(keys):
            box.add(keyed, key, big if i == 300 else f"{i}".encode(), timestamp=1_700_000_000.5)
        box.add(placed, None, b"tombstone-free", partition=2)
        box.add(placed, b"k", None, partition=2)  # a tombstone
        box.add(placed, b"k", b"v", partition=3)
        assert len(box) == 603
        last = await box.flush()
        assert len(box) == 0

        # The partition of each key is the one a plain send picks (aiokafka's default
        # partitioner, which faust uses too).
        expected_partition = {}
        for key in set(keys):
            metadata = await (await producer.send(reference, key=key, value=b"."))
            expected_partition[key] = metadata.partition
    finally:
        await producer.stop()

    records = await _read_all(bootstrap, keyed, len(keys))
    assert len(records) == len(keys)
    by_partition: dict[int, list[int]] = {}
    for partition, offset, key, value, timestamp in sorted(records, key=lambda r: r[:2]):
        assert key is not None and value is not None
        assert partition == expected_partition[key]
        assert timestamp == 1_700_000_000_500
        by_partition.setdefault(partition, []).append(
            300 if value == big else int(value))
        assert last[TopicPartition(keyed, partition)] >= offset
    for partition, indices in by_partition.items():
        assert indices == sorted(indices), "records of one partition keep the order they came in"
        assert last[TopicPartition(keyed, partition)] == len(indices) - 1
    assert sorted(i for indices in by_partition.values() for i in indices) == list(range(600))

    placed_records = await _read_all(bootstrap, placed, 3)
    assert sorted((p, o, k, v) for p, o, k, v, _ in placed_records) == [
        (2, 0, None, b"tombstone-free"), (2, 1, b"k", None), (3, 0, b"k", b"v")]
    assert last[TopicPartition(placed, 2)] == 1
    assert last[TopicPartition(placed, 3)] == 0


def test_records_land_where_a_plain_send_puts_them_in_order_and_flush_says_where(
        bootstrap: str) -> None:
    asyncio.run(_scenario(bootstrap))


async def _empty(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        assert await Outbox(producer).flush() == {}
    finally:
        await producer.stop()


def test_an_empty_flush_sends_nothing(bootstrap: str) -> None:
    asyncio.run(_empty(bootstrap))

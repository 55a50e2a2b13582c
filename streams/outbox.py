"""Where a batch's records leave a worker: one produce batch per partition, awaited together.

faust's `Topic.send` costs a `FutureMessage`, a signal, and aiokafka's per-record accumulator
path and future, for every record; a worker sends four or five records per SET (re-keyed
input, decision, flags, and the tables' changelog records), so those layers were a large share
of its CPU (bench/bench_pipeline.py's profile). An outbox collects a batch's records and hands
each partition's to faust's own aiokafka producer as whole batches (`send_batch`): the same
producer, acks and idempotence, the same default partitioner on the key, records of one
partition in the order they were added, and one future per batch instead of one per record.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.structs import TopicPartition

Records = list[tuple[bytes | None, bytes | None, int | None]]


@functools.lru_cache(maxsize=16384)
def _key_hash(key: bytes) -> int:
    """aiokafka's `DefaultPartitioner` hash (Kafka's murmur2), pure Python there; a worker's
    keys are its subjects, which come again and again."""
    return int(murmur2(key)) & 0x7FFFFFFF


@dataclass
class Outbox:
    """Records to send, grouped by topic and partition (`None`: by the key's partitioner)."""

    producer: AIOKafkaProducer
    _keyed: dict[str, Records] = field(default_factory=dict)
    _placed: dict[TopicPartition, Records] = field(default_factory=dict)

    def add(self, topic: str, key: bytes | None, value: bytes | None, *,
            partition: int | None = None, timestamp: float | None = None) -> None:
        """Queue one record; `timestamp` in seconds (the broker's time when None)."""
        record = (key, value, None if timestamp is None else int(timestamp * 1000))
        if partition is None:
            self._keyed.setdefault(topic, []).append(record)
        else:
            self._placed.setdefault(TopicPartition(topic, partition), []).append(record)

    async def placement(self, topic: str
                        ) -> tuple[int, Callable[[bytes | None, bytes | None], int]]:
        """The topic's partition count, and the partition `add` without one puts a record
        (key, value) in: aiokafka's own choice, its default partitioner's hash cached."""
        producer = self.producer
        await producer.client._wait_on_metadata(topic)
        partitions = list(producer._metadata.partitions_for_topic(topic))  # as aiokafka
        default = type(producer._partitioner) is DefaultPartitioner

        def place(key: bytes | None, value: bytes | None) -> int:
            if default and key is not None:
                return int(partitions[_key_hash(key) % len(partitions)])
            return int(producer._partition(topic, None, None, None, key, value))

        return len(partitions), place

    def __len__(self) -> int:
        return sum(map(len, self._keyed.values())) + sum(map(len, self._placed.values()))

    async def flush(self) -> dict[TopicPartition, int]:
        """Send everything queued and wait until the broker has all of it: the offset of the
        last record written, per partition. Raises what the producer raises; then nothing
        can be assumed written, and the caller's batch must not be acknowledged."""
        by_partition = await self._partitioned()
        self._keyed, self._placed = {}, {}
        sent: list[tuple[TopicPartition, int, asyncio.Future[Any]]] = []
        for tp, records in by_partition.items():
            for count, batch in self._batches(records):
                future = await self.producer.send_batch(batch, tp.topic, partition=tp.partition)
                sent.append((tp, count, future))
        last: dict[TopicPartition, int] = {}
        for tp, count, future in sent:
            metadata = await future
            last[tp] = max(last.get(tp, -1), metadata.offset + count - 1)
        return last

    async def _partitioned(self) -> dict[TopicPartition, Records]:
        by_partition: dict[TopicPartition, Records] = {}
        for topic, records in self._keyed.items():
            _count, place = await self.placement(topic)
            for record in records:
                partition = place(record[0], record[1])
                by_partition.setdefault(TopicPartition(topic, partition), []).append(record)
        for tp, records in self._placed.items():
            by_partition.setdefault(tp, []).extend(records)
        return by_partition

    def _batches(self, records: Records) -> Iterator[tuple[int, Any]]:
        """The records cut into produce batches as full as the producer's size limit allows."""
        batch, count = self.producer.create_batch(), 0
        for key, value, timestamp in records:
            if batch.append(key=key, value=value, timestamp=timestamp) is None:
                batch.close()
                yield count, batch
                batch, count = self.producer.create_batch(), 0
                batch.append(key=key, value=value, timestamp=timestamp)
            count += 1
        if count:
            batch.close()
            yield count, batch

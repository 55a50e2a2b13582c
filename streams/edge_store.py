"""Stream configurations on a compacted Kafka topic: they survive restarts of the edge.

Key: the stream id; value: the `StreamRecord` JSON; a deleted stream is a tombstone. At start
the topic is read to its end offsets; afterwards every change is written (acks=all) before it
is applied and answered. One edge process owns the store (changes made by another process are
seen at its next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from caep.ssf.models import StreamRecord
from streams.topics import ensure_topics

log = logging.getLogger("caep.edge.store")
Listener = Callable[[StreamRecord | None, StreamRecord | None], None]


class StreamStore:
    """All streams in memory, every change durable first."""

    def __init__(self, bootstrap: str, topic: str, *, partitions: int, replication: int,
                 idempotence: bool, timeout: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.replication = replication
        self.idempotence = idempotence
        self.timeout = timeout
        self.streams: dict[str, StreamRecord] = {}
        self.lock = asyncio.Lock()
        self._listeners: list[Listener] = []
        self._producer: AIOKafkaProducer | None = None

    def on_change(self, listener: Listener) -> None:
        """`listener(before, after)` after each change (None: absent)."""
        self._listeners.append(listener)

    async def start(self) -> None:
        await ensure_topics(self.bootstrap, [self.topic], self.partitions, self.replication,
                            compacted={self.topic})
        await self._load()
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                          enable_idempotence=self.idempotence,
                                          client_id="caep-edge-store")
        await self._producer.start()

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            # every write was awaited, so nothing is pending: a long wait means no broker
            with contextlib.suppress(KafkaError, asyncio.TimeoutError):
                await asyncio.wait_for(producer.stop(), 3.0)

    async def _load(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            await consumer.topics()  # fetches metadata of every topic
            partitions = consumer.partitions_for_topic(self.topic) or set()
            assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(assigned)
            remaining = {tp for tp, end in ends.items() if end > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        self._apply(record.key, record.value)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        log.info("loaded %d stream(s) from %s", len(self.streams), self.topic)

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        stream_id = key.decode("utf-8", "replace")
        if value is None:
            self.streams.pop(stream_id, None)
            return
        try:
            self.streams[stream_id] = StreamRecord.model_validate_json(value)
        except ValidationError as exc:
            log.error("unreadable stream record %s skipped: %s", stream_id, exc)

    async def _write(self, stream_id: str, value: bytes | None) -> None:
        if self._producer is None:
            raise KafkaError("the stream store is not running")
        sent = await self._producer.send(self.topic, key=stream_id.encode(), value=value)
        await asyncio.wait_for(sent, self.timeout)

    def get(self, stream_id: str) -> StreamRecord | None:
        return self.streams.get(stream_id)

    def owned_by(self, owner: str) -> list[StreamRecord]:
        return sorted((r for r in self.streams.values() if r.owner == owner),
                      key=lambda r: r.created_at)

    async def put(self, record: StreamRecord) -> None:
        """Durable first, then visible."""
        await self._write(record.stream_id, record.model_dump_json().encode())
        before = self.streams.get(record.stream_id)
        self.streams[record.stream_id] = record
        self._notify(before, record)

    async def delete(self, stream_id: str) -> None:
        await self._write(stream_id, None)
        before = self.streams.pop(stream_id, None)
        self._notify(before, None)

    def _notify(self, before: StreamRecord | None, after: StreamRecord | None) -> None:
        for listener in self._listeners:
            try:
                listener(before, after)
            except Exception:
                log.exception("stream listener failed")


"""Record batches as the broker keeps them, read with raw Fetch requests: tests about how
records are grouped need the batches, which consumers hide."""

from __future__ import annotations

import struct

from aiokafka import AIOKafkaClient, TopicPartition
from aiokafka.protocol.fetch import FetchRequest

BATCH_HEADER = 12  # baseOffset (int64) and batchLength (int32) precede the rest of a batch
RECORDS_AT = 57  # where a v2 batch's record count lies, from its start
MAX_BYTES = 4 * 1024 * 1024


async def record_batches(bootstrap: str, topic: str, partition: int) -> list[int]:
    """The record count of each batch in `topic`'s `partition`, in offset order."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        counts: list[int] = []
        offset = 0
        while True:
            answer = await client.send(leader, FetchRequest(
                10, 1, MAX_BYTES, 0, [(topic, [(partition, offset, MAX_BYTES)])]))
            data: bytes = answer.topics[0][1][0][-1] or b""
            position = 0
            while position + BATCH_HEADER <= len(data):
                base, length = struct.unpack_from(">qi", data, position)
                if position + BATCH_HEADER + length > len(data):
                    break  # a batch cut short by max bytes: fetched again from its start
                records = struct.unpack_from(">i", data, position + RECORDS_AT)[0]
                counts.append(records)
                offset = base + records
                position += BATCH_HEADER + length
            if position == 0:
                return counts
    finally:
        await client.close()

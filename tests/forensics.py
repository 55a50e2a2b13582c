"""What a failed crash test leaves behind: every record of the topics and the group's offsets."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

PARTITIONS = 4


async def _dump(bootstrap: str, topics: list[str], group: str) -> list[str]:
    lines: list[str] = []
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    await probe.start()  # reads the group's offsets without joining it
    try:
        for topic in topics:
            for partition in range(PARTITIONS):
                committed = await probe.committed(TopicPartition(topic, partition))
                lines.append(f"committed {topic}[{partition}] = {committed}")
    finally:
        await probe.stop()
    for topic in topics:
        reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                  enable_auto_commit=False, fetch_max_wait_ms=100)
        await reader.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            ends = await reader.end_offsets(tps)
            position = dict.fromkeys(tps, 0)
            while any(position[tp] < ends[tp] for tp in tps):
                for tp, records in (await reader.getmany(timeout_ms=500)).items():
                    for r in records:
                        position[tp] = r.offset + 1
                        lines.append(f"{topic}[{r.partition}]@{r.offset} ts={r.timestamp} "
                                     f"key={r.key!r} value={(r.value or b'')!r}")
        finally:
            await reader.stop()
    return lines


def dump_topics(bootstrap: str, topics: list[str], group: str, path: Path) -> None:
    path.write_text("\n".join(asyncio.run(_dump(bootstrap, topics, group))) + "\n",
                    encoding="utf-8")

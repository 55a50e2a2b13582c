"""The edge's producer: pushes that arrive within its linger reach the broker as one batch
(fewer requests; on the embedded broker also cheaper reads, see bench/bench_broker.py)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from streams.edge_sink import DurableSink
from streams.topics import ensure_topics
from tests.batches import record_batches
from tests.conftest import Idp
from tests.edge_support import edge_settings, running_edge

WRITES = 10
APART = 0.003  # seconds between two writes: all of them inside a 50 ms linger


async def spaced_writes(sink: DurableSink, topic: str) -> None:
    async def write(n: int) -> None:
        await asyncio.sleep(n * APART)
        await sink.write(topic, b"subject", f"set-{n}".encode())

    await asyncio.gather(*(write(n) for n in range(WRITES)))


def test_writes_within_the_linger_share_a_batch_and_each_is_acknowledged(
        bootstrap: str) -> None:
    topic = f"linger-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(bootstrap, [topic], 1))

    async def scenario() -> list[int]:
        sink = DurableSink(bootstrap, idempotence=False, max_in_flight=WRITES, timeout=5,
                           linger_ms=50)
        await sink.start()
        try:
            await spaced_writes(sink, topic)
            assert sink.in_flight == 0
        finally:
            await sink.stop()
        return await record_batches(bootstrap, topic, 0)

    batches = asyncio.run(scenario())
    assert sum(batches) == WRITES
    assert len(batches) <= 3, batches  # one, unless the loop stalled past the linger


def test_the_edge_producer_lingers_as_configured(bootstrap: str, idp: Idp,
                                                 tmp_path: Path) -> None:
    default = edge_settings(bootstrap, idp.trust_file, tmp_path)
    assert default.edge_linger_ms == 5  # Kafka's producer default since 4.0
    with running_edge(edge_settings(bootstrap, idp.trust_file, tmp_path,
                                    edge_linger_ms=40)) as edge:
        assert edge.edge.sink.linger_ms == 40

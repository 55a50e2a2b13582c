"""faust's aiokafka transport with two changes. Brokers use it through the scheme `caep-kafka://`.

- A configurable fetch max-wait. faust hard-codes `fetch_max_wait_ms=1500`. Kafka answers a
  fetch as soon as data arrives, so there it only sets how often an idle consumer polls; Tansu
  holds every fetch for the full wait, which put ~750 ms of average latency between a SET and
  its decision.
- No record skipped on a partition nobody has committed to. Around every rebalance faust drops
  records it fetched for partitions that are not active yet and then seeks every partition
  back to its committed offset to read them again; aiokafka leaves a partition with no
  committed offset where the fetch had got to, so a worker that died before its first commit
  handed its successor partitions whose waiting records were silently skipped (issue 5,
  tests/test_takeover.py). Those partitions are rewound to their start instead, which is what
  `auto_offset_reset="earliest"` promises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

SCHEME = "caep-kafka"
DEFAULT_FETCH_MAX_WAIT_MS = 100


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when it builds its fetcher in start(), which has not run yet.
        consumer._fetch_max_wait_ms = getattr(
            self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS
        )
        return consumer

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed: Mapping[TP, int] = await super().seek_to_committed()
        if self.app.conf.consumer_auto_offset_reset == "earliest":
            acking = self.app.topics.acking_topics
            never = [tp for tp, offset in committed.items() if not offset and tp.topic in acking]
            if never:
                await self.seek_to_beginning(*never)
        return committed


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[Any] = Consumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"

"""faust's aiokafka transport with one change: a configurable fetch max-wait.

faust hard-codes `fetch_max_wait_ms=1500`. Kafka answers a fetch as soon as data arrives, so
there it only sets how often an idle consumer polls; Tansu holds every fetch for the full wait,
which put ~750 ms of average latency between a SET and its decision. Brokers use this transport
through the URL scheme `caep-kafka://`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

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


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[Any] = Consumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"

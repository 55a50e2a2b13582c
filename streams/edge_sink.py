"""Durable writes for the push endpoint: a record is acknowledged only once the broker has it.

The producer sends with acks=all (and idempotence wherever the cluster supports it). What it
holds is bounded: at most `max_in_flight` records may be handed over and not yet settled, so a
slow or absent broker turns into refusals (429), never into unbounded memory; a record that is
not acknowledged within `timeout` seconds is answered 503 and still counted until the producer
settles it. Without idempotence the producer gives such a record up too (its delivery timeout
is `timeout`), so a broker that comes back does not get it behind the client's back; with
idempotence aiokafka retries it until the broker takes it, and the client's retry writes a
second copy, which the engine de-duplicates by (iss, jti).

After a failure the sink checks that the topic exists, creating it if not, before it hands
the producer another record. A broker that comes back empty (Tansu keeps everything in memory)
acknowledges records for a topic it no longer has, and they can never be read (the topic
created later is corrupted by them). While the broker is down that check fails at once, so
later pushes are answered 503 without being buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.topics import ensure_topics


class Saturated(Exception):
    """Too many records in flight: the client should retry later (HTTP 429)."""


class Unavailable(Exception):
    """The broker did not acknowledge in time or refused the record (HTTP 503)."""


class DurableSink:
    """One idempotent, acks=all producer with a bounded number of unsettled records."""

    def __init__(self, bootstrap: str, *, idempotence: bool, max_in_flight: int,
                 timeout: float, request_timeout_ms: int | None = None, partitions: int = 1,
                 replication: int = 1, linger_ms: int = 0) -> None:
        self.bootstrap = bootstrap
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.partitions = partitions
        self.replication = replication
        self.linger_ms = linger_ms
        self.in_flight = 0
        self._present: set[str] = set()  # topics seen on the broker since its last failure
        self._checking = asyncio.Lock()
        if request_timeout_ms is None:  # also the delivery timeout of a non-idempotent producer
            request_timeout_ms = max(1, math.ceil(timeout * 1000))
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap, "acks": "all", "enable_idempotence": idempotence,
            "request_timeout_ms": request_timeout_ms, "linger_ms": linger_ms,
            "client_id": "caep-edge"}
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Within the serving event loop (aiokafka binds its producer to the running loop)."""
        self._producer = AIOKafkaProducer(**self._options)
        await self._producer.start()

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            # records still unacknowledged were answered 503: waiting longer than a push
            # would have waited for them helps nobody
            with contextlib.suppress(KafkaError, asyncio.TimeoutError):
                await asyncio.wait_for(producer.stop(), self.timeout)

    def _settled(self, future: asyncio.Future[Any]) -> None:
        self.in_flight -= 1
        if not future.cancelled():
            future.exception()  # retrieved: a failure was already answered as 503

    async def write(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Return once the broker acknowledged the record; raise Saturated or Unavailable."""
        if self._producer is None:
            raise Unavailable("the producer is not running")
        if self.in_flight >= self.max_in_flight:
            raise Saturated(f"{self.in_flight} records await the broker")
        self.in_flight += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            if topic not in self._present:
                await asyncio.wait_for(self._ensure(topic), max(0.0, deadline - loop.time()))
            delivery = await asyncio.wait_for(
                self._producer.send(topic, value=value, key=key),
                max(0.0, deadline - loop.time()))
        except (KafkaError, OSError, TimeoutError) as exc:
            self.in_flight -= 1
            self._present.clear()
            raise Unavailable(f"the broker did not take the record: {exc!r}") from None
        except BaseException:
            self.in_flight -= 1
            raise
        delivery.add_done_callback(self._settled)
        try:
            await asyncio.wait_for(asyncio.shield(delivery), max(0.0, deadline - loop.time()))
        except TimeoutError:
            self._present.clear()
            raise Unavailable(f"no acknowledgement within {self.timeout:g} s") from None
        except KafkaError as exc:
            self._present.clear()
            raise Unavailable(f"the broker refused the record: {exc!r}") from None

    async def _ensure(self, topic: str) -> None:
        """Create `topic` unless the broker lists it (one check at a time; the others wait)."""
        async with self._checking:
            if topic in self._present:
                return
            await ensure_topics(self.bootstrap, [topic], self.partitions, self.replication,
                                request_timeout_ms=max(1000, int(self.timeout * 1000)))
            self._present.add(topic)

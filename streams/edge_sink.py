"""Durable writes for the push endpoint: a record is acknowledged only once the broker has it.

The producer sends with acks=all (and idempotence wherever the cluster supports it). What it
holds is bounded: at most `max_in_flight` records may be handed over and not yet settled, so a
slow or absent broker turns into refusals (429), never into unbounded memory; a record that is
not acknowledged within `timeout` seconds is answered 503 and still counted until the producer
settles it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError


class Saturated(Exception):
    """Too many records in flight: the client should retry later (HTTP 429)."""


class Unavailable(Exception):
    """The broker did not acknowledge in time or refused the record (HTTP 503)."""


class DurableSink:
    """One idempotent, acks=all producer with a bounded number of unsettled records."""

    def __init__(self, bootstrap: str, *, idempotence: bool, max_in_flight: int,
                 timeout: float, request_timeout_ms: int = 30000) -> None:
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.in_flight = 0
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap, "acks": "all", "enable_idempotence": idempotence,
            "request_timeout_ms": request_timeout_ms, "linger_ms": 0, "client_id": "caep-edge"}
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
            delivery = await asyncio.wait_for(
                self._producer.send(topic, value=value, key=key), self.timeout)
        except (KafkaError, TimeoutError) as exc:
            self.in_flight -= 1
            raise Unavailable(f"the broker did not take the record: {exc!r}") from None
        except BaseException:
            self.in_flight -= 1
            raise
        delivery.add_done_callback(self._settled)
        try:
            await asyncio.wait_for(asyncio.shield(delivery), max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise Unavailable(f"no acknowledgement within {self.timeout:g} s") from None
        except KafkaError as exc:
            raise Unavailable(f"the broker refused the record: {exc!r}") from None

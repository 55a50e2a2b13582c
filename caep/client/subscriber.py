"""The revocation subscriber: `caep.decisions` and `caep.flags` into a `SessionView`.

One aiokafka consumer in a consumer group of its own reads both topics from their start, so
each process holds every partition: a view needs every decision, so two processes must never
share a group (one that finds itself sharing reports ERROR). Nothing is committed; the view is
rebuilt from the topics at every start. `start()` returns once the view has caught up with the
end offsets the topics had when the partitions were assigned: from then on `is_revoked` and
friends answer for everything decided before the service started.

Status (for health checks and the OpenFeature provider):

- NOT_READY until the first catch-up;
- READY while the broker answers and the view keeps up;
- STALE when, for `stale_after` seconds, the broker has not answered a fetch, records wait
  unapplied, or one batch (with its callbacks) is still being applied; READY again on its own;
- ERROR on errors retrying will not fix (authorisation, a shared group, a bug), reported with
  the reason; READY again if a later attempt succeeds.

Changes reach callbacks (`on_change`) and async iterators (`changes()`) only once the view is
live: catching up builds the view silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from enum import StrEnum
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import ConsumerStoppedError, IllegalStateError, KafkaError

from caep.client.view import Change, FlagsEntry, SessionView, StepUp
from caep.errors import BrokerError, CaepError, ConfigError
from caep.policy import Policy, load_policy
from caep.settings import Settings

log = logging.getLogger("caep.client")

ChangeCallback = Callable[[Change], Awaitable[None] | None]
StatusCallback = Callable[["Status", str], None]


class Status(StrEnum):
    NOT_READY = "NOT_READY"
    READY = "READY"
    STALE = "STALE"
    ERROR = "ERROR"


class SubscriberError(CaepError):
    """The subscriber could not do what was asked (start, catch up in time)."""


class ChangesOverflow(CaepError):
    """An async iterator of changes fell too far behind; re-read the view, then iterate anew."""


class ChangeStream:
    """Changes as an async iterator, buffered up to `maxsize`. A reader that falls further
    behind gets `ChangesOverflow` after the buffered changes, rather than silently missing
    some."""

    def __init__(self, owner: Subscriber, maxsize: int) -> None:
        self._owner = owner
        self._maxsize = maxsize
        self._buffer: deque[Change] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self.overflowed = False

    def offer(self, change: Change) -> None:
        if self._closed or self.overflowed:
            return
        if len(self._buffer) >= self._maxsize:
            self.overflowed = True
        else:
            self._buffer.append(change)
        self._wakeup.set()

    def close(self) -> None:
        self._closed = True
        self._owner._streams.discard(self)
        self._wakeup.set()

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> Change:
        while not self._buffer:
            if self.overflowed:
                self.close()
                raise ChangesOverflow(f"more than {self._maxsize} changes were not read")
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._buffer.popleft()

    async def __aenter__(self) -> ChangeStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def instance_group_id(prefix: str = "caep-client") -> str:
    """A group id of this process's own: host, pid and a random part."""
    return f"{prefix}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: Subscriber) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.owner._assigned_at = None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.owner._on_assigned(set(assigned))


class Subscriber:
    """Consumes the engine's decisions and flags into a `SessionView` for one service.

    Use as `async with Subscriber(settings, tenants=["acme"]) as subscriber:` or call
    `start()` / `stop()`. Queries (`is_revoked`, ...) are plain dictionary look-ups, safe to
    call from any thread. `max_session_lifetime`: the longest the identity provider lets a
    session live (default: the policy's absolute lifetime); decisions are remembered that long
    after they were made, so no token of a revoked session is let in again.
    """

    def __init__(self, settings: Settings | None = None, *, tenants: Iterable[str] | None = None,
                 policy: Policy | None = None, group_id: str | None = None,
                 stale_after: float | None = None, max_session_lifetime: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings if settings is not None else Settings()
        if not self.settings.bootstrap:
            raise ConfigError("the subscriber needs the engine's Kafka cluster: set "
                              "CAEP_BOOTSTRAP (host:port[,host:port])")
        if tenants is None:
            configured = self.settings.client_tenants or ""
            tenants = [t.strip() for t in configured.split(",")]
        self.view = SessionView(tenants, policy if policy is not None
                                else load_policy(self.settings.policy_file),
                                max_session_lifetime=(
                                    max_session_lifetime if max_session_lifetime is not None
                                    else self.settings.client_max_session_lifetime_seconds))
        self.group_id = group_id or self.settings.client_group_id or instance_group_id()
        self.stale_after = (stale_after if stale_after is not None
                            else self.settings.client_stale_after_seconds)
        self.topics = (self.settings.topic_decisions, self.settings.topic_flags)
        self.callback_errors = 0
        self._clock = clock
        self._status = Status.NOT_READY
        self._reason = "not started"
        self._consumer: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._callbacks: list[ChangeCallback] = []
        self._status_callbacks: list[StatusCallback] = []
        self._streams: set[ChangeStream] = set()
        self._ready = asyncio.Event()
        self._first_ready = threading.Event()
        self._settled = threading.Event()  # the status is other than NOT_READY
        self._live = False
        self._targets: dict[TopicPartition, int] = {}
        self._next: dict[TopicPartition, int] = {}
        self._assigned_at: float | None = None
        self._shared: str | None = None
        self._failure: str | None = None
        self._busy_since: float | None = None
        self._behind_since: dict[TopicPartition, float] = {}
        self._unsettled_since: float | None = None
        self._stopping = False

    # -- the view -------------------------------------------------------------------------------

    def is_revoked(self, session_id: str, tenant: str | None = None) -> bool:
        return self.view.is_revoked(session_id, tenant)

    def is_revoked_subject(self, subject: Mapping[str, Any], tenant: str | None = None,
                           established_at: float | None = None) -> bool:
        return self.view.is_revoked_subject(subject, tenant, established_at)

    def required_acr(self, session_id: str, tenant: str | None = None) -> str | None:
        return self.view.required_acr(session_id, tenant)

    def step_up(self, session_id: str, tenant: str | None = None) -> StepUp | None:
        return self.view.step_up(session_id, tenant)

    def flags(self, session_id: str, tenant: str | None = None) -> dict[str, Any]:
        return self.view.flags(session_id, tenant)

    def session_flags(self, session_id: str, tenant: str | None = None) -> FlagsEntry | None:
        return self.view.session_flags(session_id, tenant)

    # -- status and reactions -------------------------------------------------------------------

    @property
    def status(self) -> Status:
        return self._status

    @property
    def reason(self) -> str:
        """Why the status is what it is, in a few words."""
        return self._reason

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call `callback(change)` (awaited if it is async) for every live change, in order.
        A slow callback holds the view back (and makes it STALE). Returns an unsubscribe."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def on_status(self, callback: StatusCallback) -> Callable[[], None]:
        """Call `callback(status, reason)` on every status change, on the event loop."""
        self._status_callbacks.append(callback)
        return lambda: (self._status_callbacks.remove(callback)
                        if callback in self._status_callbacks else None)

    def changes(self, maxsize: int = 1000) -> ChangeStream:
        """Live changes as an async iterator (`async with subscriber.changes() as changes:`)."""
        stream = ChangeStream(self, maxsize)
        self._streams.add(stream)
        return stream

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block (from another thread) until the view first caught up; False on timeout."""
        return self._first_ready.wait(timeout)

    def wait_settled(self, timeout: float | None = None) -> Status:
        """Block (from another thread) until the status is READY, STALE or ERROR, or
        `timeout` passed; the status then."""
        self._settled.wait(timeout)
        return self._status

    def lag(self) -> dict[str, int]:
        """Records on the broker not yet applied, per `topic:partition` (fetched ones only)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out: dict[str, int] = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                out[f"{tp.topic}:{tp.partition}"] = max(0, high - self._next.get(tp, 0))
        return out

    def _set_status(self, status: Status, reason: str) -> None:
        if status is self._status and reason == self._reason:
            return
        changed = status is not self._status
        self._status, self._reason = status, reason
        if status is Status.READY:
            self._ready.set()
            self._first_ready.set()
        else:
            self._ready.clear()
        if status is Status.NOT_READY:
            self._settled.clear()
        else:
            self._settled.set()
        if not changed:
            return
        log.log(logging.WARNING if status in (Status.STALE, Status.ERROR) else logging.INFO,
                "caep subscriber %s: %s", status, reason)
        for callback in list(self._status_callbacks):
            try:
                callback(status, reason)
            except Exception:
                self.callback_errors += 1
                log.exception("status callback failed")

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self, *, wait: bool = True, within: float | None = 60.0) -> None:
        """Join the group and read both topics from their start; with `wait`, return once the
        view has caught up (SubscriberError if it has not `within` seconds)."""
        if self._consumer is not None:
            raise SubscriberError("the subscriber is already started")
        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap, group_id=self.group_id, client_id=self.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=int(s.group_session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(s.group_heartbeat_interval_seconds * 1000),
            rebalance_timeout_ms=int(s.group_rebalance_timeout_seconds * 1000),
            fetch_max_wait_ms=s.consumer_fetch_max_wait_ms,
            request_timeout_ms=max(5000, int(s.group_session_timeout_seconds * 1000) + 1000),
            metadata_max_age_ms=30_000,
        )
        consumer.subscribe(list(self.topics), listener=_Rebalance(self))
        self._set_status(Status.NOT_READY, "joining the consumer group and catching up")
        self._consumer = consumer  # the first assignment can come while start() runs
        self._stopping = False
        try:
            await consumer.start()
        except KafkaError as exc:
            self._consumer = None
            await _stop_quietly(consumer)
            raise BrokerError(f"cannot reach the Kafka cluster at {s.bootstrap}: {exc}") from None
        self._tasks = [asyncio.create_task(self._consume(), name="caep-subscriber"),
                       asyncio.create_task(self._watch(), name="caep-subscriber-watchdog")]
        if wait:
            await self.wait_until_ready(within)

    async def wait_until_ready(self, within: float | None = 60.0) -> None:
        """Wait until READY; SubscriberError (with the reason) after `within` seconds."""
        try:
            await asyncio.wait_for(self._ready.wait(), within)
        except TimeoutError:
            raise SubscriberError(
                f"not caught up with {', '.join(self.topics)} after {within} s "
                f"({self._status}: {self._reason})") from None

    async def stop(self) -> None:
        """Stop consuming; the view keeps what it has, the status becomes NOT_READY."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._consumer is not None:
            await _stop_quietly(self._consumer)
            self._consumer = None
        for stream in list(self._streams):
            stream.close()
        self._live = False
        self._set_status(Status.NOT_READY, "stopped")

    async def __aenter__(self) -> Subscriber:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -- consuming ------------------------------------------------------------------------------

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        everything = {TopicPartition(topic, p) for topic in self.topics
                      for p in (consumer.partitions_for_topic(topic) or ())}
        missing = everything - assigned
        self._shared = (
            f"consumer group {self.group_id} is shared: {len(missing)} partition(s) went to "
            "another member, but every process needs every partition (give each its own group)"
            if missing else None)
        fresh = [tp for tp in assigned if tp not in self._next]
        for tp in assigned:
            if tp in self._next:  # consumed before this rebalance: go on where we were
                consumer.seek(tp, self._next[tp])
        if fresh:
            await consumer.seek_to_beginning(*fresh)
        self._targets = {}
        self._behind_since.clear()
        self._assigned_at = time.monotonic()
        await self._fetch_targets(assigned)

    async def _fetch_targets(self, partitions: Iterable[TopicPartition]) -> None:
        """The end offsets to catch up to; a failure leaves them for `_assess` to ask again."""
        wanted = [tp for tp in partitions if tp not in self._targets]
        if not wanted or self._consumer is None:
            return
        try:
            ends = await asyncio.wait_for(self._consumer.end_offsets(wanted), self.stale_after)
        except (KafkaError, TimeoutError) as exc:
            log.warning("caep subscriber: end offsets unavailable (%s); will ask again", exc)
            return
        self._targets.update(ends)

    async def _consume(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=1000)
            except ConsumerStoppedError:
                return
            except KafkaError as exc:
                if not getattr(exc, "retriable", False):
                    self._failure = f"{type(exc).__name__}: {exc}"
                log.warning("caep subscriber: %s: %s (retrying)", type(exc).__name__, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except Exception as exc:  # a bug must not end the subscriber silently
                log.exception("caep subscriber: unexpected error (retrying)")
                self._failure = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            self._failure = None
            if batch:
                await self._apply_batch(batch)
            await self._assess()

    async def _apply_batch(self, batch: Mapping[TopicPartition, list[Any]]) -> None:
        now = self._clock()
        self._busy_since = time.monotonic()
        try:
            for tp, records in batch.items():
                flags_topic = tp.topic == self.settings.topic_flags
                for record in records:
                    if flags_topic:
                        change = self.view.apply_flags(record.value, now)
                    else:
                        change = self.view.apply_decision(record.value, now)
                    self._next[tp] = record.offset + 1
                    if change is not None and self._live:
                        await self._dispatch(change)
        finally:
            self._busy_since = None

    async def _dispatch(self, change: Change) -> None:
        for callback in list(self._callbacks):
            try:
                result = callback(change)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.callback_errors += 1
                log.exception("change callback failed")
        for stream in list(self._streams):
            stream.offer(change)

    async def _positions(self) -> dict[TopicPartition, int] | None:
        """Where the consumer is on each assigned partition; None while one is unknown."""
        consumer = self._consumer
        out: dict[TopicPartition, int] = {}
        for tp in consumer.assignment():
            try:
                out[tp] = await asyncio.wait_for(consumer.position(tp), 0.5)
            except (TimeoutError, IllegalStateError):
                return None
        return out

    async def _assess(self) -> None:
        """Decide the status from what the consumer shows; no network call."""
        consumer = self._consumer
        if consumer is None or self._stopping:
            return
        if self._failure is not None:
            self._set_status(Status.ERROR, self._failure)
            return
        if self._shared is not None and self._assigned_at is not None:
            self._set_status(Status.ERROR, self._shared)
            return
        assignment = consumer.assignment()
        if self._assigned_at is not None:
            await self._fetch_targets(assignment)
        positions = await self._positions() if assignment and self._assigned_at else None
        if not self._live:
            if positions is not None and all(
                    positions[tp] >= self._targets.get(tp, 1 << 62) for tp in assignment):
                self._live = True
                self._set_status(Status.READY, "caught up")
            return
        problem = self._staleness(positions)
        if problem is None:
            self._set_status(Status.READY, "live")
        else:
            self._set_status(Status.STALE, problem)

    def _staleness(self, positions: dict[TopicPartition, int] | None) -> str | None:
        """Why the view may be out of date, once a condition has lasted `stale_after`."""
        consumer = self._consumer
        limit = self.stale_after
        mono = time.monotonic()
        if self._busy_since is not None and mono - self._busy_since > limit:
            return f"applying one batch (and its callbacks) for over {limit:g} s"
        if self._assigned_at is None or positions is None:
            if self._unsettled_since is None:
                self._unsettled_since = mono
            if mono - self._unsettled_since > limit:
                return (f"no partitions for over {limit:g} s (rebalancing, or the broker is "
                        "unreachable)")
            return None
        self._unsettled_since = None
        now_ms = time.time() * 1000
        for tp in consumer.assignment():
            polled = consumer.last_poll_timestamp(tp)
            if polled is not None and now_ms - polled > limit * 1000:
                return f"no answer from the broker for {(now_ms - polled) / 1000:.1f} s"
            high = consumer.highwater(tp)
            position = positions.get(tp, 0)
            if (high is not None and high > position) or position < self._targets.get(tp, 0):
                since = self._behind_since.setdefault(tp, mono)
                if mono - since > limit:
                    return f"{tp.topic}:{tp.partition} has been behind for over {limit:g} s"
            else:
                self._behind_since.pop(tp, None)
        return None

    async def _watch(self) -> None:
        """Status and eviction on a clock of their own: a stuck consume loop still shows."""
        interval = min(0.25, self.stale_after / 4)
        last_evict = 0.0
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                await self._assess()
                if time.monotonic() - last_evict >= 1.0:
                    last_evict = time.monotonic()
                    self.view.evict(self._clock())
            except Exception:
                log.exception("caep subscriber watchdog failed (continuing)")


async def _stop_quietly(consumer: Any) -> None:
    """aiokafka's stop() can let a CancelledError out of its fetcher when the broker is gone."""
    task = asyncio.current_task()
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        if task is not None and task.cancelling():
            raise
    except KafkaError as exc:
        log.warning("caep subscriber: stopping the consumer: %s", exc)


"""Delivery of the engine's decisions to relying parties' streams: push and poll.

A consumer reads `caep.decisions` (assigned every partition; offsets committed under the
group id `<app id>-ssf-edge`, see below), turns each decision into a CAEP event
(caep/ssf/mapping.py) and, for every stream that wants it, signs a SET for that stream.

* Push (RFC 8935): one lane per stream and subject, so one subject's SETs go out in order
  while other subjects proceed; a failed push is retried with exponential backoff (honouring
  `Retry-After`) up to `edge_push_max_attempts`; a 400 from the receiver is final.
* Poll (RFC 8936): a `PollQueue` per stream (caep/ssf/pollqueue.py); long polls wait up to
  `edge_poll_max_wait_seconds`.
* Status: a paused stream holds its SETs (bounded) and sends them once enabled again; a
  disabled stream drops them. Every status change is announced with a stream-updated SET,
  sent before the stream stops and after it starts again (SSF §8.1.5).

Queued SETs live in memory, at most `edge_max_held_events` per stream in its push lanes
(together), in its poll queue and among its held SETs (beyond it the oldest waiting ones are
dropped), and a decision's offset is committed only once every SET made
from it is settled (pushed or given up, acknowledged or rejected by the poll receiver, or
dropped by a disabled stream or a bound; caep/ssf/offsets.py). An edge that stops with SETs
still queued reads those decisions again when it starts and sends the same SETs (same `jti`):
at least once, receivers deduplicate by `jti`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from caep.decisions import Decision
from caep.settings import Settings
from caep.ssf import mapping, matching
from caep.ssf.auth import EdgeClients
from caep.ssf.management import SsfError
from caep.ssf.models import PUSH, PollRequest, PollResponse, StreamRecord
from caep.ssf.offsets import OffsetTracker
from caep.ssf.pollqueue import PollQueue
from caep.subjects import describe_validation_error
from streams.edge_keys import SigningKeys
from streams.edge_store import StreamStore
from streams.topics import ensure_topics

log = logging.getLogger("caep.edge.delivery")
MAX_BACKOFF = 60.0
CONTROL_LANE = "\x00control"
LONG_POLL_CHECK = 0.5  # how often a waiting long poll checks that its receiver is still there
STOP_TIMEOUT = 3.0  # leaving the group and closing connections; longer only when the broker is gone


Ref = tuple[TopicPartition, int]


@dataclass(frozen=True)
class Outgoing:
    """One signed SET for one stream; `ref` is the decision record it came from."""

    jti: str
    token: str
    lane: str
    control: bool = False
    ref: Ref | None = None


class Delivery:
    """Everything between the decisions topic and the receivers."""

    def __init__(self, settings: Settings, bootstrap: str, *, store: StreamStore,
                 keys: SigningKeys, clients: EdgeClients, issuer: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.store = store
        self.keys = keys
        self.clients = clients
        self.issuer = issuer
        self.lanes: dict[tuple[str, str], deque[Outgoing]] = {}
        self.pushing: dict[str, int] = {}  # SETs in a stream's push lanes
        self.tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.held: dict[str, deque[Outgoing]] = {}
        self.polls: dict[str, PollQueue] = {}
        self.poll_refs: dict[tuple[str, str], Ref] = {}
        self.offsets = OffsetTracker()
        self.decisions_read = 0
        self._committed: dict[TopicPartition, int] = {}
        self.delivered: dict[str, int] = {}
        self.given_up: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._consumer_task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        store.on_change(self._stream_changed)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._changed = asyncio.Event()
        self._http = httpx.AsyncClient(timeout=10.0)
        await ensure_topics(self.bootstrap, [self.settings.topic_decisions],
                            self.settings.topic_partitions,
                            self.settings.topic_replication_factor)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=f"{self.settings.app_id}-ssf-edge",
            enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=self.settings.consumer_fetch_max_wait_ms)
        await consumer.start()
        await consumer.topics()
        partitions = consumer.partitions_for_topic(self.settings.topic_decisions) or set()
        consumer.assign([TopicPartition(self.settings.topic_decisions, p)
                         for p in sorted(partitions)])
        self._consumer_task = asyncio.create_task(self._consume(consumer))

    async def stop(self) -> None:
        if self._consumer_task is not None:
            self._consumer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer_task
        for task in list(self.tasks.values()):
            task.cancel()
        for task in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.aclose()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                try:
                    batch = await consumer.getmany(timeout_ms=500)
                    for tp, records in batch.items():
                        for record in records:
                            self.decided(record.value, ref=(tp, record.offset))
                    await self._commit(consumer)
                except KafkaError as exc:
                    log.warning("decisions consumer: %r; retrying", exc)
                    await asyncio.sleep(1)
        finally:
            with contextlib.suppress(KafkaError, asyncio.TimeoutError):
                await asyncio.wait_for(consumer.stop(), STOP_TIMEOUT)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit every partition whose settled position moved."""
        moved = {tp: offset for tp, offset in self.offsets.committable().items()
                 if isinstance(tp, TopicPartition) and self._committed.get(tp) != offset}
        if moved:
            await consumer.commit(moved)
            self._committed.update(moved)

    def _settle(self, item: Outgoing) -> None:
        if item.ref is not None:
            self.offsets.settled(*item.ref)

    def _settle_polled(self, stream_id: str, jtis: list[str]) -> None:
        for jti in jtis:
            ref = self.poll_refs.pop((stream_id, jti), None)
            if ref is not None:
                self.offsets.settled(*ref)

    # -- decisions in ------------------------------------------------------------------------

    def decided(self, value: bytes | None, ref: Ref | None = None) -> int:
        """Queue one decision record for every stream that wants it; how many streams."""
        try:
            items = self._outgoing(value, ref)
        except Exception:  # one bad record must not stop delivery for everyone
            log.exception("decision at %s could not be turned into SETs; skipped", ref)
            items = []
        self.decisions_read += 1
        if ref is not None:
            self.offsets.seen(ref[0], ref[1], len(items))
        for record, item in items:
            self._send(record, item)
        return len(items)

    def _outgoing(self, value: bytes | None,
                  ref: Ref | None) -> list[tuple[StreamRecord, Outgoing]]:
        if value is None:
            return []
        try:
            decision = Decision.model_validate_json(value)
        except ValidationError as exc:
            log.warning("unreadable decision skipped: %s", describe_validation_error(exc))
            return []
        event = mapping.event_for(decision)
        if event is None:
            return []
        items = []
        now = time.time()
        for record in list(self.store.streams.values()):
            receiver = self.clients.receiver_by_id(record.owner)
            if (receiver is None or not receiver.serves(event.tenant)
                    or decision.decided_at < record.created_at
                    or record.status == "disabled"
                    or not matching.wants(record, event.event_type, event.subject)):
                continue
            claims = mapping.set_claims(event, issuer=self.issuer, audience=record.config.aud,
                                        stream_id=record.stream_id, now=now)
            items.append((record, Outgoing(claims["jti"], self.keys.sign(claims),
                                           lane=event.subject_key, ref=ref)))
        return items

    def verify(self, record: StreamRecord, state: str | None) -> None:
        claims = mapping.verification_claims(issuer=self.issuer, audience=record.config.aud,
                                             stream_id=record.stream_id, state=state,
                                             now=time.time())
        self._send(record, Outgoing(claims["jti"], self.keys.sign(claims), lane=CONTROL_LANE))

    def _stream_changed(self, before: StreamRecord | None, after: StreamRecord | None) -> None:
        """Store listener: announce status changes, release or drop held SETs."""
        if after is None:
            if before is not None:
                self._drop_queued(before.stream_id)
                self.polls.pop(before.stream_id, None)
        elif before is not None and before.status != after.status:
            stream_id = after.stream_id
            if after.status == "disabled":
                self._drop_queued(stream_id)
            elif after.status == "paused" and stream_id in self.polls:
                # not yet polled: held like anything queued from now on, order kept
                withdrawn = [Outgoing(jti, token, lane="",
                                      ref=self.poll_refs.pop((stream_id, jti), None))
                             for jti, token in self.polls[stream_id].withdraw()]
                held = self.held.setdefault(stream_id, deque())
                held.extendleft(reversed(withdrawn))
            claims = mapping.stream_updated_claims(
                issuer=self.issuer, audience=after.config.aud, stream_id=stream_id,
                status=after.status, reason=after.reason, now=time.time())
            self._send(after, Outgoing(claims["jti"], self.keys.sign(claims),
                                       lane=CONTROL_LANE, control=True))
            if after.status == "enabled":
                for item in self.held.pop(stream_id, deque()):
                    self._dispatch(after, item)
        self._changed.set()
        self._changed = asyncio.Event()

    # -- queues ------------------------------------------------------------------------------

    def _drop_queued(self, stream_id: str) -> None:
        """A disabled or deleted stream: held and poll-queued SETs are dropped (settled);
        push lanes drop theirs as they run."""
        for item in self.held.pop(stream_id, deque()):
            self._settle(item)
        if stream_id in self.polls:
            self._settle_polled(stream_id, self.polls[stream_id].clear())

    def _send(self, record: StreamRecord, item: Outgoing) -> None:
        if record.status == "disabled" and not item.control:
            self._settle(item)
            return
        if record.status == "paused" and not item.control:
            held = self.held.setdefault(record.stream_id, deque())
            held.append(item)
            while len(held) > self.settings.edge_max_held_events:
                self._settle(held.popleft())
                self.given_up[record.stream_id] = self.given_up.get(record.stream_id, 0) + 1
            return
        self._dispatch(record, item)

    def _dispatch(self, record: StreamRecord, item: Outgoing) -> None:
        if record.config.delivery.method != PUSH:
            queue = self._poll_queue(record.stream_id)
            if item.jti in queue.waiting or item.jti in queue.outstanding:
                self._settle(item)  # the same decision read twice: queued once
                return
            if item.ref is not None:
                self.poll_refs[(record.stream_id, item.jti)] = item.ref
            self._settle_polled(record.stream_id, queue.offer(item.jti, item.token))
            self._changed.set()
            self._changed = asyncio.Event()
            return
        key = (record.stream_id, item.lane)
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = deque()
            self.tasks[key] = asyncio.create_task(self._run_lane(key))
        lane.append(item)
        self.pushing[record.stream_id] = self.pushing.get(record.stream_id, 0) + 1
        if self.pushing[record.stream_id] > self.settings.edge_max_held_events:
            self._shed(record.stream_id)

    def _shed(self, stream_id: str) -> None:
        """A stream's push lanes hold at most `edge_max_held_events` SETs, so a receiver that
        is down cannot grow memory without end: beyond it the oldest SET waiting in the
        stream's longest lane is dropped (settled, counted as given up). The SET being
        pushed (a lane's first) stays, and so does every lane's order."""
        lanes = [lane for (sid, _), lane in self.lanes.items() if sid == stream_id]
        while self.pushing[stream_id] > self.settings.edge_max_held_events:
            longest = max(lanes, key=len)
            if len(longest) < 2:
                break
            dropped = longest[1]
            del longest[1]
            self.pushing[stream_id] -= 1
            self._settle(dropped)
            self.given_up[stream_id] = self.given_up.get(stream_id, 0) + 1

    def _poll_queue(self, stream_id: str) -> PollQueue:
        queue = self.polls.get(stream_id)
        if queue is None:
            queue = self.polls[stream_id] = PollQueue(
                max_held=self.settings.edge_max_held_events,
                redeliver_after=self.settings.edge_poll_redeliver_seconds)
        return queue

    # -- push --------------------------------------------------------------------------------

    async def _run_lane(self, key: tuple[str, str]) -> None:
        stream_id = key[0]
        lane = self.lanes[key]
        try:
            while lane:
                record = self.store.get(stream_id)
                item = lane[0]
                if record is None or (record.status == "disabled" and not item.control):
                    for dropped in lane:
                        self._settle(dropped)
                    break
                if record.status == "paused" and not item.control:
                    await self._changed.wait()
                    continue
                if await self._push(record, item):
                    self.delivered[stream_id] = self.delivered.get(stream_id, 0) + 1
                else:
                    self.given_up[stream_id] = self.given_up.get(stream_id, 0) + 1
                self._settle(lane.popleft())
                self.pushing[stream_id] -= 1
        finally:
            # whatever the lane still holds (dropped above, or left by a stop) leaves the
            # stream's count with it
            self.pushing[stream_id] -= len(lane)
            self.lanes.pop(key, None)
            self.tasks.pop(key, None)

    async def _push(self, record: StreamRecord, item: Outgoing) -> bool:
        """One SET to the receiver's endpoint, retried while retrying can help."""
        delivery = record.config.delivery
        headers = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}
        if delivery.authorization_header:
            headers["Authorization"] = delivery.authorization_header
        delay = self.settings.edge_push_backoff_seconds
        if self._http is None or delivery.endpoint_url is None:
            return False  # stopped, or not a push stream
        for attempt in range(1, self.settings.edge_push_max_attempts + 1):
            wait = delay
            try:
                answer = await self._http.post(delivery.endpoint_url, content=item.token,
                                               headers=headers)
            except Exception as exc:  # transport errors, and URLs httpx cannot use
                log.info("push to %s failed (attempt %d): %r", record.stream_id, attempt, exc)
            else:
                if 200 <= answer.status_code < 300:
                    return True
                if answer.status_code not in (408, 425, 429) and answer.status_code < 500:
                    log.warning("receiver of stream %s refused SET %s: %d %s",
                                record.stream_id, item.jti, answer.status_code,
                                answer.text[:200])
                    return False
                retry_after = answer.headers.get("retry-after", "")
                if retry_after.isdigit():
                    wait = float(retry_after)
            if attempt < self.settings.edge_push_max_attempts:
                await asyncio.sleep(min(wait, MAX_BACKOFF))
                delay = min(delay * 2, MAX_BACKOFF)
                current = self.store.get(record.stream_id)
                if current is None or (current.status == "disabled" and not item.control):
                    return False
        log.warning("gave up pushing SET %s to stream %s", item.jti, record.stream_id)
        return False

    # -- poll --------------------------------------------------------------------------------

    async def poll(self, record: StreamRecord, body: Any,
                   disconnected: Callable[[], Awaitable[bool]] | None = None
                   ) -> dict[str, Any]:
        """RFC 8936 §2.4/§2.5: settle acks and setErrs, then hand out SETs. A long poll
        ends early when the receiver has gone away (`disconnected`)."""
        try:
            request = PollRequest.model_validate(body)
        except ValidationError as exc:
            raise SsfError(400, "invalid_request", describe_validation_error(exc)) from None
        if record.config.delivery.method == PUSH:
            raise SsfError(400, "invalid_request", "this stream is delivered by push")
        queue = self._poll_queue(record.stream_id)
        self._settle_polled(record.stream_id, queue.settle(
            request.ack, {jti: (e.err, e.description) for jti, e in request.set_errs.items()}))
        for jti, error in request.set_errs.items():
            log.warning("receiver rejected SET %s of stream %s: %s %s", jti,
                        record.stream_id, error.err, error.description or "")
        deadline = time.monotonic() + self.settings.edge_poll_max_wait_seconds
        current = record
        while True:
            # paused (SSF §8.1.2.1: nothing transmitted): new SETs are held elsewhere, and
            # one handed out before the pause is not offered again until the stream is
            # enabled; only the stream-updated SETs wait in the queue
            sets, more = queue.take(request.max_events, time.time(),
                                    redeliver=current.status == "enabled")
            self._settle_polled(record.stream_id, queue.drain_abandoned())
            if sets or request.return_immediately or request.max_events == 0:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, LONG_POLL_CHECK))
            if disconnected is not None and await disconnected():
                break
            latest = self.store.get(record.stream_id)
            if latest is None:
                break
            current = latest
            queue = self._poll_queue(record.stream_id)
        return PollResponse.model_validate({"sets": sets, "moreAvailable": more}).to_wire()

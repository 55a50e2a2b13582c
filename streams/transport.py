"""faust's aiokafka transport, changed as listed. Brokers use it through the scheme `caep-kafka://`.

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
- Every input partition's records reach its stream in offset order with none skipped: a
  record fetched before a seek and handed over after it is dropped and the partition read
  again from the record that comes next (`streams.positions`).
- A seek to the committed offsets lands whole. faust's recovery resumes the partitions
  before it seeks them, so records fetched while the seek awaits reach the streams and
  move the fetch position on; the seek then put the next expected record back to the
  committed offset but left the fetch past it, and with no later record to show the gap
  the partition was never read again. The seek now sets both in one step.
- Records dropped from the stream buffers are read again. Resuming flow empties every
  stream's buffer (`ReportingFlowControl`); faust counts on its next seek to read what
  was there, but recovery resumes flow after its seek, so records handed over in between
  were gone for good (both found by tests/test_takeover.py under load: revocations never
  decided, their offsets never committed).
- A seek that lands while a record is handed to its stream stands. faust sets its read
  offset to the record's after the hand-over's await, over the seek's, and then drops as
  already read the records the seek reads again; one emptied out of a buffer meanwhile was
  lost (tests/test_takeover.py, about 1 run in 30, and `make chaos`).
- A table's recovery asked to read a changelog from an offset below 0 reads it from the
  start instead of stopping the worker.
- A worker stopped while a rebalance reaches it closes its consumer on the consumer's own
  loop. faust closed it on the app's loop, where the coordinator was marked closed and then
  failed, so the real stop skipped its LeaveGroup: the group waited a session timeout for a
  member already gone.
- Optionally, stopping without leaving the group (`streams.membership`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any, ClassVar

from aiokafka.errors import IllegalStateError
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.utils.queues import FlowControlEvent

from streams.membership import keep_membership_on_stop
from streams.positions import Positions, Verdict

log = logging.getLogger("caep.transport")
SCHEME = "caep-kafka"
DEFAULT_FETCH_MAX_WAIT_MS = 100


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    _closing: Future[None] | None = None

    def close(self) -> None:
        """faust calls this from the app's loop when a rebalance reaches a worker that is
        stopping. The consumer belongs to this thread's loop: its stop runs there, and the
        thread's own stop waits for it (`on_thread_stop`), LeaveGroup included."""
        if self._consumer is None or self._closing is not None or self.thread_loop.is_closed():
            return
        log.info("a rebalance reached the stopping worker: closing its consumer")
        self._closing = asyncio.run_coroutine_threadsafe(self._consumer.stop(),
                                                         self.thread_loop)

    async def on_thread_stop(self) -> None:
        await super().on_thread_stop()
        if self._closing is not None:
            try:
                await asyncio.wrap_future(self._closing)
            except Exception:
                log.exception("closing the consumer failed")

    async def seek_wait(self, partitions: Mapping[TP, int | None]) -> None:
        """faust's recovery reads a changelog from where its offsets say, -1 meaning "from the
        start"; another negative one, or none at all (both seen on Tansu while workers were
        being killed), made aiokafka raise and the worker stop. Any offset below 0, or
        missing, means the start: the partition is read whole, never short."""
        starts = {tp: offset for tp, offset in partitions.items()
                  if offset is None or offset < 0}
        if starts:
            log.warning("recovery asked to read %s from offsets below 0 or none: reading them "
                        "from the start", ", ".join(f"{tp.topic}[{tp.partition}]@{offset}"
                                                    for tp, offset in sorted(starts.items())))
        await super().seek_wait({tp: 0 if offset is None or offset < 0 else offset
                                 for tp, offset in partitions.items()})

    async def on_start(self) -> None:
        await super().on_start()
        if not getattr(self.app, "leave_group_on_stop", True):
            keep_membership_on_stop(self._consumer)

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
                # Where reading starts, so the consumer knows which record must come first.
                starts = await self.earliest_offsets(*never)
                return {**committed, **{tp: starts.get(tp, 0) for tp in never}}
        return committed


class ReportingFlowControl(FlowControlEvent):
    """faust's flow control, telling `on_dropped` the first offset of each partition whose
    records it empties out of the stream buffers when flow resumes."""

    on_dropped: Callable[[Mapping[TP, int]], None] | None = None

    def clear(self) -> None:
        first: dict[TP, int] = {}
        for queue in self._queues:
            for item in queue._queue:  # type: ignore[attr-defined]
                message = getattr(item, "message", None)
                if message is not None:
                    tp, offset = message.tp, message.offset
                    first[tp] = min(offset, first.get(tp, offset))
        super().clear()
        if first and self.on_dropped is not None:
            self.on_dropped(first)


class Consumer(faust_aiokafka.Consumer):
    """Hands each input partition's records to its stream in offset order, none skipped
    (see `streams.positions`)."""

    _positions: Positions[TP] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        control = self.app.flow_control
        if isinstance(control, ReportingFlowControl):
            control.on_dropped = self._read_dropped_again

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def positions(self) -> Positions[TP]:
        if self._positions is None:
            self._positions = Positions()
        return self._positions

    def _guarded(self, tps: Iterable[TP]) -> list[TP]:
        acking = self.app.topics.acking_topics
        return [tp for tp in tps if tp.topic in acking]

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.positions.revoked(self._guarded(revoked))
        await super().on_partitions_revoked(revoked)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        read = self._read_offset
        # No await from here on: records fetched while the seek awaited moved the fetch on.
        self.positions.seeked({
            tp: offset for tp in self._guarded(self.assignment())
            if (offset := read.get(tp)) is None or self._set_fetch_position(tp, offset)})

    def _set_fetch_position(self, tp: TP, offset: int) -> bool:
        try:
            self._thread.seek(tp, offset)
        except IllegalStateError:  # revoked meanwhile (left as the revocation set it)
            return False
        return True

    def _read_dropped_again(self, first: Mapping[TP, int]) -> None:
        """Records handed to a stream and then emptied out of its buffer are read again."""
        positions = self.positions
        for tp in self._guarded(first):
            offset, want = first[tp], positions.expected(tp)
            if want is None or offset >= want:  # not handed over yet, or waiting for a seek
                continue
            if not self._set_fetch_position(tp, offset):
                continue
            positions.seeked({tp: offset})
            self._read_offset[tp] = offset or None
            log.info("%s[%d]: records %d-%d were emptied out of the stream buffers when flow "
                     "resumed: reading again from %d", tp.topic, tp.partition, offset,
                     want - 1, offset)

    async def seek(self, partition: TP, offset: int) -> None:
        if self._guarded([partition]):
            await self._seek_from(self.positions.mark(partition), partition, offset)
        else:
            await super().seek(partition, offset)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109
        positions = self.positions
        acking = self.app.topics.acking_topics
        rewound: set[TP] = set()
        dropped: dict[TP, list[int]] = {}
        async for tp, message in super().getmany(timeout):
            if tp.topic not in acking:
                yield tp, message
                continue
            if tp in rewound:
                continue
            verdict = positions.verdict(tp, message.offset)
            if verdict is Verdict.DELIVER:
                mark = positions.mark(tp)
                yield tp, message
                if not positions.current(tp, mark):
                    self._restore_read_offset(tp, message.offset)
            elif verdict is Verdict.REWIND:
                rewound.add(tp)
                await self._rewind(tp, message.offset)
            else:
                dropped.setdefault(tp, []).append(message.offset)
        for tp, offsets in dropped.items():
            log.info("%s[%d]: dropped %d record(s) at offsets %d-%d, already delivered or "
                     "waiting for a seek (next: %s)", tp.topic, tp.partition, len(offsets),
                     min(offsets), max(offsets), positions.expected(tp))

    def _restore_read_offset(self, tp: TP, handed: int) -> None:
        """faust sets its read offset to a record's once the record is handed to its stream,
        after awaiting the stream. A seek that lands in that await is overwritten, and the
        records the seek reads again, below the handed one, are dropped by faust as already
        read; one of them emptied out of a stream buffer meanwhile was lost (a revocation
        never decided, tests/test_takeover.py). The read offset is put back where the seek
        left it."""
        want = self.positions.expected(tp)
        if want is None:  # revoked, or the seek's offset unknown: faust has none either
            self._read_offset.pop(tp, None)
        else:
            self._read_offset[tp] = want or None
        log.info("%s[%d]: a seek or revocation landed while record %d was handed over: "
                 "faust's read offset put back to %s", tp.topic, tp.partition, handed, want)

    async def _rewind(self, tp: TP, offset: int) -> None:
        """A record ahead of the next one came (fetched before a seek): read again from the
        next one, or from the first the broker still has if retention deleted it."""
        positions = self.positions
        mark = positions.mark(tp)
        want = positions.expected(tp)
        if want is None:
            return
        earliest = (await self.earliest_offsets(tp)).get(tp, 0)
        if not positions.current(tp, mark):
            self._superseded(tp, want)
            return
        if want < earliest:
            log.error("%s[%d]: records %d-%d were deleted before they were processed",
                      tp.topic, tp.partition, want, earliest - 1)
            want = earliest
        log.info("%s[%d]: got offset %d where %d comes next (fetched before a seek): "
                 "reading again from %d", tp.topic, tp.partition, offset,
                 positions.expected(tp), want)
        await self._seek_from(mark, tp, want)

    async def _seek_from(self, mark: int, tp: TP, offset: int) -> None:
        """Seek an input partition; faust's read offset and ours follow only if no rebalance
        moved it since `mark` (faust drops a record below its read offset, ours one below
        the next): then the rebalance's seek stands, and a record ahead of it rewinds again."""
        await self._seek(tp, offset)
        if self.positions.rewound(tp, offset, mark):
            self._read_offset[tp] = offset or None
        else:
            self._superseded(tp, offset)

    def _superseded(self, tp: TP, offset: int) -> None:
        log.info("%s[%d]: seek to %d superseded by a rebalance's own seek; reading on from "
                 "where that put it", tp.topic, tp.partition, offset)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        log.warning("%s[%d]: offsets %d-%d missing from the log, counted as handled",
                    tp.topic, tp.partition, offset_from, offset_to)
        await super()._add_gap(tp, offset_from, offset_to)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[Any] = Consumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"

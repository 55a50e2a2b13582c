"""The transport's rewind (streams/transport.py) against a rebalance that overtakes it.

A rewind awaits twice (the partition's earliest offset, then the seek). A rebalance that
revokes the partition and seeks it to its committed offset in between must win: were the
rewind's older target to land, the records from the committed offset up to it would be
dropped as "already delivered" when they are read again (lost, though never processed).
The broker is not needed: the two awaits are held open by hand and the rebalance's own
moves (what `on_partitions_revoked` and `perform_seek` do) are made while they are.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import IllegalStateError
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP

from caep.settings import Settings
from streams.app import create_app
from streams.positions import Verdict
from tests.conftest import Idp, until


class Held:
    """An awaitable step of the consumer that waits until released."""

    def __init__(self, result: Any = None) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.calls: list[tuple[Any, ...]] = []
        self.result = result

    async def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        self.entered.set()
        await self.release.wait()
        return self.result


def make_consumer(idp: Idp, tmp_path: Path) -> tuple[Any, TP]:
    """The transport's consumer of a fresh app, and an input partition it guards."""
    settings = Settings(trust_file=idp.trust_file, app_id=f"t-{uuid.uuid4().hex[:8]}",
                        data_dir=tmp_path)
    app = create_app(settings, "127.0.0.1:9", idempotence=False)
    app.topics._acking_topics.add(settings.topic_engine_input)  # as its agent's subscription does
    return app.consumer, TP(settings.topic_engine_input, 0)


def rebalance(consumer: Any, tp: TP, committed: int) -> None:
    consumer.positions.revoked([tp])
    consumer._read_offset.pop(tp, None)
    consumer.positions.seeked({tp: committed})
    consumer._read_offset[tp] = committed


async def rewind_with(idp: Idp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *,
                      during: str | None) -> tuple[Any, TP, list[tuple[Any, ...]]]:
    """A rewind from 300 (a record at 401 came), with a rebalance to the committed 250
    made while the step named `during` is held; the consumer, its partition and the seeks
    it made."""
    consumer, tp = make_consumer(idp, tmp_path)
    earliest, seek = Held({tp: 0}), Held()
    monkeypatch.setattr(consumer, "earliest_offsets", earliest)
    monkeypatch.setattr(consumer, "_seek", seek)
    consumer.positions.seeked({tp: 300})
    consumer._read_offset[tp] = 299
    task = asyncio.create_task(consumer._rewind(tp, 401))
    for name, step in (("earliest offset", earliest), ("seek", seek)):
        if name == during:
            await asyncio.wait_for(step.entered.wait(), 5)
            rebalance(consumer, tp, committed=250)
        step.release.set()
    await asyncio.wait_for(task, 5)
    return consumer, tp, seek.calls


@pytest.mark.parametrize("held", ["earliest offset", "seek"])
def test_a_rebalance_during_a_rewind_keeps_its_own_position(
        idp: Idp, tmp_path: Path, held: str, monkeypatch: pytest.MonkeyPatch) -> None:
    consumer, tp, seeks = asyncio.run(rewind_with(idp, tmp_path, monkeypatch, during=held))
    assert consumer.positions.expected(tp) == 250
    assert consumer._read_offset[tp] == 250
    # Overtaken before it seeked, the rewind does not seek at all; after, its seek may reach
    # the consumer after the rebalance's, and a record read from there rewinds again.
    assert seeks == ([] if held == "earliest offset" else [(tp, 300)])


def test_a_rewind_nothing_overtakes_lands(idp: Idp, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    consumer, tp, seeks = asyncio.run(rewind_with(idp, tmp_path, monkeypatch, during=None))
    assert seeks == [(tp, 300)]
    assert consumer.positions.expected(tp) == 300
    assert consumer._read_offset[tp] == 300


def test_recovery_asked_for_a_negative_or_no_offset_reads_from_the_start(
        idp: Idp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chaos runs' workers stopped when faust's recovery asked aiokafka to seek a changelog
    partition to an offset below 0 ("Offset must be a positive integer"), and to None."""
    consumer, _tp = make_consumer(idp, tmp_path)
    thread = consumer._thread
    seeks: list[dict[Any, int]] = []

    async def call_thread(method: Any, _consumer: Any, partitions: dict[Any, int]) -> None:
        seeks.append(dict(partitions))

    monkeypatch.setattr(thread, "_ensure_consumer", lambda: None)
    monkeypatch.setattr(thread, "call_thread", call_thread)
    low, kept, unknown = TP("changelog", 0), TP("changelog", 1), TP("changelog", 2)
    asyncio.run(thread.seek_wait({low: -5, kept: 7, unknown: None}))
    assert seeks == [{low: 0, kept: 7, unknown: 0}]


class FetchPosition:
    """Where the consumer's fetcher reads next, per partition, as its seeks set it."""

    def __init__(self) -> None:
        self.at: dict[TP, int] = {}

    def seek(self, tp: TP, offset: int) -> None:
        self.at[tp] = offset


def test_records_fetched_while_the_seek_awaits_are_read_again(
        idp: Idp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """faust's recovery resumes a partition and then seeks it to its committed offset; a fetch
    that lands while the seek awaits hands records on and moves the fetch past them. Were the
    stream's next offset put back to the committed one while the fetch stays past it, and no
    later record came to show the gap, those records (were they then emptied out of the
    buffers) would never be read again (tests/test_takeover.py, under load)."""
    consumer, tp = make_consumer(idp, tmp_path)
    fetch = FetchPosition()
    monkeypatch.setattr(consumer._thread, "seek", fetch.seek)
    monkeypatch.setattr(consumer, "assignment", lambda: {tp})
    committed = Held({tp: 250})
    monkeypatch.setattr(consumer, "seek_to_committed", committed)

    async def seek_with_a_fetch_landing() -> None:
        task = asyncio.create_task(consumer.perform_seek())
        await asyncio.wait_for(committed.entered.wait(), 5)
        fetch.at[tp] = 250  # the broker-side seek is done; then a fetch lands
        delivered = [consumer.positions.verdict(tp, offset) for offset in range(250, 258)]
        assert set(delivered) == {Verdict.DELIVER}
        fetch.at[tp] = 258
        committed.release.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(seek_with_a_fetch_landing())
    assert consumer.positions.expected(tp) == 250
    assert fetch.at[tp] == 250


def emptied_buffer(consumer: Any, items: list[tuple[TP, int]]) -> None:
    """Records handed to a stream and still in its buffer when flow resumes."""
    queue = consumer.app.FlowControlQueue(maxsize=100, clear_on_resume=True)
    for tp, offset in items:
        queue.put_nowait(SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset)))
    consumer.app.flow_control.resume()
    assert queue.qsize() == 0


def test_records_emptied_out_of_stream_buffers_are_read_again(
        idp: Idp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    consumer, tp = make_consumer(idp, tmp_path)
    fetch = FetchPosition()
    monkeypatch.setattr(consumer._thread, "seek", fetch.seek)
    later, other = TP(tp.topic, 1), TP("not-an-input", 0)
    consumer.positions.seeked({tp: 250, later: 40})
    for offset in range(250, 258):
        consumer.positions.verdict(tp, offset)
    emptied_buffer(consumer, [(tp, 256), (tp, 255), (tp, 257), (later, 40), (other, 3)])
    assert fetch.at == {tp: 255}  # `later`'s record was not handed over yet
    assert consumer.positions.expected(tp) == 255
    assert consumer._read_offset[tp] == 255
    assert consumer.positions.expected(later) == 40


def test_a_partition_revoked_while_the_seek_awaits_stays_blocked(
        idp: Idp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fetcher refuses the seek of a partition it no longer holds; its records stay
    dropped until the next rebalance positions it, instead of any record being taken."""
    consumer, tp = make_consumer(idp, tmp_path)

    def refuse(tp: TP, offset: int) -> None:
        raise IllegalStateError(f"No current assignment for partition {tp}")

    monkeypatch.setattr(consumer._thread, "seek", refuse)
    monkeypatch.setattr(consumer, "assignment", lambda: {tp})
    monkeypatch.setattr(consumer, "seek_to_committed", Held({tp: 250}))
    consumer.seek_to_committed.release.set()
    consumer.positions.revoked([tp])
    asyncio.run(consumer.perform_seek())
    assert consumer.positions.verdict(tp, 250) is Verdict.DROP


def test_a_seek_landing_while_a_record_is_handed_over_is_not_undone(
        idp: Idp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """faust's fetch loop (`_drain_messages`, run as is here) sets its read offset to a
    record's after awaiting the record's stream. A seek that landed in that await (recovery's
    seek to the committed offsets) was overwritten, so faust dropped as already read the
    records the seek read again. One of them, emptied out of a stream buffer meanwhile, was
    never processed: a revocation lost (tests/test_takeover.py, about 1 run in 30)."""
    consumer, tp = make_consumer(idp, tmp_path)
    monkeypatch.setattr(consumer._thread, "seek", FetchPosition().seek)
    monkeypatch.setattr(consumer, "assignment", lambda: {tp})
    monkeypatch.setattr(consumer, "seek_to_committed", Held({tp: 6}))
    consumer.seek_to_committed.release.set()
    fetched: list[list[int]] = [[6, 7, 8, 9]]
    handed: list[int] = []
    finished: list[bool] = []
    handing_nine = Held()

    async def fetch(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109
        if not fetched:
            await asyncio.sleep(0.01)
            return
        for offset in fetched.pop(0):
            yield tp, SimpleNamespace(tp=tp, topic=tp.topic, partition=tp.partition,
                                      offset=offset, key=None, value=None)
        finished.append(True)  # the fetch loop has taken all of the batch

    async def stream(message: Any) -> None:
        handed.append(message.offset)
        if message.offset == 9 and not handing_nine.calls:
            await handing_nine(message.offset)

    monkeypatch.setattr(FaustConsumer, "getmany", fetch)
    consumer.callback = stream

    async def scenario() -> None:
        consumer._read_offset[tp] = 6
        consumer.positions.seeked({tp: 6})
        fetcher = SimpleNamespace(_stopped=asyncio.Event())
        drain = asyncio.create_task(consumer._drain_messages(fetcher))
        await asyncio.wait_for(handing_nine.entered.wait(), 5)
        await consumer.perform_seek()
        fetched.append([6, 7, 8, 9])  # what the seek reads again
        handing_nine.release.set()
        await until(lambda: len(finished) == 2, 5, "the records read again")
        fetcher._stopped.set()
        await asyncio.wait_for(drain, 5)

    consumer.loop.run_until_complete(scenario())  # the loop faust's waits are bound to
    assert handed == [6, 7, 8, 9, 6, 7, 8, 9]
    assert consumer._read_offset[tp] == 9

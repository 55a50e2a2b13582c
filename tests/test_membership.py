"""Why workers on the embedded broker stop without leaving their consumer group
(`streams/membership.py`, `CAEP_GROUP_LEAVE_ON_STOP`), and that they do.

Both run on an embedded Tansu of their own: the first shows a defect of that broker (0.6.0),
the second a choice made for it; Kafka needs neither."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaClient, AIOKafkaConsumer
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest

from caep.settings import Settings
from streams.app import create_app
from streams.broker import EmbeddedBroker
from streams.worker import WorkerProcess
from tests.conftest import Idp, fresh_topics, observe, start_worker

T = TypeVar("T")
MEMBER_ID_REQUIRED = 79
REBALANCE_IN_PROGRESS = 27
SESSION_MS = 2000


@dataclass(frozen=True)
class Joined:
    member_id: str
    leader: str
    generation: int


class RawMember:
    """One consumer-group member speaking the group protocol itself, so a test can put a
    group in a state a full consumer passes through too quickly to aim at."""

    def __init__(self, client: AIOKafkaClient, group: str, protocol: str) -> None:
        self.client, self.group, self.protocol = client, group, protocol
        self.member_id = ""

    async def join(self) -> Joined:
        metadata = ConsumerProtocolMemberMetadata(0, ["unused"], b"").encode()
        while True:
            answer = await self.client.send(self.client.get_random_node(), JoinGroupRequest(
                self.group, SESSION_MS, SESSION_MS, self.member_id, None, "consumer",
                [(self.protocol, metadata)]))
            if answer.error_code == MEMBER_ID_REQUIRED:
                self.member_id = answer.member_id
                continue
            assert answer.error_code == 0, answer
            self.member_id = answer.member_id
            return Joined(answer.member_id, answer.leader_id, answer.generation_id)

    async def sync(self, generation: int) -> int:
        answer = await self.client.send(self.client.get_random_node(), SyncGroupRequest(
            self.group, generation, self.member_id, None, []))
        return int(answer.error_code)

    async def leave(self) -> None:
        answer = await self.client.send(self.client.get_random_node(),
                                        LeaveGroupRequest(self.group, self.member_id))
        assert answer.error_code == 0, answer


async def members(bootstrap: str, group: str, protocol: str, count: int) -> list[RawMember]:
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    return [RawMember(client, group, protocol) for _ in range(count)]


def test_tansu_keeps_a_leader_that_left_while_the_group_formed() -> None:
    """The defect: the first member of a forming group leads it; it leaves before it syncs;
    the next member is told that member still leads, cannot sync, and is told so again
    after the session timeout has long passed. No member will ever be assigned."""

    async def scenario(bootstrap: str) -> None:
        leader, follower = await members(bootstrap, f"g-{uuid.uuid4().hex[:8]}", "roundrobin",
                                         2)
        try:
            joined = await leader.join()
            assert joined.leader == leader.member_id
            await leader.leave()
            first = await follower.join()
            assert first.leader == leader.member_id  # a member no longer in the group
            assert await follower.sync(first.generation) == REBALANCE_IN_PROGRESS
            await asyncio.sleep(2 * SESSION_MS / 1000)  # what Kafka would expire it after
            again = await follower.join()
            assert again.leader == leader.member_id
            assert await follower.sync(again.generation) == REBALANCE_IN_PROGRESS
        finally:
            await leader.client.close()

    with EmbeddedBroker() as broker:
        asyncio.run(scenario(broker.bootstrap))


async def pass_by(bootstrap: str, group: str, protocol: str) -> None:
    """A member joins the group and leaves: its members rejoin at the next generation (aiokafka
    leaves a group only from a generation above 0, Tansu's first)."""
    (member,) = await members(bootstrap, group, protocol, 1)
    try:
        await member.join()
        await member.leave()
    finally:
        await member.client.close()


def synced_generation(worker: WorkerProcess) -> int:
    """The generation of the worker's last successful SyncGroup, from its log (-1: none)."""
    found = [int(m.group(1)) for line in worker.output
             if (m := re.search(r"Successfully synced group \S+ with generation (\d+)", line))]
    return found[-1] if found else -1


@pytest.mark.parametrize("leave", [False, True], ids=["kept", "left"])
def test_a_stopped_worker_leaves_its_group_only_when_told_to(idp: Idp, leave: bool) -> None:
    """Off (the embedded broker's default): a worker stopped with SIGTERM is still the
    group's member and leader when the next member joins, and is expired after its session
    timeout, so the group forms again under the newcomer. On: it left, and the newcomer
    leads at once. (aiokafka leaves only from a generation above 0, Tansu's first, so a
    member joins and leaves first to move the worker to the next one.)"""
    app_id = f"caep-membership-{uuid.uuid4().hex[:8]}"
    session = 8

    async def newcomer(bootstrap: str) -> tuple[Joined, int]:
        (member,) = await members(bootstrap, app_id, "faust", 1)
        try:
            first = joined = await member.join()
            rejoins = 0
            began = time.monotonic()
            while joined.leader != member.member_id:
                assert time.monotonic() - began < 5 * session, "the group never formed again"
                joined = await member.join()
                rejoins += 1
            return first, rejoins
        finally:
            await member.client.close()

    with EmbeddedBroker() as broker:
        worker = start_worker(broker.bootstrap, idp.trust_file, fresh_topics(broker.bootstrap),
                              CAEP_APP_ID=app_id,
                              CAEP_GROUP_SESSION_TIMEOUT_SECONDS=str(session),
                              CAEP_GROUP_LEAVE_ON_STOP=str(leave).lower())
        try:
            worker.wait_ready()
            asyncio.run(pass_by(broker.bootstrap, app_id, "faust"))
            observe(lambda: synced_generation(worker) > 0, 30, "the worker synced again")
        finally:
            assert worker.stop() == 0
        first, rejoins = asyncio.run(newcomer(broker.bootstrap))
    if leave:
        assert (first.leader, rejoins) == (first.member_id, 0)
    else:
        assert first.leader != first.member_id  # the stopped worker's membership, kept
        assert rejoins > 0


def test_a_consumer_closed_from_the_app_loop_still_leaves_its_group(idp: Idp,
                                                                   tmp_path: Path) -> None:
    """faust closes the consumer from the app's loop (`ConsumerThread.close`) when a rebalance
    reaches a worker that is stopping: a stop that lands just after a rebalance. The consumer
    lives on its thread's loop. faust ran its closing on the app's loop instead, where it
    failed after marking the coordinator closed, so the thread's stop skipped LeaveGroup and
    the next member had to wait out the session (the test above failed about once in 12
    loaded runs). Here the thread's loop runs on a thread of its own, as in a worker, with a
    real consumer in the group; close() comes from another thread, then the thread stops."""
    app_id = f"caep-close-{uuid.uuid4().hex[:8]}"
    with EmbeddedBroker() as broker:
        topics = fresh_topics(broker.bootstrap, partitions=2)
        settings = Settings(trust_file=idp.trust_file, app_id=app_id, data_dir=tmp_path)
        thread = create_app(settings, broker.bootstrap, idempotence=False).consumer._thread
        loop = thread.thread_loop
        runner = threading.Thread(target=loop.run_forever, daemon=True)
        runner.start()

        def on_thread_loop(work: Coroutine[Any, Any, T]) -> T:
            return asyncio.run_coroutine_threadsafe(work, loop).result(30)

        async def started() -> AIOKafkaConsumer:
            consumer = AIOKafkaConsumer(topics.security_events, bootstrap_servers=broker.bootstrap,
                                        group_id=app_id, session_timeout_ms=8000,
                                        heartbeat_interval_ms=200)
            await consumer.start()
            return consumer

        async def newcomer() -> Joined:
            (member,) = await members(broker.bootstrap, app_id, "roundrobin", 1)
            try:
                return await member.join()
            finally:
                await member.client.close()

        try:
            consumer = thread._consumer = on_thread_loop(started())
            observe(lambda: bool(consumer.assignment()), 30, "the consumer was assigned")
            asyncio.run(pass_by(broker.bootstrap, app_id, "roundrobin"))
            observe(lambda: consumer._coordinator.generation > 0 and bool(consumer.assignment()),
                    30, "the consumer was assigned again")
            thread.close()
            on_thread_loop(thread.on_thread_stop())
            first = asyncio.run(newcomer())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            runner.join(10)
        assert first.leader == first.member_id

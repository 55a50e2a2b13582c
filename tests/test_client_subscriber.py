"""The revocation subscriber on the real broker: catch-up, scoping, live changes, status."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from caep.client import Change, ChangeKind, Status, Subscriber
from caep.client.subscriber import ChangesOverflow
from caep.decisions import Action, Decision, SessionFlags
from caep.errors import BrokerError, ConfigError
from caep.policy import load_policy
from caep.settings import Settings
from streams.broker import EmbeddedBroker, free_port
from streams.kafka_io import publish
from streams.topics import ensure_topics
from tests.conftest import until

USER = {"format": "email", "email": "ann@example.com"}


def decision(action: Action, sid: str | None, tenant: str = "acme", **extra: Any) -> bytes:
    return Decision(decision_id=str(uuid.uuid4()), action=action, tenant=tenant,
                    subject=USER, subject_key=f"{tenant}|ann", session_id=sid,
                    reasons=["test"], source="test", decided_at=time.time(),
                    **extra).to_json()


def flags(sid: str, values: dict[str, Any], tenant: str = "acme") -> bytes:
    return SessionFlags(session_id=sid, tenant=tenant, subject_key=f"{tenant}|ann",
                        flags=values, updated_at=time.time()).to_json()


def client_settings(bootstrap: str) -> Settings:
    """Fresh topics, and the short group timeouts Tansu needs to join quickly."""
    name = uuid.uuid4().hex[:8]
    settings = Settings(bootstrap=bootstrap, topic_decisions=f"c{name}.decisions",
                        topic_flags=f"c{name}.flags", group_session_timeout_seconds=2,
                        group_heartbeat_interval_seconds=0.3,
                        group_rebalance_timeout_seconds=2, consumer_fetch_max_wait_ms=100)
    asyncio.run(ensure_topics(bootstrap, [settings.topic_decisions, settings.topic_flags], 4,
                              compacted={settings.topic_flags}))
    return settings


async def send(bootstrap: str, topic: str, values: list[bytes], key: bytes | None = None,
               ) -> None:
    """Acknowledged records; without a key, spread over partitions as the engine's keys are."""
    await publish(bootstrap, topic,
                  [(key or f"key-{i}".encode(), value) for i, value in enumerate(values)])


def run(coroutine: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coroutine(), 60))


def test_settings_must_name_a_cluster_and_the_tenants_served() -> None:
    with pytest.raises(ConfigError, match="CAEP_BOOTSTRAP"):
        Subscriber(Settings(bootstrap=None), tenants=["acme"])
    with pytest.raises(ConfigError, match="CAEP_CLIENT_TENANTS"):
        Subscriber(Settings(bootstrap="127.0.0.1:1"))
    subscriber = Subscriber(Settings(bootstrap="127.0.0.1:1", client_tenants="acme, globex"))
    assert subscriber.view.tenants == ("acme", "globex")
    assert subscriber.status is Status.NOT_READY
    other = Subscriber(Settings(bootstrap="127.0.0.1:1", client_tenants="acme"))
    assert subscriber.group_id != other.group_id, "every process has a group of its own"


def test_the_longest_session_lifetime_comes_from_the_settings_and_bounds_eviction() -> None:
    policy = load_policy()
    longest = policy.lifetimes.absolute_seconds * 2
    settings = Settings(bootstrap="127.0.0.1:1", client_tenants="acme",
                        client_max_session_lifetime_seconds=longest)
    view = Subscriber(settings).view
    assert view.max_session_lifetime == longest
    assert view.retention == longest + view.clock_skew
    assert Subscriber(Settings(bootstrap="127.0.0.1:1", client_tenants="acme")
                      ).view.max_session_lifetime == policy.lifetimes.absolute_seconds
    with pytest.raises(ConfigError, match="at least the policy's absolute lifetime"):
        Subscriber(Settings(bootstrap="127.0.0.1:1", client_tenants="acme",
                            client_max_session_lifetime_seconds=1.0))


def test_an_unreachable_cluster_is_one_clear_error() -> None:
    async def scenario() -> None:
        subscriber = Subscriber(Settings(bootstrap=f"127.0.0.1:{free_port()}"),
                                tenants=["acme"])
        with pytest.raises(BrokerError, match="cannot reach the Kafka cluster"):
            await subscriber.start()
        assert subscriber.status is Status.NOT_READY

    run(scenario)


def test_start_returns_once_everything_published_before_is_in_the_view(bootstrap: str) -> None:
    settings = client_settings(bootstrap)
    # One partition holding more than a fetch can carry (1 MiB): ready must mean caught up,
    # not "got a first batch".
    many = [decision(Action.REVOKE_SESSION, f"old-{i}") for i in range(3000)]
    history = [decision(Action.REVOKE_SESSION, "theirs", tenant="globex"),
                decision(Action.REVOKE_SESSION, "watched", enforced=False),
                decision(Action.STEP_UP, "weak", required_acr="urn:mfa", max_age=300),
                b"not json at all", b'{"action": "revoke_session"}']

    async def scenario() -> None:
        await send(bootstrap, settings.topic_decisions, many, key=b"one-partition")
        await send(bootstrap, settings.topic_decisions, history)
        await send(bootstrap, settings.topic_flags,
                   [flags("restricted", {"downloads.enabled": False}), b"\xff"])
        async with Subscriber(settings, tenants=["acme"]) as subscriber:
            assert subscriber.status is Status.READY
            assert all(subscriber.is_revoked(f"old-{i}") for i in range(3000))
            assert not subscriber.is_revoked("theirs") and not subscriber.is_revoked("watched")
            assert subscriber.required_acr("weak") == "urn:mfa"
            assert subscriber.flags("restricted")["downloads.enabled"] is False
            assert subscriber.flags("unknown") == load_policy().flags
            counters = subscriber.view.counters
            assert (counters.other_tenant, counters.monitor, counters.malformed) == (1, 1, 3)
            assert sum(subscriber.lag().values()) == 0
        assert subscriber.status is Status.NOT_READY

    run(scenario)


def test_live_changes_reach_callbacks_and_iterators_within_a_second(bootstrap: str) -> None:
    settings = client_settings(bootstrap)

    async def scenario() -> None:
        await send(bootstrap, settings.topic_decisions,
                   [decision(Action.REVOKE_SESSION, "history")])
        subscriber = Subscriber(settings, tenants=["acme"])
        seen: list[Change] = []
        subscriber.on_change(seen.append)
        failing_calls = []

        async def failing(change: Change) -> None:
            failing_calls.append(change)
            raise RuntimeError("a broken callback must not stop the others")

        subscriber.on_change(failing)
        await subscriber.start()
        try:
            assert seen == [], "catching up builds the view silently"
            streamed: list[Change] = []

            async def read() -> None:
                async with subscriber.changes() as changes:
                    async for change in changes:
                        streamed.append(change)

            reader = asyncio.create_task(read())
            await asyncio.sleep(0)
            published = time.monotonic()
            await send(bootstrap, settings.topic_decisions,
                       [decision(Action.REVOKE_SESSION, "live"),
                        decision(Action.REVOKE_SESSION, "theirs", tenant="globex")])
            await send(bootstrap, settings.topic_flags,
                       [flags("live-2", {"downloads.enabled": False})])
            await until(lambda: len(seen) == 2, 3.0, "two live changes")
            assert time.monotonic() - published < 1.0
            assert {(c.kind, c.session_id) for c in seen} == {
                (ChangeKind.SESSION_REVOKED, "live"), (ChangeKind.FLAGS, "live-2")}
            assert next(c for c in seen if c.session_id == "live-2").flags_changed == {
                "downloads.enabled"}
            await until(lambda: len(streamed) == 2, 1.0, "the iterator's changes")
            assert streamed == seen
            assert len(failing_calls) == 2 and subscriber.callback_errors == 2
            assert subscriber.is_revoked("live") and not subscriber.is_revoked("theirs")
        finally:
            await subscriber.stop()
        await asyncio.wait_for(reader, 1.0)  # stopping ends the iterators

    run(scenario)


def test_a_reader_that_falls_behind_is_told_rather_than_missing_changes() -> None:
    async def scenario() -> None:
        subscriber = Subscriber(Settings(bootstrap="127.0.0.1:1"), tenants=["acme"])
        stream = subscriber.changes(maxsize=2)
        for sid in ("a", "b", "c"):
            stream.offer(Change(ChangeKind.SESSION_REVOKED, "acme", sid))
        got = [(await stream.__anext__()).session_id for _ in range(2)]
        assert got == ["a", "b"]
        with pytest.raises(ChangesOverflow):
            await stream.__anext__()

    run(scenario)


def test_a_view_held_back_by_a_slow_callback_is_stale_until_it_catches_up(
        bootstrap: str) -> None:
    settings = client_settings(bootstrap)

    async def scenario() -> None:
        subscriber = Subscriber(settings, tenants=["acme"], stale_after=0.5)
        release = asyncio.Event()
        statuses: list[Status] = []
        subscriber.on_status(lambda status, reason: statuses.append(status))

        async def slow(change: Change) -> None:
            await release.wait()

        subscriber.on_change(slow)
        await subscriber.start()
        try:
            await send(bootstrap, settings.topic_decisions,
                       [decision(Action.REVOKE_SESSION, "first"),
                        decision(Action.REVOKE_SESSION, "second")])
            await until(lambda: subscriber.status is Status.STALE, 3.0, "STALE while held")
            assert "s" in subscriber.reason
            release.set()
            await until(lambda: subscriber.status is Status.READY, 3.0, "READY again")
            assert subscriber.is_revoked("first") and subscriber.is_revoked("second")
            assert statuses[-3:] == [Status.READY, Status.STALE, Status.READY]
        finally:
            await subscriber.stop()

    run(scenario)


def test_losing_the_broker_makes_the_view_stale_and_stopping_stays_clean() -> None:
    broker = EmbeddedBroker().start()
    try:
        settings = client_settings(broker.bootstrap)

        async def scenario() -> None:
            subscriber = Subscriber(settings, tenants=["acme"], stale_after=0.5)
            await send(broker.bootstrap, settings.topic_decisions,
                       [decision(Action.REVOKE_SESSION, "kept")])
            await subscriber.start()
            try:
                assert subscriber.status is Status.READY
                await asyncio.to_thread(broker.stop, 0.2)  # a crash, not a clean shutdown
                await until(lambda: subscriber.status is Status.STALE, 5.0, "STALE")
                assert subscriber.is_revoked("kept"), "the last known view still answers"
            finally:
                await subscriber.stop()
            assert subscriber.status is Status.NOT_READY

        run(scenario)
    finally:
        broker.stop(0.2)


def test_processes_sharing_a_group_report_error_instead_of_half_a_view(bootstrap: str) -> None:
    settings = client_settings(bootstrap)
    group = f"shared-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        first = Subscriber(settings, tenants=["acme"], group_id=group)
        second = Subscriber(settings, tenants=["acme"], group_id=group)
        await first.start()
        try:
            await second.start(wait=False)
            await until(lambda: first.status is Status.ERROR and second.status is Status.ERROR,
                        15.0, "both members in ERROR")
            assert "shared" in first.reason and "own group" in second.reason
        finally:
            await second.stop()
        await until(lambda: first.status is Status.READY, 15.0, "READY once alone again")
        await first.stop()

    run(scenario)

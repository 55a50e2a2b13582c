"""The OpenFeature provider, used through the openfeature-sdk API as an application would,
fed by a real subscriber on the real broker."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus
from openfeature.provider.no_op_provider import NoOpProvider

from caep.client import CaepProvider, Status, Subscriber
from caep.decisions import Action, Decision, SessionFlags
from caep.settings import Settings
from streams.broker import EmbeddedBroker
from streams.kafka_io import publish
from streams.topics import ensure_topics
from tests.conftest import until

POLICY = '''
[flags]
"downloads.enabled" = true
"upload.limit" = 10
"theme" = "light"
"risk.threshold" = 0.5
"layout" = { columns = 2 }

[security_flags]
"downloads.enabled" = false
"upload.limit" = 0
'''
RESTRICTED = {"downloads.enabled": False, "upload.limit": 3, "theme": "dark",
              "risk.threshold": 1, "layout": {"columns": 1}}


def settings_for(bootstrap: str, policy_file: Path) -> Settings:
    name = uuid.uuid4().hex[:8]
    settings = Settings(bootstrap=bootstrap, topic_decisions=f"f{name}.decisions",
                        topic_flags=f"f{name}.flags", policy_file=policy_file,
                        group_session_timeout_seconds=2, group_heartbeat_interval_seconds=0.3,
                        group_rebalance_timeout_seconds=2)
    asyncio.run(ensure_topics(bootstrap, [settings.topic_decisions, settings.topic_flags], 4,
                              compacted={settings.topic_flags}))
    return settings


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY, encoding="utf-8")
    return path


async def send(bootstrap: str, topic: str, key: str, value: bytes) -> None:
    await publish(bootstrap, topic, [(key.encode(), value)])


def flags_record(sid: str, flags: dict[str, Any], tenant: str = "acme") -> bytes:
    return SessionFlags(session_id=sid, tenant=tenant, subject_key=f"{tenant}|u", flags=flags,
                        updated_at=time.time()).to_json()


def revocation(sid: str) -> bytes:
    return Decision(decision_id=str(uuid.uuid4()), action=Action.REVOKE_SESSION, tenant="acme",
                    subject={"format": "opaque", "id": "u"}, subject_key="acme|u",
                    session_id=sid, reasons=["test"], source="test",
                    decided_at=time.time()).to_json()


class Events:
    """Provider events as the SDK delivers them (on its own threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[ProviderEvent, EventDetails]] = []

    def handler(self, event: ProviderEvent) -> Callable[[EventDetails], None]:
        def handle(details: EventDetails) -> None:
            with self.lock:
                self.seen.append((event, details))
        return handle

    def of(self, event: ProviderEvent) -> list[EventDetails]:
        with self.lock:
            return [d for e, d in self.seen if e is event]


def run(scenario: Callable[[], Awaitable[None]], domain: str) -> None:
    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        api.set_provider(NoOpProvider(), domain)


def ctx(sid: str | None, **attributes: Any) -> EvaluationContext:
    return EvaluationContext(targeting_key=sid, attributes=attributes)


def test_flags_resolve_per_session_with_reason_variant_and_type(
        bootstrap: str, policy_file: Path) -> None:
    settings = settings_for(bootstrap, policy_file)
    domain = f"flags-{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        await send(bootstrap, settings.topic_flags, "s-r", flags_record("s-r", RESTRICTED))
        await send(bootstrap, settings.topic_flags, "s-g",
                   flags_record("s-g", RESTRICTED, tenant="globex"))
        await send(bootstrap, settings.topic_decisions, "s-x", revocation("s-x"))
        subscriber = Subscriber(settings, tenants=["acme"])
        await subscriber.start()
        api.set_provider(CaepProvider(subscriber), domain)
        client = api.get_client(domain)
        try:
            await until(lambda: client.get_provider_status() is ProviderStatus.READY, 5,
                        "READY")
            b = client.get_boolean_details("downloads.enabled", True, ctx("s-r"))
            assert (b.value, b.reason, b.variant, b.error_code) == (
                False, Reason.TARGETING_MATCH, "session", None)
            assert client.get_integer_details("upload.limit", 99, ctx("s-r")).value == 3
            s = client.get_string_details("theme", "x", ctx("s-r"))
            assert (s.value, s.reason, s.variant) == ("dark", Reason.TARGETING_MATCH, "session")
            f = client.get_float_details("risk.threshold", 0.0, ctx("s-r"))
            assert f.value == 1.0 and isinstance(f.value, float)
            o = client.get_object_details("layout", {}, ctx("s-r"))
            assert (o.value, o.reason) == ({"columns": 1}, Reason.TARGETING_MATCH)

            unseen = client.get_boolean_details("downloads.enabled", False, ctx("s-new"))
            assert (unseen.value, unseen.reason, unseen.variant) == (
                True, Reason.DEFAULT, "default")
            assert client.get_object_value("layout", {}, ctx("s-new")) == {"columns": 2}

            missing = client.get_boolean_details("no.such.flag", True, ctx("s-r"))
            assert (missing.value, missing.reason, missing.error_code) == (
                True, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)
            wrong = client.get_string_details("upload.limit", "x", ctx("s-r"))
            assert (wrong.reason, wrong.error_code) == (Reason.ERROR, ErrorCode.TYPE_MISMATCH)
            assert client.get_integer_details("upload.limit", 99, ctx("s-r")).reason == (
                Reason.TARGETING_MATCH)

            # Fail closed: no session named, another tenant, a revoked session.
            anonymous = client.get_boolean_details("downloads.enabled", True, ctx(None))
            assert (anonymous.value, anonymous.error_code) == (
                False, ErrorCode.TARGETING_KEY_MISSING)
            assert client.get_string_value("theme", "mine", ctx(None)) == "mine"
            theirs = client.get_boolean_details("downloads.enabled", True, ctx("s-g"))
            assert (theirs.value, theirs.reason) == (True, Reason.DEFAULT), (
                "another tenant's session resolves to the default, never to its flags")
            assert client.get_string_value("theme", "x", ctx("s-g")) == "light"
            scoped = client.get_integer_details("upload.limit", 99, ctx("s-r", tenant="globex"))
            assert (scoped.value, scoped.reason, scoped.variant) == (
                0, Reason.DEFAULT, "fail-closed")
            revoked = client.get_boolean_details("downloads.enabled", True, ctx("s-x"))
            assert (revoked.value, revoked.reason, revoked.variant) == (
                False, Reason.TARGETING_MATCH, "fail-closed")
            assert client.get_string_value("theme", "x", ctx("s-x")) == "light"
            assert subscriber.view.counters.other_tenant == 1

            async_details = await client.get_boolean_details_async(
                "downloads.enabled", True, ctx("s-r"))
            assert async_details.value is False
        finally:
            await subscriber.stop()

    run(scenario, domain)


def test_a_change_of_a_sessions_flags_fires_configuration_changed_at_once(
        bootstrap: str, policy_file: Path) -> None:
    settings = settings_for(bootstrap, policy_file)
    domain = f"flags-{uuid.uuid4().hex[:6]}"
    events = Events()

    async def scenario() -> None:
        subscriber = Subscriber(settings, tenants=["acme"])
        await subscriber.start()
        api.set_provider(CaepProvider(subscriber), domain)
        client = api.get_client(domain)
        client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
                           events.handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED))
        try:
            await until(lambda: client.get_provider_status() is ProviderStatus.READY, 5,
                        "READY")
            assert client.get_boolean_value("downloads.enabled", False, ctx("s-1")) is True
            started = time.monotonic()
            await send(bootstrap, settings.topic_flags, "s-1",
                       flags_record("s-1", {**RESTRICTED, "upload.limit": 10}))
            await until(lambda: bool(events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)),
                        2, "a configuration-changed event")
            assert time.monotonic() - started < 1.0
            changed = events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
            assert changed[0].flags_changed == ["downloads.enabled", "layout",
                                                "risk.threshold", "theme"]
            assert changed[0].metadata["session_id"] == "s-1"
            assert client.get_boolean_value("downloads.enabled", True, ctx("s-1")) is False

            await send(bootstrap, settings.topic_decisions, "s-1", revocation("s-1"))
            await until(lambda: len(events.of(
                ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)) == 2, 2, "the revocation's")
            assert events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)[1].flags_changed == [
                "upload.limit"], "revoking turns the security flags still open to safe"
            assert client.get_integer_value("upload.limit", 99, ctx("s-1")) == 0
        finally:
            await subscriber.stop()

    run(scenario, domain)


def test_status_follows_the_connection_and_security_flags_fail_closed_meanwhile(
        policy_file: Path) -> None:
    broker = EmbeddedBroker().start()
    domain = f"flags-{uuid.uuid4().hex[:6]}"
    events = Events()
    try:
        settings = settings_for(broker.bootstrap, policy_file)

        async def scenario() -> None:
            await send(broker.bootstrap, settings.topic_flags, "s-1",
                       flags_record("s-1", RESTRICTED))
            subscriber = Subscriber(settings, tenants=["acme"], stale_after=0.5)
            api.set_provider(CaepProvider(subscriber), domain)  # before the view exists
            client = api.get_client(domain)
            for event in ProviderEvent:
                client.add_handler(event, events.handler(event))
            try:
                assert client.get_provider_status() is ProviderStatus.NOT_READY
                early = client.get_boolean_details("downloads.enabled", True, ctx("s-9"))
                assert (early.value, early.reason, early.error_code) == (
                    False, Reason.ERROR, ErrorCode.PROVIDER_NOT_READY), (
                    "a permissive default must not open a security flag")
                assert client.get_string_value("theme", "mine", ctx("s-9")) == "mine"

                await subscriber.start()
                await until(lambda: client.get_provider_status() is ProviderStatus.READY, 5,
                            "READY")
                await until(lambda: bool(events.of(ProviderEvent.PROVIDER_READY)), 2,
                            "PROVIDER_READY")
                assert client.get_string_value("theme", "x", ctx("s-1")) == "dark"

                await asyncio.to_thread(broker.stop, 0.2)
                await until(lambda: client.get_provider_status() is ProviderStatus.STALE, 5,
                            "STALE")
                await until(lambda: bool(events.of(ProviderEvent.PROVIDER_STALE)), 2,
                            "PROVIDER_STALE")
                stale = client.get_boolean_details("downloads.enabled", True, ctx("s-new"))
                assert (stale.value, stale.reason) == (False, Reason.ERROR)
                kept = client.get_string_details("theme", "x", ctx("s-1"))
                assert (kept.value, kept.reason) == ("dark", Reason.STALE)
            finally:
                await subscriber.stop()
            await until(lambda: client.get_provider_status() is ProviderStatus.ERROR, 2,
                        "ERROR once stopped")
            stopped = client.get_integer_details("upload.limit", 50, ctx("s-1"))
            assert (stopped.value, stopped.reason) == (0, Reason.ERROR)

        run(scenario, domain)
    finally:
        broker.stop(0.2)


def test_a_shared_group_puts_the_provider_in_error(bootstrap: str, policy_file: Path) -> None:
    settings = settings_for(bootstrap, policy_file)
    domain = f"flags-{uuid.uuid4().hex[:6]}"
    group = f"shared-{uuid.uuid4().hex[:6]}"
    events = Events()

    async def scenario() -> None:
        subscriber = Subscriber(settings, tenants=["acme"], group_id=group)
        intruder = Subscriber(settings, tenants=["acme"], group_id=group)
        await subscriber.start()
        api.set_provider(CaepProvider(subscriber), domain)
        client = api.get_client(domain)
        client.add_handler(ProviderEvent.PROVIDER_ERROR,
                           events.handler(ProviderEvent.PROVIDER_ERROR))
        try:
            await until(lambda: client.get_provider_status() is ProviderStatus.READY, 5,
                        "READY")
            await intruder.start(wait=False)
            await until(lambda: client.get_provider_status() is ProviderStatus.ERROR, 15,
                        "ERROR")
            await until(lambda: bool(events.of(ProviderEvent.PROVIDER_ERROR)), 2,
                        "PROVIDER_ERROR")
            assert "shared" in (events.of(ProviderEvent.PROVIDER_ERROR)[0].message or "")
            failed = client.get_boolean_details("downloads.enabled", True, ctx("s-1"))
            assert (failed.value, failed.reason) == (False, Reason.ERROR)
        finally:
            await intruder.stop()
            await subscriber.stop()
        assert subscriber.status is Status.NOT_READY

    run(scenario, domain)


def sdk_status(domain: str) -> ProviderStatus:
    return api.get_client(domain).get_provider_status()


def test_a_provider_set_while_the_view_is_stale_is_stale_at_once_and_then_follows(
        bootstrap: str, policy_file: Path) -> None:
    settings = settings_for(bootstrap, policy_file)
    domain = f"flags-{uuid.uuid4().hex[:6]}"
    events = Events()

    async def scenario() -> None:
        subscriber = Subscriber(settings, tenants=["acme"], stale_after=0.5)
        release = asyncio.Event()

        async def slow(change: Any) -> None:
            await release.wait()

        subscriber.on_change(slow)
        await subscriber.start()
        try:
            await send(bootstrap, settings.topic_flags, "s-1", flags_record("s-1", RESTRICTED))
            await until(lambda: subscriber.status is Status.STALE, 5, "the view STALE")
            api.set_provider(CaepProvider(subscriber), domain)
            client = api.get_client(domain)
            for event in ProviderEvent:
                client.add_handler(event, events.handler(event))
            await until(lambda: sdk_status(domain) is ProviderStatus.STALE, 2,
                        "STALE as soon as it is set, not READY until the next change")
            await until(lambda: bool(events.of(ProviderEvent.PROVIDER_STALE)), 2,
                        "PROVIDER_STALE")
            await asyncio.sleep(0.3)
            assert sdk_status(domain) is ProviderStatus.STALE, "and it stays STALE"
            held = client.get_boolean_details("downloads.enabled", True, ctx("s-2"))
            assert (held.value, held.reason) == (False, Reason.ERROR)
            assert client.get_string_details("theme", "x", ctx("s-2")).reason == Reason.STALE

            readies = len(events.of(ProviderEvent.PROVIDER_READY))
            release.set()
            await until(lambda: sdk_status(domain) is ProviderStatus.READY, 5, "READY")
            await until(lambda: len(events.of(ProviderEvent.PROVIDER_READY)) > readies, 2,
                        "PROVIDER_READY")
            assert client.get_string_value("theme", "x", ctx("s-1")) == "dark"
        finally:
            await subscriber.stop()
        await until(lambda: sdk_status(domain) is ProviderStatus.ERROR, 2, "ERROR once stopped")
        await until(lambda: any(d.error_code is ErrorCode.PROVIDER_NOT_READY
                                for d in events.of(ProviderEvent.PROVIDER_ERROR)), 2,
                    "PROVIDER_ERROR saying not ready")

    run(scenario, domain)


def test_a_provider_set_while_the_view_is_in_error_is_in_error_until_it_recovers(
        bootstrap: str, policy_file: Path) -> None:
    settings = settings_for(bootstrap, policy_file)
    domain = f"flags-{uuid.uuid4().hex[:6]}"
    group = f"shared-{uuid.uuid4().hex[:6]}"
    events = Events()

    async def scenario() -> None:
        subscriber = Subscriber(settings, tenants=["acme"], group_id=group)
        intruder = Subscriber(settings, tenants=["acme"], group_id=group)
        await subscriber.start()
        try:
            await intruder.start(wait=False)
            await until(lambda: subscriber.status is Status.ERROR, 15, "the view in ERROR")
            api.set_provider(CaepProvider(subscriber), domain)
            client = api.get_client(domain)
            client.add_handler(ProviderEvent.PROVIDER_READY,
                               events.handler(ProviderEvent.PROVIDER_READY))
            await until(lambda: sdk_status(domain) is ProviderStatus.ERROR, 2,
                        "ERROR as soon as it is set")
            failed = client.get_boolean_details("downloads.enabled", True, ctx("s-1"))
            assert (failed.value, failed.reason) == (False, Reason.ERROR)
            await intruder.stop()
            await until(lambda: sdk_status(domain) is ProviderStatus.READY, 15,
                        "READY once the view is alone in its group again")
            await until(lambda: bool(events.of(ProviderEvent.PROVIDER_READY)), 2,
                        "PROVIDER_READY")
            assert client.get_boolean_value("downloads.enabled", False, ctx("s-1")) is True
        finally:
            await intruder.stop()
            await subscriber.stop()

    run(scenario, domain)


def test_a_provider_whose_view_is_late_is_in_error_until_it_catches_up(
        bootstrap: str, policy_file: Path) -> None:
    settings = settings_for(bootstrap, policy_file)
    domain = f"flags-{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        subscriber = Subscriber(settings, tenants=["acme"])
        api.set_provider(CaepProvider(subscriber, init_timeout=0.2), domain)
        assert sdk_status(domain) is ProviderStatus.NOT_READY
        await until(lambda: sdk_status(domain) is ProviderStatus.ERROR, 2,
                    "ERROR once initialize gave up")
        await subscriber.start()
        try:
            await until(lambda: sdk_status(domain) is ProviderStatus.READY, 5, "READY")
        finally:
            await subscriber.stop()

    run(scenario, domain)


def test_every_flag_type_has_its_reason_and_variant_and_objects_are_copies(
        bootstrap: str, policy_file: Path) -> None:
    settings = settings_for(bootstrap, policy_file)
    domain = f"flags-{uuid.uuid4().hex[:6]}"
    kinds = {"downloads.enabled": "boolean", "theme": "string", "upload.limit": "integer",
             "risk.threshold": "float", "layout": "object"}
    wrong = {"boolean": "string", "string": "integer", "integer": "boolean",
             "float": "object", "object": "float"}
    defaults: dict[str, Any] = {"boolean": True, "string": "?", "integer": -1, "float": -1.0,
                                "object": {}}

    async def scenario() -> None:
        await send(bootstrap, settings.topic_flags, "s-r", flags_record("s-r", RESTRICTED))
        both = {**RESTRICTED, "downloads.enabled": True, "upload.limit": 10}
        await send(bootstrap, settings.topic_flags, "s-2", flags_record("s-2", both))
        await send(bootstrap, settings.topic_flags, "s-2",
                   flags_record("s-2", RESTRICTED, tenant="globex"))
        subscriber = Subscriber(settings, tenants=["acme", "globex"])
        await subscriber.start()
        api.set_provider(CaepProvider(subscriber), domain)
        client = api.get_client(domain)
        try:
            await until(lambda: sdk_status(domain) is ProviderStatus.READY, 5, "READY")
            policy = subscriber.view.policy
            for key, kind in kinds.items():
                get = getattr(client, f"get_{kind}_details")
                matched = get(key, defaults[kind], ctx("s-r"))
                assert (matched.value, matched.reason, matched.variant) == (
                    RESTRICTED[key], Reason.TARGETING_MATCH, "session"), key
                unseen = get(key, defaults[kind], ctx("s-new"))
                assert (unseen.value, unseen.reason, unseen.variant) == (
                    policy.flags[key], Reason.DEFAULT, "default"), key
                mistyped = getattr(client, f"get_{wrong[kind]}_details")(
                    key, defaults[wrong[kind]], ctx("s-r"))
                assert (mistyped.reason, mistyped.error_code) == (
                    Reason.ERROR, ErrorCode.TYPE_MISMATCH), key
                if key not in policy.security_flags:
                    assert (mistyped.value, mistyped.variant) == (defaults[wrong[kind]], None)

            layout = client.get_object_value("layout", {}, ctx("s-new"))
            layout["columns"] = 99  # type: ignore[index]
            assert client.get_object_value("layout", {}, ctx("s-new")) == {"columns": 2}

            # Two tenants served, the same session id in both, no tenant named: which flags
            # are its is unknown, so security flags fail closed, whatever the caller passes.
            unsure = client.get_boolean_details("downloads.enabled", True, ctx("s-2"))
            assert (unsure.value, unsure.variant) == (False, "fail-closed")
            assert client.get_integer_value("upload.limit", 99, ctx("s-2")) == 0
            assert client.get_string_details("theme", "x", ctx("s-2")).reason == Reason.DEFAULT
            named = client.get_boolean_details("downloads.enabled", False,
                                               ctx("s-2", tenant="acme"))
            assert (named.value, named.reason) == (True, Reason.TARGETING_MATCH)
        finally:
            await subscriber.stop()

    run(scenario, domain)

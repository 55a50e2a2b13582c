"""The faust application: where inputs are verified, re-keyed, evaluated and decisions published.

    caep.security-events --ingest (verify; drop an (iss, jti)
                           already taken in: table)-----\\
                                                         >-- caep.engine-input --evaluate--> ...
    caep.session-activity --activity (validate)---------/    (keyed by subject)   (table)
    timer: due expiries -> Tick records ----------------/
    ... -> decisions on caep.decisions, session flags on caep.flags
    device-only events -> caep.device-index --devices (table)--> engine-input, once per subject
    anything invalid -------------------------------------------------------> caep.dead-letter

Every agent runs at concurrency 1 and awaits each send before taking the next record, so an
offset is committed only after its effects are on the broker (faust-streaming issue 606 loses
messages with concurrency > 1). The subject table is written only by the evaluate agent, after
its decisions are sent, and flushed before the input is acknowledged: a crash in between
replays the input, which repeats the same decision ids or, once the state is saved, nothing.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import faust
import orjson

from caep import jsonbytes
from caep.activity import parse_activity
from caep.codec import SetVerifier
from caep.decisions import Action, Decision, SessionFlags
from caep.errors import CaepError, SetError
from caep.evaluation import (
    SecurityEvent,
    Tick,
    activity_key,
    device_key,
    device_only,
    devices_added,
    evaluate,
    next_deadline,
    security_events,
)
from caep.events import UnrecognizedEvent
from caep.jwks import KeyRefresher
from caep.policy import event_name, load_policy
from caep.replay import ExpiryIndex, Seen, replay_key
from caep.settings import Settings
from caep.state import SubjectState
from caep.trust import TrustStore
from caep.wire import decode_input, encode_input, retarget
from streams import transport
from streams.broker import free_port
from streams.dashboard import Board, install
from streams.metrics import EngineMetrics

log = logging.getLogger("caep.worker")
RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                       "key_serializer": "raw", "value_serializer": "raw"}


def dead_letter_record(
    error: CaepError, *, topic: str, partition: int, offset: int, key: bytes | None, value: bytes
) -> bytes:
    """The dead-letter body keeps the whole input: never data lost, even when it is not text."""
    record: dict[str, Any] = {
        "err": error.code.value,
        "description": error.description,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key.decode("utf-8", "replace") if key is not None else None,
        "received_at": time.time(),
    }
    try:
        record["value"] = value.decode("utf-8")
    except UnicodeDecodeError:
        record["value_hex"] = value.hex()
    return orjson.dumps(record)


class EngineApp(faust.App):
    """The faust app plus the engine's transport knobs that faust has no setting for."""

    fetch_max_wait_ms: int = transport.DEFAULT_FETCH_MAX_WAIT_MS


def create_app(settings: Settings, bootstrap: str, *, idempotence: bool) -> EngineApp:
    """Build the app; a factory so tests and several workers can each have their own."""
    if settings.trust_file is None:
        raise ValueError("a trust file is required")
    verifier = SetVerifier(
        TrustStore.from_file(settings.trust_file),
        max_bytes=settings.max_set_bytes,
        iat_skew=settings.iat_skew_seconds,
    )
    policy = load_policy(settings.policy_file)
    refresher = KeyRefresher()
    web_port = settings.web_port or free_port()  # faust wants a real port number
    datadir = settings.data_dir or Path(tempfile.gettempdir()) / "caep-engine" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = EngineApp(
        settings.app_id,
        broker=[f"{transport.SCHEME}://{server.strip()}" for server in bootstrap.split(",")],
        datadir=str(datadir),
        store=settings.table_store,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        producer_acks=-1,
        producer_enable_idempotence=idempotence,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=settings.group_rebalance_timeout_seconds,
        broker_session_timeout=settings.group_session_timeout_seconds,
        broker_heartbeat_interval=settings.group_heartbeat_interval_seconds,
        web_enabled=True,
        web_port=web_port,
        web_bind=settings.web_bind,
        canonical_url=f"http://{_advertised(settings.web_bind)}:{web_port}",
    )
    app.fetch_max_wait_ms = settings.consumer_fetch_max_wait_ms
    security_events_topic = app.topic(settings.topic_security_events, **RAW)
    activity_topic = app.topic(settings.topic_session_activity, **RAW)
    engine_input = app.topic(settings.topic_engine_input, **RAW)
    device_index = app.topic(settings.topic_device_index, **RAW)
    decisions_topic = app.topic(settings.topic_decisions, **RAW)
    flags_topic = app.topic(settings.topic_flags, **RAW)
    dead_letter = app.topic(settings.topic_dead_letter, **RAW)
    subjects = app.Table("subjects", partitions=settings.topic_partitions,
                         key_type=bytes, value_type=bytes)
    devices = app.Table("devices", partitions=settings.topic_partitions,
                        key_type=bytes, value_type=bytes)
    taken_in = app.Table("taken-in", partitions=settings.topic_partitions,
                         key_type=bytes, value_type=bytes)
    expiry = ExpiryIndex(settings.replay_window_seconds)
    deadlines: dict[bytes, float] = {}
    sources = {security_events_topic.get_topic_name(), activity_topic.get_topic_name(),
               engine_input.get_topic_name(), device_index.get_topic_name()}
    positions: dict[tuple[str, int], int] = {}  # next offset to process, per input partition

    def lag() -> list[tuple[str, int, int]]:
        return _lag(app, sources, positions)

    board = Board(policy, lag)
    metrics = EngineMetrics(board.live_by_tenant, lag)
    install(app, board, metrics, subjects)

    def processed(event: Any) -> None:
        positions[(event.message.topic, event.message.partition)] = event.message.offset + 1

    async def reject(error: CaepError, event: Any) -> None:
        message = event.message
        value = event.value if isinstance(event.value, bytes) else b""
        log.info("dead letter: %s %s", error.code.value, error.description,
                 extra={"err": error.code.value, "topic": message.topic,
                        "partition": message.partition, "offset": message.offset})
        metrics.dead_letters.labels(error.code.value).inc()
        body = dead_letter_record(error, topic=message.topic, partition=message.partition,
                                  offset=message.offset, key=event.key, value=value)
        await (await dead_letter.send(key=event.key, value=body))

    @app.agent(security_events_topic, concurrency=1)
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            processed(event)
            try:
                verified = await refresher.averify(verifier, event.value)
            except SetError as error:
                metrics.events_in.labels("unverified", error.code.value).inc()
                await reject(error, event)
                continue
            kinds = [event_name(item.event_type) for item in verified.items]
            pair = replay_key(verified.iss, verified.jti)
            if pair in taken_in:
                log.info("redelivered SET jti=%s from %s: already taken in", verified.jti,
                         verified.iss, extra={"jti": verified.jti, "iss": verified.iss})
                for kind in kinds:
                    metrics.events_in.labels(kind, "duplicate").inc()
                continue
            for kind in kinds:
                metrics.events_in.labels(kind, "accepted").inc()
            arrived = event.message.timestamp
            for item in security_events(verified):
                if isinstance(item.event, UnrecognizedEvent):
                    log.warning("unrecognized event type %s in SET jti=%s from %s: kept, not "
                                "acted on", item.event_type, item.jti, item.iss)
                if device_only(item):
                    key = device_key(item.tenant, item.device_id or "").encode()
                    await (await device_index.send(key=key, value=encode_input(item),
                                                   timestamp=arrived))
                    continue
                sent = await engine_input.send(key=item.key.encode(), value=encode_input(item),
                                               timestamp=arrived)
                await sent
            # Remembered only once its inputs are on the broker: a crash before this point
            # replays the SET, and the evaluation's own idempotence absorbs the second copy.
            partition, now = event.message.partition, time.time()
            seen = Seen(at=now, partition=partition)
            taken_in[pair] = seen.to_bytes()
            expiry.add(pair, seen)
            for old in expiry.due(partition, now):
                taken_in.pop(old, None)

    @app.agent(activity_topic, concurrency=1)
    async def activity(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            processed(event)
            try:
                fact = parse_activity(event.value)
                key = activity_key(fact)
            except SetError as error:
                metrics.events_in.labels("activity", error.code.value).inc()
                await reject(error, event)
                continue
            metrics.events_in.labels(f"activity:{fact.kind}", "accepted").inc()
            await (await engine_input.send(key=key.encode(), value=encode_input(fact),
                                           timestamp=event.message.timestamp))

    async def publish(decisions: list[Decision], state: SubjectState) -> None:
        pending = [await decisions_topic.send(key=d.subject_key.encode(), value=d.to_json())
                   for d in decisions]
        for decision in decisions:
            if decision.action is Action.SET_FLAGS and decision.enforced and decision.session_id:
                session = state.sessions.get(decision.session_id)
                if session is None:
                    continue
                record = SessionFlags(session_id=decision.session_id, tenant=state.tenant,
                                      subject_key=state.key, flags=dict(session.flags),
                                      updated_at=decision.decided_at)
                pending.append(await flags_topic.send(key=decision.session_id.encode(),
                                                      value=record.to_json()))
        for future in pending:
            await future

    @app.agent(engine_input, concurrency=1)
    async def evaluate_inputs(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            processed(event)
            key: bytes = event.key or b""
            try:
                item = decode_input(event.value)
            except SetError as error:
                await reject(error, event)
                continue
            stored = subjects.get(key)
            state = SubjectState.from_bytes(stored) if stored is not None else None
            if state is None and isinstance(item, Tick):
                continue
            started = time.perf_counter()
            new_state, decisions = evaluate(state, item, policy, time.time(),
                                            key=key.decode())
            elapsed = time.perf_counter() - started
            metrics.evaluation_seconds.observe(elapsed)
            await publish(decisions, new_state)
            metrics.decided(decisions, None if isinstance(item, Tick) else event.message.timestamp)
            board.decided(decisions)
            for device in devices_added(state, new_state):
                record = orjson.dumps({"type": "uses", "subject_key": new_state.key})
                key_ = device_key(new_state.tenant, device).encode()
                await (await device_index.send(key=key_, value=record))
            if new_state is not state:
                board.evaluated(state, new_state)
                subjects[key] = new_state.to_bytes()
                # faust buffers changelog writes and commits input offsets on its own clock;
                # wait until the new state is on the broker, so a crash can lose no state
                # whose input will not be replayed.
                await app.producer.flush()
            deadline = next_deadline(new_state, policy)
            if deadline is None:
                deadlines.pop(key, None)
            else:
                deadlines[key] = deadline
            for decision in decisions:
                log.info("decision %s %s session=%s rule=%s jti=%s (%.2f ms)",
                         decision.decision_id, decision.action.value, decision.session_id,
                         decision.rule, decision.source_jti, elapsed * 1000,
                         extra={"decision_id": decision.decision_id,
                                "action": decision.action.value,
                                "subject_key": decision.subject_key,
                                "session_id": decision.session_id, "rule": decision.rule,
                                "jti": decision.source_jti, "iss": decision.source_iss,
                                "enforced": decision.enforced,
                                "evaluation_ms": round(elapsed * 1000, 3)})

    @app.agent(device_index, concurrency=1)
    async def route_devices(stream: faust.StreamT[bytes]) -> None:
        """Keeps which subjects use each device, and sends a device's events to each of them."""
        async for event in stream.events():
            processed(event)
            key: bytes = event.key or b""
            users: list[str] = orjson.loads(devices[key]) if key in devices else []
            if event.value.startswith(b'{"type":"uses"'):
                subject = orjson.loads(event.value)["subject_key"]
                if subject not in users:
                    devices[key] = jsonbytes.dumps([*users, subject])
                    await app.producer.flush()
                continue
            try:
                item = decode_input(event.value)
            except SetError as error:
                await reject(error, event)
                continue
            if not isinstance(item, SecurityEvent):
                continue
            for subject in users:
                routed = retarget(item, subject)
                await (await engine_input.send(key=subject.encode(), value=encode_input(routed),
                                               timestamp=event.message.timestamp))

    async def index_deadlines() -> None:
        """After each recovery (start-up, partitions moved), index the deadlines this worker
        now owns, so time-driven decisions need no scan on every tick."""
        deadlines.clear()
        states = []
        for key, value in subjects.items():
            state = SubjectState.from_bytes(value)
            states.append(state)
            deadline = next_deadline(state, policy)
            if deadline is not None:
                deadlines[key] = deadline
        board.rebuild(states)
        log.info("deadline index rebuilt: %d subjects with a deadline", len(deadlines))

    subjects.on_recover(index_deadlines)

    async def index_taken_in() -> None:
        expiry.rebuild([(key, Seen.from_bytes(value)) for key, value in taken_in.items()])
        log.info("replay index rebuilt: %d SETs remembered", len(expiry))

    taken_in.on_recover(index_taken_in)

    @app.timer(interval=settings.tick_interval_seconds)  # type: ignore[untyped-decorator]
    async def expire() -> None:
        """Time passes without events: ask the owner of each due subject to check it."""
        now = time.time()
        for key in [k for k, due in deadlines.items() if due <= now]:
            deadlines.pop(key, None)
            await (await engine_input.send(key=key, value=encode_input(Tick())))

    return app


def _advertised(bind: str) -> str:
    """The host other workers reach this one's web server at (faust routes table queries)."""
    return socket.gethostname() if bind in ("0.0.0.0", "::", "") else bind  # noqa: S104


def _lag(app: faust.App, sources: set[str],
         positions: dict[tuple[str, int], int]) -> list[tuple[str, int, int]]:
    """(topic, partition, records not yet processed) for every input partition held."""
    try:
        consumer = app.consumer
        assigned = sorted(consumer.assignment())
    except Exception:  # not started, or stopping: nothing held
        return []
    committed: dict[Any, Any] = getattr(consumer, "_committed_offset", {})
    rows = []
    for tp in assigned:
        if tp.topic not in sources:
            continue
        try:
            high = consumer.highwater(tp)
        except Exception:  # noqa: S112  no fetch answered for it yet: nothing to report
            continue
        position = positions.get((tp.topic, tp.partition), committed.get(tp))
        if high is None or high < 0 or position is None:
            continue
        rows.append((tp.topic, tp.partition, max(0, int(high) - int(position))))
    return rows

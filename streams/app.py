"""The faust application: where inputs are verified, re-keyed, evaluated and decisions published.

    caep.security-events --ingest (verify; drop an (iss, jti)
                           already taken in: table)-----\\
                                                         >-- caep.engine-input --evaluate--> ...
    caep.session-activity --activity (validate)---------/    (keyed by subject)   (table)
    timer: due expiries -> Tick records ----------------/
    ... -> decisions on caep.decisions, session flags on caep.flags
    device-only events -> caep.device-index --devices (table)--> engine-input, once per subject
    anything invalid -------------------------------------------------------> caep.dead-letter

A SET whose record is already keyed by its subject, in the partition engine-input would put it
in (the push edge writes them so), is evaluated by the ingest agent itself: no hop through
engine-input. The subject table then has two writers, which take turns (`subject_writes`).

Every agent runs at concurrency 1 and takes records a batch at a time; a batch's effects leave
through an outbox (`streams.outbox`) and are on the broker before the next batch is taken, so an
offset is committed only after its effects are on the broker (faust-streaming issue 606 loses
messages with concurrency > 1); an agent that fails stops the worker, so the partitions' next
owner reads its unfinished batch again (see `AGENT`). The subject table is written only after
the decisions of its new states are sent, and flushed before the input is acknowledged: a crash
in between replays the input, which repeats the same decision ids or, once the state is saved,
nothing. The ingest agent remembers a SET's (iss, jti) only after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import tempfile
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import faust
import orjson
from faust.streams import _current_event
from mode import CrashingSupervisor
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from caep import jsonbytes
from caep.activity import parse_activity
from caep.codec import SetVerifier
from caep.decisions import Action, Decision, SessionFlags
from caep.errors import CaepError, SetError
from caep.evaluation import (
    EngineInput,
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
from streams.outbox import Outbox

log = logging.getLogger("caep.worker")
batch_log = logging.getLogger("caep.worker.batches")
RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                       "key_serializer": "raw", "value_serializer": "raw"}
# One record at a time per agent (faust-streaming issue 606 loses messages with more), and an
# agent that fails stops the worker: its unfinished batch is left unacknowledged, and only a
# new owner of the partitions reads it again (a restarted agent would go on after it, and
# faust would commit past it).
AGENT: dict[str, Any] = {"concurrency": 1, "supervisor_strategy": CrashingSupervisor}


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
    leave_group_on_stop: bool = True

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        """Reports the records it empties out of stream buffers, so the transport reads
        them again (streams/transport.py)."""
        return transport.ReportingFlowControl(loop=self.loop)


def create_app(settings: Settings, bootstrap: str, *, idempotence: bool,
               leave_group: bool = True) -> EngineApp:
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
        # Tansu can report a changelog's end one batch short of what a standby has already
        # read, and faust then stops the worker for "data removed from the topics". A memory
        # store's offsets only ever come from this broker in this process, so the check can
        # only be that false alarm there; a RocksDB store keeps it (README, Known limits).
        recovery_consistency_check=settings.table_store != "memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        producer_acks=-1,
        # Effects are awaited a batch at a time, so a short linger costs at most that much
        # latency and turns a batch's records into a few produce requests instead of hundreds.
        producer_linger=settings.producer_linger_ms / 1000,
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
    app.leave_group_on_stop = leave_group
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
    batch_records, batch_wait = settings.batch_max_records, settings.batch_max_wait_ms / 1000
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

    names = {topic: topic.get_topic_name() for topic in (
        security_events_topic, engine_input, device_index, decisions_topic, flags_topic,
        dead_letter)}

    def outbox() -> Outbox:
        return Outbox(cast(Any, app.producer)._ensure_producer())

    def dead_letter_to(box: Outbox, error: CaepError, event: Any) -> None:
        message = event.message
        value = event.value if isinstance(event.value, bytes) else b""
        log.info("dead letter: %s %s", error.code.value, error.description,
                 extra={"err": error.code.value, "topic": message.topic,
                        "partition": message.partition, "offset": message.offset})
        metrics.dead_letters.labels(error.code.value).inc()
        body = dead_letter_record(error, topic=message.topic, partition=message.partition,
                                  offset=message.offset, key=event.key, value=value)
        box.add(names[dead_letter], event.key, body)

    async def store_all(table: Any, writes: list[tuple[Any, bytes, bytes | None]]) -> None:
        """Apply a batch's table writes ((event, key, value or None to delete)) and wait until
        their changelog records are on the broker.

        All are sent at once; then the last record of each changelog partition is sent once
        more, alone. Tansu answers a partition's end offset as one past the first record of
        its last batch, and faust restores a table only up to there: a last batch of one
        record (a repeat of the key's latest value, harmless on a compacted topic) makes that
        end exact. A crash between the two steps leaves the batch unacknowledged, so its
        inputs are read again and re-applied to whatever was restored. A RocksDB store is
        told the changelog offsets it now holds, as faust's own table writes do."""
        if not writes:
            return
        changelog = table.changelog_topic.get_topic_name()
        box = outbox()
        last: dict[int, tuple[bytes, bytes | None]] = {}
        for event, key, value in writes:
            with _writing_for(event):  # a RocksDB store writes to the event's partition
                if value is None:
                    table.data.pop(key, None)
                else:
                    table.data[key] = value
            partition = event.message.partition
            box.add(changelog, key, value, partition=partition)
            last[partition] = (key, value)
        written = await box.flush()
        for partition, (key, value) in last.items():
            box.add(changelog, key, value, partition=partition)
        written.update(await box.flush())
        for tp, offset in written.items():
            table.data.set_persisted_offset(tp, offset)

    def taken_within_window(pair: bytes) -> bool:
        """Whether the pair was taken in less than the replay window ago: a pair past it
        counts as forgotten even before the partition's next batch prunes it."""
        stored = taken_in.get(pair)
        return stored is not None and (
            Seen.from_bytes(stored).at > time.time() - settings.replay_window_seconds)

    async def evaluated_on_arrival(box: Outbox) -> Callable[[Any, bytes], bool]:
        """Whether a SET's input about a subject is evaluated by the ingest agent itself: when
        its record is keyed by that subject, in the partition engine-input would put it in,
        and both topics have as many partitions (faust then gives this worker that partition
        of every input topic and of the subject table, as one copartitioned group). The push
        edge keys SETs so; a record keyed otherwise takes the hop through engine-input."""
        count, partition_of = await box.placement(names[engine_input])
        if count != (await box.placement(names[security_events_topic]))[0]:
            return lambda _event, _key: False
        return lambda event, key: (event.key == key
                                   and partition_of(key, None) == event.message.partition)

    @app.agent(security_events_topic, **AGENT)
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        async for events in _batches(stream, batch_records, batch_wait):
            box = outbox()
            taken: list[tuple[Any, bytes]] = []
            batch_pairs: set[bytes] = set()
            outcomes = await refresher.averify_all(verifier, [event.value for event in events])
            here = await evaluated_on_arrival(box)
            inputs: list[tuple[Any, bytes, EngineInput]] = []
            for event, verified in zip(events, outcomes, strict=True):
                processed(event)
                if isinstance(verified, SetError):
                    metrics.events_in.labels("unverified", verified.code.value).inc()
                    dead_letter_to(box, verified, event)
                    continue
                kinds = [event_name(item.event_type) for item in verified.items]
                pair = replay_key(verified.iss, verified.jti)
                if pair in batch_pairs or taken_within_window(pair):
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
                        log.warning("unrecognized event type %s in SET jti=%s from %s: kept, "
                                    "not acted on", item.event_type, item.jti, item.iss)
                    key = item.key.encode()
                    if device_only(item):
                        key = device_key(item.tenant, item.device_id or "").encode()
                        box.add(names[device_index], key, encode_input(item), timestamp=arrived)
                    elif here(event, key):
                        inputs.append((event, key, item))
                    else:
                        box.add(names[engine_input], key, encode_input(item),
                                timestamp=arrived)
                taken.append((event, pair))
                batch_pairs.add(pair)
            if inputs:
                metrics.evaluated_on_arrival.inc(len(inputs))
                await apply(box, inputs)
            else:
                await box.flush()
            # Remembered only once their inputs are on the broker: a crash before this point
            # replays the SETs, and the evaluation's own idempotence absorbs the second copies.
            now = time.time()
            writes: list[tuple[Any, bytes, bytes | None]] = []
            for event, pair in taken:
                partition = event.message.partition
                seen = Seen(at=now, partition=partition)
                writes.append((event, pair, seen.to_bytes()))
                expiry.add(pair, seen)
                with _writing_for(event):  # a RocksDB store looks in the event's partition
                    gone = [old for old in expiry.due(partition, now) if old in taken_in.data]
                writes += [(event, old, None) for old in gone]
            await store_all(taken_in, writes)
            # take_events acknowledges the batch's records once this body returns

    @app.agent(activity_topic, **AGENT)
    async def activity(stream: faust.StreamT[bytes]) -> None:
        async for events in _batches(stream, batch_records, batch_wait):
            box = outbox()
            for event in events:
                processed(event)
                try:
                    fact = parse_activity(event.value)
                    key = activity_key(fact)
                except SetError as error:
                    metrics.events_in.labels("activity", error.code.value).inc()
                    dead_letter_to(box, error, event)
                    continue
                metrics.events_in.labels(f"activity:{fact.kind}", "accepted").inc()
                box.add(names[engine_input], key.encode(), encode_input(fact),
                        timestamp=event.message.timestamp)
            await box.flush()

    def publish(box: Outbox, decisions: list[Decision], state: SubjectState) -> None:
        for d in decisions:
            box.add(names[decisions_topic], d.subject_key.encode(), d.to_json())
        for decision in decisions:
            if decision.action is Action.SET_FLAGS and decision.enforced and decision.session_id:
                session = state.sessions.get(decision.session_id)
                if session is None:
                    continue
                record = SessionFlags(session_id=decision.session_id, tenant=state.tenant,
                                      subject_key=state.key, flags=dict(session.flags),
                                      updated_at=decision.decided_at)
                box.add(names[flags_topic], decision.session_id.encode(), record.to_json())

    # The subject table has two writers: the evaluate agent, and the ingest agent for the SETs
    # it evaluates where they arrive. Each holds this from reading a subject's state until the
    # new state is on the changelog, so neither evaluates from a state the other is replacing.
    subject_writes = asyncio.Lock()

    async def apply(box: Outbox, inputs: list[tuple[Any, bytes, EngineInput]]) -> None:
        """Evaluate `inputs` ((event, subject key, input)), send the decisions with whatever
        `box` already holds, then store the new states."""
        # New states are kept aside until the batch's decisions are on the broker, then
        # written to the table: a state on the changelog always has its decisions out.
        states: dict[bytes, tuple[Any, SubjectState | None, SubjectState]] = {}
        made: list[tuple[list[Decision], float, float | None]] = []
        async with subject_writes:
            for event, key, item in inputs:
                if key in states:
                    state: SubjectState | None = states[key][2]
                else:
                    stored = subjects.get(key)
                    state = SubjectState.from_bytes(stored) if stored is not None else None
                if state is None and isinstance(item, Tick):
                    continue
                started = time.perf_counter()
                new_state, decisions = evaluate(state, item, policy, time.time(),
                                                key=key.decode())
                elapsed = time.perf_counter() - started
                metrics.evaluation_seconds.observe(elapsed)
                publish(box, decisions, new_state)
                for device in devices_added(state, new_state):
                    record = orjson.dumps({"type": "uses", "subject_key": new_state.key})
                    box.add(names[device_index], device_key(new_state.tenant, device).encode(),
                            record)
                if new_state is not state:
                    first = states[key][1] if key in states else state
                    states[key] = (event, first, new_state)
                deadline = next_deadline(new_state, policy)
                if deadline is None:
                    deadlines.pop(key, None)
                else:
                    deadlines[key] = deadline
                made.append((decisions, elapsed,
                             None if isinstance(item, Tick) else event.message.timestamp))
            await box.flush()
            # The new states' changelog records must be on the broker before the batch is
            # acknowledged, so a crash can lose no state whose input is not replayed.
            await store_all(subjects, [(event, key, after.to_bytes())
                                       for key, (event, _before, after) in states.items()])
        for _event, before, after in states.values():
            board.evaluated(before, after)
        for decisions, elapsed, arrived in made:
            metrics.decided(decisions, arrived)
            board.decided(decisions)
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

    @app.agent(engine_input, **AGENT)
    async def evaluate_inputs(stream: faust.StreamT[bytes]) -> None:
        async for events in _batches(stream, batch_records, batch_wait):
            box = outbox()
            inputs: list[tuple[Any, bytes, EngineInput]] = []
            for event in events:
                processed(event)
                try:
                    inputs.append((event, event.key or b"", decode_input(event.value)))
                except SetError as error:
                    dead_letter_to(box, error, event)
            await apply(box, inputs)

    @app.agent(device_index, **AGENT)
    async def route_devices(stream: faust.StreamT[bytes]) -> None:
        """Keeps which subjects use each device, and sends a device's events to each of them."""
        async for event in stream.events():
            processed(event)
            key: bytes = event.key or b""
            users: list[str] = orjson.loads(devices[key]) if key in devices else []
            if event.value.startswith(b'{"type":"uses"'):
                subject = orjson.loads(event.value)["subject_key"]
                if subject not in users:
                    await store_all(devices, [(event, key, jsonbytes.dumps([*users, subject]))])
                continue
            box = outbox()
            try:
                item = decode_input(event.value)
            except SetError as error:
                dead_letter_to(box, error, event)
                await box.flush()
                continue
            if not isinstance(item, SecurityEvent):
                continue
            for subject in users:
                routed = retarget(item, subject)
                box.add(names[engine_input], subject.encode(), encode_input(routed),
                        timestamp=event.message.timestamp)
            await box.flush()

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
        due = [k for k, deadline in deadlines.items() if deadline <= now]
        if not due:
            return
        box = outbox()
        for key in due:
            deadlines.pop(key, None)
            box.add(names[engine_input], key, encode_input(Tick()))
        await box.flush()

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


@contextlib.contextmanager
def _writing_for(event: Any) -> Iterator[None]:
    """Table writes made here go to the changelog partition of `event`'s record.

    faust picks a table write's changelog partition from the current event of the task, which
    in a batch taken with `take_events` is not the record the write is for; this sets it (the
    task's own context variable only: the stream's background buffering is not touched)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


async def _batches(stream: faust.StreamT[bytes], records: int,
                   within: float) -> AsyncIterator[list[Any]]:
    """Up to `records` events at a time (fewer after `within` seconds). faust acknowledges a
    batch's records when the loop asks for the next batch, so after its effects are sent.

    But `take_events` also acknowledges the batch on its way out when the agent is stopped
    (SIGTERM) or fails in the middle of it, and faust then commits those offsets: the batch
    would be lost. So a batch left unfinished has its messages marked handled first, which
    makes faust's acknowledgement a no-op: their offsets stay out of the commit and the next
    owner of the partition reads them again."""
    async for events in cast(Any, stream).take_events(records, within=within):
        if batch_log.isEnabledFor(logging.INFO):
            spans: dict[tuple[str, int], list[int]] = {}
            for event in events:
                m = event.message
                spans.setdefault((m.topic, m.partition), []).append(m.offset)
            batch_log.info("batch %s", " ".join(
                f"{t}[{p}]@{min(o)}-{max(o)}/{len(o)}" for (t, p), o in sorted(spans.items())))
        finished = False
        try:
            yield events
            finished = True
        finally:
            if not finished:
                log.warning("batch of %d record(s) left unfinished (stopping or failed): not "
                            "acknowledged, the partitions' next owner reads them again",
                            len(events))
                for event in events:
                    event.message.acked = True

"""The faust application: topics in, the ingest agent, decisions and dead letters out."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import faust
import orjson

from caep.codec import SetVerifier
from caep.errors import SetError
from caep.evaluation import decide
from caep.jwks import KeyRefresher
from caep.settings import Settings
from caep.trust import TrustStore
from streams import transport

log = logging.getLogger("caep.worker")


def dead_letter_record(
    error: SetError, *, topic: str, partition: int, offset: int, key: bytes | None, value: bytes
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
    datadir = Path(tempfile.gettempdir()) / "caep-engine" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    refresher = KeyRefresher()
    app = EngineApp(
        settings.app_id,
        broker=[f"{transport.SCHEME}://{server.strip()}" for server in bootstrap.split(",")],
        datadir=str(datadir),
        topic_partitions=settings.topic_partitions,
        producer_acks=-1,
        producer_enable_idempotence=idempotence,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=settings.group_rebalance_timeout_seconds,
        broker_session_timeout=settings.group_session_timeout_seconds,
        broker_heartbeat_interval=settings.group_heartbeat_interval_seconds,
    )
    app.fetch_max_wait_ms = settings.consumer_fetch_max_wait_ms
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                           "key_serializer": "raw", "value_serializer": "raw"}
    security_events = app.topic(settings.topic_security_events, **raw)
    decisions_topic = app.topic(settings.topic_decisions, **raw)
    dead_letter = app.topic(settings.topic_dead_letter, **raw)

    # Concurrency 1 on the revocation path: faust-streaming commits past in-flight offsets
    # with concurrency > 1 (its issue 606). Each send is awaited before the offset is acked.
    @app.agent(security_events, concurrency=1)
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            value: bytes = event.value if isinstance(event.value, bytes) else b""
            try:
                verified = await refresher.averify(verifier, value)
            except SetError as error:
                log.info("dead letter: %s %s", error.code.value, error.description)
                body = dead_letter_record(
                    error, topic=message.topic, partition=message.partition,
                    offset=message.offset, key=event.key, value=value,
                )
                await (await dead_letter.send(key=event.key, value=body))
                continue
            for item in verified.items:
                if not item.recognized:
                    log.warning("unrecognized event type %s in SET jti=%s from %s: kept, not "
                                "acted on", item.event_type, verified.jti, verified.iss)
            for decision in decide(verified, time.time()):
                sent = await decisions_topic.send(
                    key=decision.subject_key.encode(), value=decision.to_json()
                )
                await sent
                log.info("decision %s %s jti=%s", decision.decision_id, decision.action,
                         decision.source_jti)

    return app

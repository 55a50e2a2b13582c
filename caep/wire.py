"""The engine's internal records on `caep.engine-input`: evaluation inputs, keyed by subject.

Verified SETs and session activity arrive on topics keyed however their producers chose; the
engine re-keys them here by tenant + canonical subject so that every input about a subject is
processed in order, in the partition that holds that subject's state.
"""

from __future__ import annotations

from typing import Any

import orjson

from caep.activity import SessionActivity, parse_activity
from caep.errors import InvalidRequest
from caep.evaluation import EngineInput, SecurityEvent, Tick
from caep.events import UnrecognizedEvent, parse_event


def encode_input(item: EngineInput) -> bytes:
    if isinstance(item, SecurityEvent):
        event = item.event
        payload = (event.payload if isinstance(event, UnrecognizedEvent)
                   else event.model_dump(mode="json", exclude_none=True, by_alias=True))
        return orjson.dumps({
            "type": "event", "tenant": item.tenant, "subject": item.subject, "key": item.key,
            "event_type": item.event_type, "event": payload, "iss": item.iss, "jti": item.jti,
            "occurred_at": item.occurred_at, "session_id": item.session_id,
            "device_id": item.device_id,
        })
    if isinstance(item, SessionActivity):
        return orjson.dumps({"type": "activity",
                             "activity": item.model_dump(mode="json", exclude_none=True)})
    return b'{"type":"tick"}'


def retarget(event: SecurityEvent, key: str) -> SecurityEvent:
    """The same event, addressed to one subject that uses its device."""
    return SecurityEvent(tenant=event.tenant, subject=event.subject, key=key,
                         event_type=event.event_type, event=event.event, iss=event.iss,
                         jti=event.jti, occurred_at=event.occurred_at, session_id=None,
                         device_id=event.device_id)


def decode_input(data: bytes) -> EngineInput:
    """The input a record holds; InvalidRequest if it is not one this engine wrote."""
    try:
        raw: Any = orjson.loads(data)
        kind = raw["type"]
        if kind == "tick":
            return Tick()
        if kind == "activity":
            return parse_activity(raw["activity"])
        if kind == "event":
            return SecurityEvent(
                tenant=raw["tenant"], subject=raw["subject"], key=raw["key"],
                event_type=raw["event_type"], event=parse_event(raw["event_type"], raw["event"]),
                iss=raw["iss"], jti=raw["jti"], occurred_at=float(raw["occurred_at"]),
                session_id=raw["session_id"], device_id=raw["device_id"])
    except InvalidRequest:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"not an engine input record: {type(exc).__name__}") from None
    raise InvalidRequest(f"unknown engine input type {kind!r}")

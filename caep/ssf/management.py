"""SSF 1.0 §8.1 stream management as pure functions: request body in, new record (or an
`SsfError` with its HTTP status) out. The HTTP layer only authenticates, loads and stores."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from caep.events import CAEP
from caep.ssf.auth import ReceiverClient
from caep.ssf.models import (
    DELIVERY_METHODS,
    POLL,
    PUSH,
    Delivery,
    StatusBody,
    StreamConfiguration,
    StreamRecord,
    StreamStatus,
)
from caep.subjects import describe_validation_error

#: What the edge transmits: the engine's decisions as CAEP events (caep/ssf/mapping.py).
EVENTS_SUPPORTED = (
    CAEP + "session-revoked",
    CAEP + "assurance-level-change",
    CAEP + "token-claims-change",
)
RECEIVER_SUPPLIED = ("events_requested", "delivery", "description")
TRANSMITTER_SUPPLIED = ("iss", "aud", "events_supported", "events_delivered",
                        "min_verification_interval")
MAX_DESCRIPTION = 1000


class SsfError(Exception):
    """A refused management request: HTTP status, short code, description."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description

    def to_dict(self) -> dict[str, str]:
        return {"err": self.code, "description": self.description}


def bad_request(description: str) -> SsfError:
    return SsfError(400, "invalid_request", description)


def not_found(stream_id: str) -> SsfError:
    return SsfError(404, "not_found", f"no stream {stream_id!r} for this receiver")


def body_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


def stream_id_of(body: Mapping[str, Any]) -> str:
    stream_id = body.get("stream_id")
    if not isinstance(stream_id, str) or not stream_id:
        raise bad_request("stream_id (a non-empty string) is required")
    return stream_id


def poll_url(issuer: str, stream_id: str) -> str:
    return f"{issuer}/ssf/poll/{stream_id}"


def _delivery(value: Any, issuer: str, stream_id: str) -> Delivery:
    """SSF §8.1.1.1: no delivery means poll; poll's endpoint_url is ours, push's is theirs."""
    if value is None:
        value = {"method": POLL}
    try:
        delivery = Delivery.model_validate(value)
    except ValidationError as exc:
        raise bad_request(f"delivery: {describe_validation_error(exc)}") from None
    if delivery.method not in DELIVERY_METHODS:
        raise bad_request(f"delivery method {delivery.method!r} is not supported; use one of "
                          f"{list(DELIVERY_METHODS)}")
    if delivery.method == POLL:
        return Delivery(method=POLL, endpoint_url=poll_url(issuer, stream_id))
    url = delivery.endpoint_url
    if not url or not url.startswith(("https://", "http://")):
        raise bad_request("push delivery needs an http(s) endpoint_url")
    return Delivery(method=PUSH, endpoint_url=url,
                    authorization_header=delivery.authorization_header)


def _events_requested(value: Any) -> list[str] | None:
    """SSF §8.1.1: a Transmitter "MUST ignore any array values that it does not understand",
    so members that are not strings are dropped, not refused; only a non-array is an error."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise bad_request("events_requested must be an array of event type URIs")
    return list(dict.fromkeys(v for v in value if isinstance(v, str)))


def _description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request("description must be a string")
    return value[:MAX_DESCRIPTION]


def events_delivered(requested: list[str] | None) -> list[str]:
    """What was asked for and is supported (unknown types ignored, SSF §8.1.1); everything
    supported when nothing was asked for."""
    if requested is None:
        return list(EVENTS_SUPPORTED)
    return [event for event in requested if event in EVENTS_SUPPORTED]


def _configuration(body: Mapping[str, Any], *, stream_id: str, issuer: str,
                   receiver: ReceiverClient) -> StreamConfiguration:
    requested = _events_requested(body.get("events_requested"))
    audience = receiver.audience
    return StreamConfiguration(
        stream_id=stream_id, iss=issuer,
        aud=audience if isinstance(audience, str) else list(audience),
        delivery=_delivery(body.get("delivery"), issuer, stream_id),
        events_supported=list(EVENTS_SUPPORTED), events_requested=requested,
        events_delivered=events_delivered(requested),
        description=_description(body.get("description")))


def create(body: Any, *, issuer: str, receiver: ReceiverClient, now: float,
           stream_id: str | None = None) -> StreamRecord:
    """SSF §8.1.1.1 Creating a Stream (several streams per receiver are allowed)."""
    body = body_object(body)
    for name in ("stream_id", *TRANSMITTER_SUPPLIED):
        if name in body:
            raise bad_request(f"{name} is supplied by the transmitter, not in a create request")
    config = _configuration(body, stream_id=stream_id or uuid.uuid4().hex, issuer=issuer,
                            receiver=receiver)
    return StreamRecord(config=config, owner=receiver.client_id, created_at=now,
                        updated_at=now)


def _check_transmitter_supplied(body: Mapping[str, Any], current: StreamConfiguration) -> None:
    """SSF §8.1.1.3/4: transmitter-supplied members may be sent but must match."""
    wire = current.to_wire()
    for name in TRANSMITTER_SUPPLIED:
        if name in body and body[name] != wire.get(name):
            raise bad_request(f"{name} does not match the stream's value (it cannot be changed)")


def update(record: StreamRecord, body: Any, *, issuer: str, receiver: ReceiverClient,
           now: float) -> StreamRecord:
    """SSF §8.1.1.3 PATCH: receiver-supplied members present are changed, others kept."""
    body = body_object(body)
    _check_transmitter_supplied(body, record.config)
    merged = {name: value for name, value in record.config.to_wire().items()
              if name in RECEIVER_SUPPLIED}
    if "delivery" in merged and merged["delivery"].get("method") == POLL:
        merged["delivery"] = {"method": POLL}
    merged.update({name: body[name] for name in RECEIVER_SUPPLIED if name in body})
    config = _configuration(merged, stream_id=record.stream_id, issuer=issuer,
                            receiver=receiver)
    return record.model_copy(update={"config": config, "updated_at": now})


def replace(record: StreamRecord, body: Any, *, issuer: str, receiver: ReceiverClient,
            now: float) -> StreamRecord:
    """SSF §8.1.1.4 PUT: the receiver-supplied members are exactly those in the body (a
    missing `delivery` means poll, as in a create request)."""
    body = body_object(body)
    _check_transmitter_supplied(body, record.config)
    config = _configuration(body, stream_id=record.stream_id, issuer=issuer, receiver=receiver)
    return record.model_copy(update={"config": config, "updated_at": now})


def status_body(body: Any) -> StatusBody:
    try:
        return StatusBody.model_validate(body_object(body))
    except ValidationError as exc:
        raise bad_request(describe_validation_error(exc)) from None


def set_status(record: StreamRecord, status: StreamStatus, reason: str | None,
               now: float) -> StreamRecord:
    return record.model_copy(update={"status": status, "reason": reason, "updated_at": now})


def status_of(record: StreamRecord) -> dict[str, Any]:
    """SSF §8.1.2.1 response body."""
    body: dict[str, Any] = {"stream_id": record.stream_id, "status": record.status}
    if record.reason is not None:
        body["reason"] = record.reason
    return body

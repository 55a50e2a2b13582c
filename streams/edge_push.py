"""The RFC 8935 push endpoint (`POST /ssf/push`): identity providers' SETs into Kafka.

202 only after the broker acknowledged the record on the security-events topic, keyed by the
SET's tenant and canonical subject (the engine's partition key). A repeated `jti` of a SET
already written answers 202 without a second write; one still in flight is written again,
which the engine absorbs (its inputs are idempotent).

A verification SET carrying a `state` is the answer to a verification this edge requested
(SSF §8.1.4.2: a transmitter-initiated one has no state); its state is checked against the
edge's `VerificationTracker` (shared with the stream management clients that request them)
and an unknown one is refused 400 `invalid_state` (SSF §8.1.4.1, RFC 8935 §2.3).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from caep.codec import SetVerifier
from caep.errors import AccessDenied, AuthenticationFailed, CaepError, InvalidRequest, SetError
from caep.evaluation import security_events
from caep.jwks import KeyRefresher
from caep.ssf.auth import EdgeClients
from caep.ssf.verification import VerificationTracker
from streams.edge_sink import DurableSink, Saturated, Unavailable

log = logging.getLogger("caep.edge.push")
SET_MEDIA_TYPE = "application/secevent+jwt"
RECENT_JTIS = 4096
# RFC 8935 section 2.3: an error response MUST name the language of its descriptions (ours
# are English only, which is also what the section asks for when none requested is offered)
ERROR_LANGUAGE = "en-US"


def error_response(error: CaepError, status: int = 400,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The RFC 8935 section 2.3 error body, with its `Content-Language`."""
    return JSONResponse(error.to_dict(), status_code=status,
                        headers={"Content-Language": ERROR_LANGUAGE, **(headers or {})})


class PushEndpoint:
    """Verifies each pushed SET and answers only once its fate is known."""

    def __init__(self, *, verifier: SetVerifier, clients: EdgeClients, sink: DurableSink,
                 topic: str, max_bytes: int, retry_after: int,
                 tracker: VerificationTracker | None = None) -> None:
        self.verifier = verifier
        self.tracker = tracker or VerificationTracker()
        self.clients = clients
        self.sink = sink
        self.topic = topic
        self.max_bytes = max_bytes
        self.retry_after = str(retry_after)
        self.refresher = KeyRefresher()
        self._written: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def handle(self, request: Request) -> Response:
        transmitter = self.clients.transmitter_for(request.headers.get("authorization"))
        if transmitter is None:
            return error_response(
                AuthenticationFailed("a valid bearer token of a transmitter is required"), 401,
                {"WWW-Authenticate": 'Bearer realm="ssf-push"'})
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != SET_MEDIA_TYPE:
            return error_response(InvalidRequest(
                f"Content-Type must be {SET_MEDIA_TYPE}, got {media_type or 'none'!r}"))
        body = await self._read(request)
        if body is None:
            return error_response(
                InvalidRequest(f"SET larger than {self.max_bytes} bytes"), 413)
        try:
            verified = await self.refresher.averify(self.verifier, body)
        except SetError as error:
            log.info("push from %s refused: %s %s", transmitter.name, error.code.value,
                     error.description)
            return error_response(error)
        if not transmitter.may_send(verified.iss):
            return error_response(AccessDenied(
                f"transmitter {transmitter.name!r} may not send SETs of issuer {verified.iss!r}"))
        state_error = self.tracker.check(verified.claims)
        if state_error is not None:
            log.info("push from %s refused: verification state not requested",
                     transmitter.name)
            return JSONResponse(
                {"err": state_error, "description": "verification state was not requested"},
                status_code=400, headers={"Content-Language": ERROR_LANGUAGE})
        seen = (verified.iss, verified.jti)
        if seen in self._written:
            return Response(status_code=202)
        key = security_events(verified)[0].key.encode()
        try:
            await self.sink.write(self.topic, key, body.strip())
        except Saturated as exc:
            log.warning("push refused, producer saturated: %s", exc)
            return self._retry_later(429, str(exc))
        except Unavailable as exc:
            log.warning("push refused, broker unavailable: %s", exc)
            return self._retry_later(503, str(exc))
        self.tracker.confirm(verified.claims)
        self._written[seen] = None
        if len(self._written) > RECENT_JTIS:
            self._written.popitem(last=False)
        return Response(status_code=202)

    def _retry_later(self, status: int, description: str) -> Response:
        """429/503 are HTTP conditions, not SET errors: no RFC 8935 `err`, a `Retry-After`."""
        return JSONResponse({"description": description}, status_code=status,
                            headers={"Retry-After": self.retry_after})

    async def _read(self, request: Request) -> bytes | None:
        """The body, or None once it exceeds the limit (never buffered beyond it)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

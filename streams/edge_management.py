"""SSF 1.0 §8 stream management over HTTP, authorized per receiver (RFC 6750 bearer tokens).

A receiver only ever sees its own streams: another receiver's stream id answers 404, as an
unknown one does, so ids cannot be probed. A token that is missing answers 401 with a bare
`WWW-Authenticate: Bearer`, an unknown one 401 `invalid_token`, one without the scope the
operation needs (CAEP interoperability profile: `ssf.manage`, `ssf.read` for reads) 403
`insufficient_scope` (RFC 6750 §3.1).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from caep.errors import InvalidRequest
from caep.ssf import management, matching
from caep.ssf.auth import EdgeClients, ReceiverClient
from caep.ssf.management import SsfError, bad_request, not_found
from caep.ssf.models import StreamRecord, SubjectBody, VerificationBody, transmitter_metadata
from caep.subjects import describe_validation_error, parse_subject
from streams.edge_delivery import Delivery
from streams.edge_keys import SigningKeys
from streams.edge_store import StreamStore

NO_STORE = {"Cache-Control": "no-store"}
Handler = Callable[[Request, ReceiverClient], Awaitable[Response]]


def error(exc: SsfError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)


class Management:
    """The configuration, status, subject and verification endpoints, and discovery."""

    def __init__(self, *, issuer: str, clients: EdgeClients, store: StreamStore,
                 delivery: Delivery, keys: SigningKeys) -> None:
        self.issuer = issuer
        self.clients = clients
        self.store = store
        self.delivery = delivery
        self.keys = keys

    # -- discovery ---------------------------------------------------------------------------

    async def configuration(self, _request: Request) -> Response:
        """SSF §7.2: public, so receivers can discover how to authorize."""
        return JSONResponse(transmitter_metadata(self.issuer).to_wire())

    async def jwks(self, _request: Request) -> Response:
        return JSONResponse(self.keys.jwks(), headers={"Cache-Control": "max-age=300"})

    # -- authorization -----------------------------------------------------------------------

    def authorized(self, handler: Handler, *, manage: bool) -> Callable[[Request],
                                                                       Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            header = request.headers.get("authorization")
            if "access_token" in request.query_params:  # RFC 6750 §2.3 is refused (profile)
                return error(SsfError(400, "invalid_request",
                                      "access tokens are accepted in the header only"))
            receiver = self.clients.receiver_for(header)
            if receiver is None:
                challenge = ('Bearer realm="ssf"' if not header else
                             'Bearer realm="ssf", error="invalid_token", '
                             'error_description="unknown or malformed bearer token"')
                code = "invalid_token" if header else "authentication_failed"
                return error(SsfError(401, code, "a valid bearer token is required"),
                             {"WWW-Authenticate": challenge})
            if not (receiver.can_manage() if manage else receiver.can_read()):
                scope = "ssf.manage" if manage else "ssf.read"
                return error(SsfError(403, "insufficient_scope", f"this needs scope {scope}"),
                             {"WWW-Authenticate": f'Bearer realm="ssf", '
                                                  f'error="insufficient_scope", scope="{scope}"'})
            try:
                return await handler(request, receiver)
            except SsfError as exc:
                return error(exc)
        return endpoint

    @staticmethod
    async def _body(request: Request) -> Any:
        raw = await request.body()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad_request("the request body is not JSON") from None

    def _own(self, stream_id: str, receiver: ReceiverClient) -> StreamRecord:
        record = self.store.get(stream_id)
        if record is None or record.owner != receiver.client_id:
            raise not_found(stream_id)
        return record

    # -- configuration endpoint (§8.1.1) -----------------------------------------------------

    async def create(self, request: Request, receiver: ReceiverClient) -> Response:
        body = await self._body(request)
        async with self.store.lock:
            record = management.create(body, issuer=self.issuer, receiver=receiver,
                                       now=time.time())
            await self.store.put(record)
        return JSONResponse(record.config.to_wire(), status_code=201, headers=NO_STORE)

    async def read(self, request: Request, receiver: ReceiverClient) -> Response:
        stream_id = request.query_params.get("stream_id")
        if stream_id is None:
            return JSONResponse([r.config.to_wire() for r in
                                 self.store.owned_by(receiver.client_id)], headers=NO_STORE)
        return JSONResponse(self._own(stream_id, receiver).config.to_wire(), headers=NO_STORE)

    async def update(self, request: Request, receiver: ReceiverClient) -> Response:
        return await self._change(request, receiver, management.update)

    async def replace(self, request: Request, receiver: ReceiverClient) -> Response:
        return await self._change(request, receiver, management.replace)

    async def _change(self, request: Request, receiver: ReceiverClient,
                      change: Callable[..., StreamRecord]) -> Response:
        body = management.body_object(await self._body(request))
        async with self.store.lock:
            record = self._own(management.stream_id_of(body), receiver)
            changed = change(record, body, issuer=self.issuer, receiver=receiver,
                             now=time.time())
            await self.store.put(changed)
        return JSONResponse(changed.config.to_wire(), headers=NO_STORE)

    async def delete(self, request: Request, receiver: ReceiverClient) -> Response:
        stream_id = request.query_params.get("stream_id")
        if not stream_id:
            raise bad_request("stream_id query parameter is required")
        async with self.store.lock:
            self._own(stream_id, receiver)
            await self.store.delete(stream_id)
        return Response(status_code=204, headers=NO_STORE)

    # -- status endpoint (§8.1.2) ------------------------------------------------------------

    async def read_status(self, request: Request, receiver: ReceiverClient) -> Response:
        stream_id = request.query_params.get("stream_id")
        if not stream_id:
            raise bad_request("stream_id query parameter is required")
        return JSONResponse(management.status_of(self._own(stream_id, receiver)),
                            headers=NO_STORE)

    async def update_status(self, request: Request, receiver: ReceiverClient) -> Response:
        wanted = management.status_body(await self._body(request))
        async with self.store.lock:
            record = self._own(wanted.stream_id, receiver)
            changed = management.set_status(record, wanted.status, wanted.reason, time.time())
            await self.store.put(changed)
        return JSONResponse(management.status_of(changed), headers=NO_STORE)

    # -- subjects (§8.1.3) and verification (§8.1.4) ------------------------------------------

    async def _subject_body(self, request: Request) -> SubjectBody:
        try:
            body = SubjectBody.model_validate(management.body_object(await self._body(request)))
            parse_subject(body.subject)
        except ValidationError as exc:
            raise bad_request(describe_validation_error(exc)) from None
        except InvalidRequest as exc:
            raise bad_request(exc.description) from None
        return body

    async def add_subject(self, request: Request, receiver: ReceiverClient) -> Response:
        body = await self._subject_body(request)
        async with self.store.lock:
            record = self._own(body.stream_id, receiver)
            await self.store.put(matching.add_subject(record, dict(body.subject), time.time()))
        return Response(status_code=200, headers=NO_STORE)

    async def remove_subject(self, request: Request, receiver: ReceiverClient) -> Response:
        body = await self._subject_body(request)
        async with self.store.lock:
            record = self._own(body.stream_id, receiver)
            await self.store.put(
                matching.remove_subject(record, dict(body.subject), time.time()))
        return Response(status_code=204, headers=NO_STORE)

    async def verify(self, request: Request, receiver: ReceiverClient) -> Response:
        try:
            body = VerificationBody.model_validate(
                management.body_object(await self._body(request)))
        except ValidationError as exc:
            raise bad_request(describe_validation_error(exc)) from None
        record = self._own(body.stream_id, receiver)
        self.delivery.verify(record, body.state)
        return Response(status_code=204, headers=NO_STORE)

    async def poll(self, request: Request, receiver: ReceiverClient) -> Response:
        """RFC 8936 poll endpoint of one stream (the stream's `delivery.endpoint_url`)."""
        stream_id = request.path_params["stream_id"]
        record = self._own(stream_id, receiver)
        answer = await self.delivery.poll(record, await self._body(request),
                                          request.is_disconnected)
        return JSONResponse(answer, headers=NO_STORE)

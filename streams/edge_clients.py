"""The edge as a receiver of other transmitters: an RFC 8936 poll client and an SSF 1.0
stream management client (for identity providers that offer poll delivery or want their
receivers to configure streams).

The poll client acknowledges a SET only once it is durably written to the security-events
topic (the same `DurableSink` as the push endpoint); a SET the codec rejects is reported in
`setErrs` with its RFC 8935 code; a SET that could not be written is neither acknowledged nor
reported, so the transmitter offers it again.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx

from caep.codec import SetVerifier
from caep.errors import SetError
from caep.evaluation import security_events
from caep.jwks import KeyRefresher
from caep.ssf.models import PollRequest, PollResponse, TransmitterMetadata
from caep.ssf.verification import VerificationTracker, configuration_url
from streams.edge_sink import DurableSink, Saturated, Unavailable


class TransmitterError(Exception):
    """The transmitter answered something this client cannot use."""


@dataclass
class PollOutcome:
    """What one poll round did with the SETs it received."""

    written: list[str] = field(default_factory=list)
    rejected: dict[str, dict[str, str]] = field(default_factory=dict)
    not_written: list[str] = field(default_factory=list)
    more_available: bool = False


class PollClient:
    """Pulls SETs from a transmitter's poll endpoint into the security-events topic."""

    def __init__(self, endpoint_url: str, *, token: str, verifier: SetVerifier,
                 sink: DurableSink, topic: str, max_events: int = 100,
                 tracker: VerificationTracker | None = None,
                 http: httpx.AsyncClient | None = None) -> None:
        self.endpoint_url = endpoint_url
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.verifier = verifier
        self.sink = sink
        self.topic = topic
        self.max_events = max_events
        self.tracker = tracker or VerificationTracker()
        self.http = http or httpx.AsyncClient(timeout=60)
        self.refresher = KeyRefresher()
        self._acks: list[str] = []
        self._errors: dict[str, dict[str, str]] = {}

    async def poll_once(self, *, return_immediately: bool = True) -> PollOutcome:
        """Send pending acks and setErrs, receive SETs, write and judge each."""
        request = PollRequest.model_validate({
            "maxEvents": self.max_events, "returnImmediately": return_immediately,
            "ack": self._acks, "setErrs": self._errors})
        answer = await self.http.post(self.endpoint_url, json=request.to_wire(),
                                      headers=self.headers)
        if answer.status_code != 200:
            raise TransmitterError(f"poll answered {answer.status_code}: {answer.text[:200]}")
        self._acks, self._errors = [], {}  # delivered with this request
        response = PollResponse.model_validate(answer.json())
        outcome = PollOutcome(more_available=response.more_available)
        for jti, token in response.sets.items():
            await self._receive(jti, token, outcome)
        self._acks = list(outcome.written)
        self._errors = dict(outcome.rejected)
        return outcome

    async def flush(self) -> None:
        """Acknowledge what the last round wrote without asking for more (maxEvents 0)."""
        if self._acks or self._errors:
            request = PollRequest.model_validate({"maxEvents": 0, "returnImmediately": True,
                                                  "ack": self._acks, "setErrs": self._errors})
            answer = await self.http.post(self.endpoint_url, json=request.to_wire(),
                                          headers=self.headers)
            if answer.status_code != 200:
                raise TransmitterError(f"ack answered {answer.status_code}")
            self._acks, self._errors = [], {}

    async def _receive(self, jti: str, token: str, outcome: PollOutcome) -> None:
        try:
            verified = await self.refresher.averify(self.verifier, token)
        except SetError as error:
            outcome.rejected[jti] = error.to_dict()
            return
        if verified.jti != jti:
            outcome.rejected[jti] = {"err": "invalid_request",
                                     "description": "the SET's jti is not its key"}
            return
        state_error = self.tracker.check(verified.claims)
        if state_error is not None:
            outcome.rejected[jti] = {"err": state_error,
                                     "description": "verification state was not requested"}
            return
        key = security_events(verified)[0].key.encode()
        try:
            await self.sink.write(self.topic, key, token.encode())
        except (Saturated, Unavailable):
            outcome.not_written.append(jti)
            return
        self.tracker.confirm(verified.claims)
        outcome.written.append(jti)


class StreamClient:
    """SSF 1.0 stream management against one transmitter, as one receiver."""

    def __init__(self, issuer: str, *, token: str,
                 http: httpx.AsyncClient | None = None,
                 tracker: VerificationTracker | None = None) -> None:
        self.issuer = issuer.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.http = http or httpx.AsyncClient(timeout=30)
        self.tracker = tracker or VerificationTracker()
        self.metadata: TransmitterMetadata | None = None

    async def discover(self) -> TransmitterMetadata:
        answer = await self.http.get(configuration_url(self.issuer))
        if answer.status_code != 200:
            raise TransmitterError(f"discovery answered {answer.status_code}")
        metadata = TransmitterMetadata.model_validate(answer.json())
        if metadata.issuer.rstrip("/") != self.issuer:
            raise TransmitterError(f"metadata names issuer {metadata.issuer!r}, "
                                   f"not {self.issuer!r}")
        self.metadata = metadata
        return metadata

    def _endpoint(self, name: str) -> str:
        if self.metadata is None:
            raise TransmitterError("call discover() first")
        url = getattr(self.metadata, name)
        if not url:
            raise TransmitterError(f"the transmitter offers no {name}")
        return str(url)

    def _checked(self, answer: httpx.Response, *expected: int) -> Any:
        if answer.status_code not in expected:
            raise TransmitterError(f"{answer.request.method} {answer.request.url.path} "
                                   f"answered {answer.status_code}: {answer.text[:200]}")
        if not answer.content:
            return None
        document = answer.json()
        # SSF §8.1.1.1-4: a receiver MUST check that each stream's `iss` is the issuer it
        # discovered (a listing too: every stream in it)
        for stream in document if isinstance(document, list) else [document]:
            if isinstance(stream, dict) and "iss" in stream and (
                    not isinstance(stream["iss"], str)
                    or stream["iss"].rstrip("/") != self.issuer):
                raise TransmitterError(f"stream iss {stream['iss']!r} is not {self.issuer!r}")
        return document

    async def create_stream(self, *, delivery: dict[str, Any] | None = None,
                            events_requested: list[str] | None = None,
                            description: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if delivery is not None:
            body["delivery"] = delivery
        if events_requested is not None:
            body["events_requested"] = events_requested
        if description is not None:
            body["description"] = description
        created: dict[str, Any] = self._checked(await self.http.post(
            self._endpoint("configuration_endpoint"), json=body, headers=self.headers), 201)
        return created

    async def list_streams(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self._checked(await self.http.get(
            self._endpoint("configuration_endpoint"), headers=self.headers), 200)
        return listed

    async def get_stream(self, stream_id: str) -> dict[str, Any]:
        got: dict[str, Any] = self._checked(await self.http.get(
            self._endpoint("configuration_endpoint"), params={"stream_id": stream_id},
            headers=self.headers), 200)
        return got

    async def update_stream(self, stream_id: str, **changes: Any) -> dict[str, Any]:
        updated: dict[str, Any] = self._checked(await self.http.patch(
            self._endpoint("configuration_endpoint"), json={"stream_id": stream_id, **changes},
            headers=self.headers), 200)
        return updated

    async def delete_stream(self, stream_id: str) -> None:
        self._checked(await self.http.delete(
            self._endpoint("configuration_endpoint"), params={"stream_id": stream_id},
            headers=self.headers), 204)

    async def set_status(self, stream_id: str, status: str,
                         reason: str | None = None) -> dict[str, Any]:
        body = {"stream_id": stream_id, "status": status}
        if reason is not None:
            body["reason"] = reason
        result: dict[str, Any] = self._checked(await self.http.post(
            self._endpoint("status_endpoint"), json=body, headers=self.headers), 200)
        return result

    async def add_subject(self, stream_id: str, subject: dict[str, Any],
                          verified: bool = True) -> None:
        self._checked(await self.http.post(
            self._endpoint("add_subject_endpoint"),
            json={"stream_id": stream_id, "subject": subject, "verified": verified},
            headers=self.headers), 200)

    async def remove_subject(self, stream_id: str, subject: dict[str, Any]) -> None:
        self._checked(await self.http.post(
            self._endpoint("remove_subject_endpoint"),
            json={"stream_id": stream_id, "subject": subject}, headers=self.headers), 204)

    async def request_verification(self, stream_id: str) -> str:
        """Ask for a verification SET; its `state` is returned and expected by the tracker."""
        state = secrets.token_urlsafe(16)
        self.tracker.expect(stream_id, state)
        self._checked(await self.http.post(
            self._endpoint("verification_endpoint"),
            json={"stream_id": stream_id, "state": state}, headers=self.headers), 204)
        return state

    async def aclose(self) -> None:
        await self.http.aclose()

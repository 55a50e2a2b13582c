"""Upstream transmitters the edge polls: for each `[[upstream]]` of the edge file, configure a
poll stream there (reusing the one this edge created before, found by its description) and
drain it into the security-events topic with the `PollClient`, acknowledging only what the
broker acknowledged. Failures are retried with backoff; the edge keeps serving meanwhile."""

from __future__ import annotations

import asyncio
import logging
import os

import httpx

from caep.codec import SetVerifier
from caep.ssf.auth import Upstream
from caep.ssf.models import POLL
from caep.ssf.verification import VerificationTracker
from streams.edge_clients import PollClient, StreamClient, TransmitterError
from streams.edge_sink import DurableSink

log = logging.getLogger("caep.edge.upstream")
MAX_BACKOFF = 30.0


class UpstreamPoller:
    """One upstream: stream set-up, then long polls until cancelled."""

    def __init__(self, upstream: Upstream, *, verifier: SetVerifier, sink: DurableSink,
                 topic: str, backoff: float = 1.0,
                 tracker: VerificationTracker | None = None) -> None:
        self.upstream = upstream
        self.tracker = tracker or VerificationTracker()
        self.verifier = verifier
        self.sink = sink
        self.topic = topic
        self.backoff = backoff
        self.stream_id: str | None = None
        self.written = 0
        self.rejected = 0

    def _token(self) -> str:
        token = os.environ.get(self.upstream.token_env)
        if not token:
            raise TransmitterError(f"environment variable {self.upstream.token_env} is empty")
        return token

    async def _stream(self, client: StreamClient) -> str:
        await client.discover()
        for stream in await client.list_streams():
            if (stream.get("description") == self.upstream.description
                    and stream.get("delivery", {}).get("method") == POLL):
                return str(stream["stream_id"])
        events = (list(self.upstream.events_requested)
                  if self.upstream.events_requested is not None else None)
        created = await client.create_stream(delivery={"method": POLL},
                                             events_requested=events,
                                             description=self.upstream.description)
        return str(created["stream_id"])

    async def run(self) -> None:
        delay = self.backoff
        async with httpx.AsyncClient(timeout=60) as http:
            while True:
                try:
                    token = self._token()
                    client = StreamClient(self.upstream.issuer, token=token, http=http,
                                          tracker=self.tracker)
                    self.stream_id = await self._stream(client)
                    stream = await client.get_stream(self.stream_id)
                    poller = PollClient(stream["delivery"]["endpoint_url"], token=token,
                                        verifier=self.verifier, sink=self.sink,
                                        topic=self.topic, max_events=self.upstream.max_events,
                                        tracker=client.tracker, http=http)
                    log.info("polling %s stream %s", self.upstream.issuer, self.stream_id)
                    while True:
                        outcome = await poller.poll_once(return_immediately=False)
                        self.written += len(outcome.written)
                        self.rejected += len(outcome.rejected)
                        if outcome.not_written:
                            await asyncio.sleep(delay)  # the broker is struggling: slow down
                        delay = self.backoff
                except (TransmitterError, httpx.HTTPError, KeyError, ValueError) as exc:
                    log.warning("upstream %s: %s; retrying in %.1f s", self.upstream.issuer,
                                exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF)

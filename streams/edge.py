"""`caep edge`: the Shared Signals Framework over HTTP, in front of the engine's topics.

    identity providers --POST /ssf/push (RFC 8935)--> caep.security-events --> engine
    engine --> caep.decisions --> signed CAEP SETs --> relying parties' streams
                                  (push RFC 8935 / poll RFC 8936, SSF 1.0 stream management)

One process holds the pieces together: the durable producer of the push endpoint, the
stream store (a compacted topic), the decision consumer and the per-stream delivery. The
pure logic they use is in `caep/ssf/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from caep.codec import SetVerifier
from caep.errors import ConfigError
from caep.settings import Settings
from caep.ssf.auth import EdgeClients
from caep.ssf.verification import VerificationTracker
from caep.trust import TrustStore
from streams.edge_delivery import Delivery
from streams.edge_keys import SigningKeys, load_keys
from streams.edge_management import Management
from streams.edge_push import PushEndpoint
from streams.edge_sink import DurableSink
from streams.edge_store import StreamStore
from streams.edge_upstream import UpstreamPoller
from streams.topics import ensure_topics

log = logging.getLogger("caep.edge")


def key_file(settings: Settings) -> Path:
    if settings.edge_key_file is not None:
        return settings.edge_key_file
    base = settings.data_dir or Path(tempfile.gettempdir()) / "caep-engine" / settings.app_id
    return base / "edge-keys.json"


def issuer_of(settings: Settings) -> str:
    if settings.edge_issuer:
        return settings.edge_issuer.rstrip("/")
    scheme = "https" if tls_files(settings) else "http"
    return f"{scheme}://{settings.edge_host}:{settings.edge_port}"


def tls_files(settings: Settings) -> tuple[Path, Path] | None:
    """(certificate, key) when the edge serves HTTPS itself; both or neither must be set."""
    cert, key = settings.edge_tls_cert_file, settings.edge_tls_key_file
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("CAEP_EDGE_TLS_CERT_FILE and CAEP_EDGE_TLS_KEY_FILE go together")
    for path in (cert, key):
        if not path.is_file():
            raise ConfigError(f"TLS file {path} does not exist")
    return cert, key


class Edge:
    """Everything `caep edge` runs, as one ASGI application (`edge.app`)."""

    def __init__(self, settings: Settings, bootstrap: str, *, embedded: bool) -> None:
        if settings.trust_file is None:
            raise ConfigError("no trust file: pass --trust FILE or set CAEP_TRUST_FILE")
        self.settings = settings
        self.bootstrap = bootstrap
        self.issuer = issuer_of(settings)
        self.clients = (EdgeClients.from_file(settings.edge_config_file)
                        if settings.edge_config_file is not None else EdgeClients())
        if not (self.clients.transmitter or self.clients.receiver):
            log.warning("no transmitter or receiver in the edge file: every push and "
                        "management request will be refused (CAEP_EDGE_CONFIG_FILE)")
        self.keys: SigningKeys = load_keys(key_file(settings))
        verifier = SetVerifier(TrustStore.from_file(settings.trust_file),
                               max_bytes=settings.max_set_bytes,
                               iat_skew=settings.iat_skew_seconds)
        idempotence = settings.idempotence_for(embedded)
        self.sink = DurableSink(bootstrap, idempotence=idempotence,
                                max_in_flight=settings.edge_max_in_flight,
                                timeout=settings.edge_produce_timeout_seconds,
                                partitions=settings.topic_partitions,
                                replication=settings.topic_replication_factor,
                                linger_ms=settings.edge_linger_ms)
        # the verification states this edge asked transmitters for (by a StreamClient given
        # this tracker): checked wherever the verification SET arrives, pushed or polled
        self.verification = VerificationTracker()
        self.push = PushEndpoint(verifier=verifier, clients=self.clients, sink=self.sink,
                                 topic=settings.topic_security_events,
                                 max_bytes=settings.max_set_bytes,
                                 retry_after=settings.edge_retry_after_seconds,
                                 tracker=self.verification)
        self.store = StreamStore(bootstrap, settings.topic_ssf_streams,
                                 partitions=settings.topic_partitions,
                                 replication=settings.topic_replication_factor,
                                 idempotence=idempotence)
        self.delivery = Delivery(settings, bootstrap, store=self.store, keys=self.keys,
                                 clients=self.clients, issuer=self.issuer)
        self.management = Management(issuer=self.issuer, clients=self.clients,
                                     store=self.store, delivery=self.delivery, keys=self.keys)
        self.upstreams = [UpstreamPoller(upstream, verifier=verifier, sink=self.sink,
                                         topic=settings.topic_security_events,
                                         tracker=self.verification)
                          for upstream in self.clients.upstream]
        self.app = Starlette(routes=self.routes(), lifespan=self._lifespan)

    def routes(self) -> list[BaseRoute]:
        m = self.management

        def read(handler: Any) -> Any:
            return m.authorized(handler, manage=False)

        def manage(handler: Any) -> Any:
            return m.authorized(handler, manage=True)

        api = [
            Route("/ssf/push", self.push.handle, methods=["POST"]),
            Route("/ssf/jwks.json", m.jwks, methods=["GET"]),
            Route("/ssf/stream", read(m.read), methods=["GET"]),
            Route("/ssf/stream", manage(m.create), methods=["POST"]),
            Route("/ssf/stream", manage(m.update), methods=["PATCH"]),
            Route("/ssf/stream", manage(m.replace), methods=["PUT"]),
            Route("/ssf/stream", manage(m.delete), methods=["DELETE"]),
            Route("/ssf/status", read(m.read_status), methods=["GET"]),
            Route("/ssf/status", manage(m.update_status), methods=["POST"]),
            Route("/ssf/subjects:add", manage(m.add_subject), methods=["POST"]),
            Route("/ssf/subjects:remove", manage(m.remove_subject), methods=["POST"]),
            Route("/ssf/verify", manage(m.verify), methods=["POST"]),
            Route("/ssf/poll/{stream_id}", read(m.poll), methods=["POST"]),
        ]
        discovery = Route("/.well-known/ssf-configuration", m.configuration, methods=["GET"])
        path = urlsplit(self.issuer).path.rstrip("/")
        if not path:
            return [discovery, *api]
        # SSF §7.2: an issuer with a path publishes its metadata at the well-known path with
        # the issuer's path appended, and every endpoint it names lies under that path; both
        # are served here as well as at the root (a proxy may strip the path, or not)
        return [discovery,
                Route(f"/.well-known/ssf-configuration{path}", m.configuration,
                      methods=["GET"]),
                *api, Mount(path, routes=api)]

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Any) -> AsyncIterator[None]:
        settings = self.settings
        await ensure_topics(self.bootstrap, [settings.topic_security_events],
                            settings.topic_partitions, settings.topic_replication_factor)
        await self.sink.start()
        try:
            await self.store.start()
            try:
                await self.delivery.start()
                polling = [asyncio.create_task(u.run()) for u in self.upstreams]
                try:
                    yield
                finally:
                    for task in polling:
                        task.cancel()
                    await asyncio.gather(*polling, return_exceptions=True)
                    await self.delivery.stop()
            finally:
                await self.store.stop()
        finally:
            await self.sink.stop()


def run_edge(settings: Settings, bootstrap: str, *, embedded: bool) -> None:
    """Block until SIGINT/SIGTERM; prints `caep: edge ready on URL` once it listens."""
    from streams.broker import ensure_port_free
    from streams.edge_server import serve_forever

    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    edge = Edge(settings, bootstrap, embedded=embedded)
    if settings.edge_host == "127.0.0.1":
        ensure_port_free(settings.edge_port)  # one clear line instead of uvicorn's log
    if not serve_forever(edge.app, settings.edge_host, settings.edge_port,
                         tls=tls_files(settings)):
        raise ConfigError(f"the edge could not start on {settings.edge_host}:"
                          f"{settings.edge_port} (see the log above)")

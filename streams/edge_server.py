"""Running an ASGI app under uvicorn: in the foreground for `caep edge`, or in a thread for
tests and embedding (a real server on a real socket either way)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

READY_LINE = "caep: edge ready"


class _AnnouncingServer(uvicorn.Server):
    """Says on stdout when the socket listens, so a supervisor (or test) can wait for it."""

    def __init__(self, config: uvicorn.Config, announce: bool) -> None:
        super().__init__(config)
        self.announce = announce

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM shut down gracefully and the process exits 0 (uvicorn's own handler
        re-raises the signal afterwards, which would end the process by that signal)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(_signum: int, _frame: Any) -> None:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

        previous = {signum: signal.signal(signum, handle)
                    for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.announce and self.started:
            scheme = "https" if self.config.ssl_certfile else "http"
            print(f"{READY_LINE} on {scheme}://{self.config.host}:{self.config.port}",
                  flush=True, file=sys.stdout)


TlsFiles = tuple[Path, Path] | None
"""(PEM certificate chain, PEM private key) to serve HTTPS, or None for plain HTTP."""


def _config(app: Any, host: str, port: int, tls: TlsFiles) -> uvicorn.Config:
    cert, key = tls if tls else (None, None)
    return uvicorn.Config(app, host=host, port=port, lifespan="on", log_level="warning",
                          access_log=False, timeout_graceful_shutdown=5,
                          ssl_certfile=cert, ssl_keyfile=key)


def serve_forever(app: Any, host: str, port: int, tls: TlsFiles = None) -> bool:
    """Block until SIGINT/SIGTERM; False when the server could not start (e.g. port taken)."""
    server = _AnnouncingServer(_config(app, host, port, tls), announce=True)
    server.run()
    return server.started


@contextlib.contextmanager
def serving(app: Any, host: str, port: int, startup_timeout: float = 30.0,
            tls: TlsFiles = None) -> Iterator[None]:
    """Run the app in a thread of its own (own event loop) for the duration of the block."""
    server = _AnnouncingServer(_config(app, host, port, tls), announce=False)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve())
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"edge-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(10)
            raise RuntimeError(f"server on {host}:{port} did not start: {failure!r}")
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(30)

"""Running one engine worker process: topics ensured, faust app started, readiness announced."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from faust.worker import Worker

from caep.settings import Settings
from streams.app import create_app
from streams.logs import logging_config
from streams.topics import compacted_topics, engine_topics, ensure_topics

READY_LINE = "caep: worker ready"
WEB_LINE = "caep: web "  # followed by the base URL of the dashboard and /metrics


class EngineWorker(Worker):
    """A faust worker that says on stdout when it holds its partitions and can process."""

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        for address in _addresses(self.app):
            print(f"{WEB_LINE}http://{address[0]}:{address[1]}", flush=True, file=sys.stdout)
        print(READY_LINE, flush=True, file=sys.stdout)


def _addresses(app: Any) -> list[tuple[str, int]]:
    """Where the web server listens (port 0 in the settings: the one the system picked)."""
    runner = getattr(app.web, "_runner", None)
    return [(str(a[0]), int(a[1])) for a in getattr(runner, "addresses", [])
            if isinstance(a, tuple) and len(a) >= 2]


def run_worker(settings: Settings, bootstrap: str, *, embedded: bool) -> None:
    """Block until SIGINT/SIGTERM; faust handles the signals and leaves the group cleanly."""
    app = create_app(settings, bootstrap, idempotence=settings.idempotence_for(embedded))
    asyncio.run(ensure_topics(bootstrap, engine_topics(settings), settings.topic_partitions,
                              settings.topic_replication_factor, compacted_topics(settings)))
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = EngineWorker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False,
                          logging_config=logging_config(settings.log_level, settings.log_format))
    worker.execute_from_commandline()

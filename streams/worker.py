"""Running one engine worker process: topics ensured, faust app started, readiness announced."""

from __future__ import annotations

import asyncio
import sys

from faust.worker import Worker

from caep.settings import Settings
from streams.app import create_app
from streams.topics import compacted_topics, engine_topics, ensure_topics

READY_LINE = "caep: worker ready"


class EngineWorker(Worker):
    """A faust worker that says on stdout when it holds its partitions and can process."""

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        print(READY_LINE, flush=True, file=sys.stdout)


def run_worker(settings: Settings, bootstrap: str, *, embedded: bool) -> None:
    """Block until SIGINT/SIGTERM; faust handles the signals and leaves the group cleanly."""
    app = create_app(settings, bootstrap, idempotence=settings.idempotence_for(embedded))
    asyncio.run(ensure_topics(bootstrap, engine_topics(settings), settings.topic_partitions,
                              settings.topic_replication_factor, compacted_topics(settings)))
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = EngineWorker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()

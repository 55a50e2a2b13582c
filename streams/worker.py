"""Running one engine worker process: topics ensured, faust app started, readiness announced."""

from __future__ import annotations

import asyncio
import logging
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
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

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """No terminal spinner. At WARNING and above faust would spin one for every log record
        and lower the root logger to DEBUG to feed it, so every debug line of faust and aiokafka
        (several per record sent) was built and handled: a third of a worker's CPU."""
        self.spinner = None
        super().on_setup_root_logger(logger, level)

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
    """Block until SIGINT/SIGTERM; faust handles the signals and stops cleanly (leaving the
    group unless `leave_group_for` says not to)."""
    app = create_app(settings, bootstrap, idempotence=settings.idempotence_for(embedded),
                     leave_group=settings.leave_group_for(embedded))
    asyncio.run(ensure_topics(bootstrap, engine_topics(settings), settings.topic_partitions,
                              settings.topic_replication_factor, compacted_topics(settings)))
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = EngineWorker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False,
                          logging_config=logging_config(settings.log_level, settings.log_format))
    worker.execute_from_commandline()


@dataclass
class WorkerProcess:
    """A worker started as a process of its own (tests, benchmarks), its output kept."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    output: list[str] = field(default_factory=list)
    web: str | None = None  # base URL of the worker's dashboard and /metrics, once ready

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Seconds until the worker printed its readiness line (observed, not slept for);
        raises with its last output if it never does."""
        started = time.monotonic()
        while (line := self.next_line(started + timeout)) is not None:
            if line.startswith(WEB_LINE):
                self.web = line[len(WEB_LINE):].strip()
            if READY_LINE in line:
                return time.monotonic() - started
        raise RuntimeError("worker never became ready:\n" + "".join(self.output[-60:]))

    def next_line(self, until: float) -> str | None:
        """The worker's next output line; None once `until` (monotonic) passes or it exited."""
        while time.monotonic() < until:
            try:
                return self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    return None
        return None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (faust stops cleanly), SIGKILL after `timeout`; the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def spawn_worker(environment: Mapping[str, str], cwd: Path | None = None) -> WorkerProcess:
    """`caep worker` as a child process with `environment`, its output read on a thread."""
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"], cwd=cwd, env=dict(environment),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    worker = WorkerProcess(process)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            worker.output.append(line)
            worker.lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return worker

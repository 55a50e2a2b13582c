"""Release profile (`make chaos`): crash recovery of the evaluation pipeline.

Kept out of `make test` while issue 5's takeover defect is open: it fails in about one run in
six, and it must not be hidden by retrying, skipping or narrowing it.
"""

from __future__ import annotations

import random
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import Idp, WorkerProcess, fresh_topics, start_worker, stop_worker
from tests.test_scenario import decided, publish_scenario, scenario, wait_for


@pytest.mark.parametrize("signum", [signal.SIGKILL])
def test_killing_a_worker_mid_scenario_loses_no_decision(bootstrap: str, idp: Idp,
                                                          signum: int, tmp_path: Path) -> None:
    """A worker killed mid-scenario: the survivor takes over its partitions and decides all.

    Known open defect (issue 5), which this test reproduces in about one run in six: when the
    killed worker had not committed an offset on one of its input partitions, the survivor
    skips what was published there between the kill and the takeover.
    """
    topics = fresh_topics(bootstrap)
    app_id = f"caep-kill-{uuid.uuid4().hex[:8]}"
    workers: list[WorkerProcess] = [
        start_worker(bootstrap, idp.trust_file, topics, CAEP_APP_ID=app_id) for _ in range(2)]
    try:
        for worker in workers:
            worker.wait_ready()
        records, expected = scenario(idp, time.time(), elevation_seconds=30.0)
        half = len(records) // 2
        rng = random.Random(11)
        publish_scenario(bootstrap, topics, records[:half], rng)
        workers[0].process.send_signal(signum)
        workers[0].process.wait(10)
        publish_scenario(bootstrap, topics, records[half:], rng)
        got = wait_for(bootstrap, topics.decisions, expected, timeout=120)
        for name, worker in (("killed", workers[0]), ("survivor", workers[1])):
            (tmp_path / f"{name}.log").write_text("".join(worker.output), encoding="utf-8")
        membership = [line for line in workers[1].output if any(
            mark in line for mark in ("Joined group", "newly assigned", "deadline index",
                                      "Revoking", "Recovery complete"))]
        assert expected <= decided(got), (
            f"lost {expected - decided(got)}; worker logs in {tmp_path}; survivor's group "
            "membership:\n" + "".join(membership[-20:]))
    finally:
        for worker in workers:
            stop_worker(worker)

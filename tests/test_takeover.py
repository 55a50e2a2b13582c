"""Workers die (SIGKILL); the survivor takes their partitions over and loses no decision.

faust drops records it fetched for partitions that were not active yet during a rebalance and
relies on seeking back to the committed offsets afterwards; a partition never committed to was
left where the fetch had got to, so what waited there at takeover was skipped (issue 5, fixed
in streams/transport.py). `make chaos` runs this module ten times over.
"""

from __future__ import annotations

import random
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Idp,
    WorkerProcess,
    collect,
    fresh_topics,
    produce,
    start_worker,
    stop_worker,
)
from tests.forensics import dump_topics
from tests.test_scenario import decided, publish_scenario, scenario, wait_for

USERS = 16  # keys over all four partitions of every topic, so the dead worker's get some


def publish_revocations(bootstrap: str, idp: Idp, topic: str, session: str) -> set[str]:
    jtis: set[str] = set()
    for index in range(USERS):
        user = f"user{index}"
        claims = idp.claims({"format": "complex", "user": {"format": "opaque", "id": user},
                             "session": {"format": "opaque", "id": f"{user}-{session}"}})
        jtis.add(claims["jti"])
        produce(bootstrap, topic, [idp.sign(claims).encode()], key=user.encode())
    return jtis


def decided_all(jtis: set[str]) -> Callable[[list[dict[str, Any]]], bool]:
    def until(records: list[dict[str, Any]]) -> bool:
        return jtis <= {r["value"].get("source_jti") for r in records}
    return until


def test_partitions_the_dead_worker_never_committed_are_read_whole(bootstrap: str, idp: Idp,
                                                                   tmp_path: Path) -> None:
    """On failure both workers' logs and every topic's records and offsets are left in
    `tmp_path`."""
    topics = fresh_topics(bootstrap)
    app_id = f"caep-takeover-{uuid.uuid4().hex[:8]}"
    survivor = start_worker(bootstrap, idp.trust_file, topics, CAEP_APP_ID=app_id)
    doomed = start_worker(bootstrap, idp.trust_file, topics, CAEP_APP_ID=app_id)
    try:
        survivor.wait_ready()
        doomed.wait_ready()
        first = publish_revocations(bootstrap, idp, topics.security_events, "a")
        collect(bootstrap, topics.decisions, decided_all(first), timeout=60.0)
        doomed.process.send_signal(signal.SIGKILL)  # within faust's 2.8 s commit interval
        doomed.process.wait(10)
        second = publish_revocations(bootstrap, idp, topics.security_events, "b")
        records = collect(bootstrap, topics.decisions, decided_all(second), timeout=60.0)
        missing = second - {r["value"].get("source_jti") for r in records}
        if missing:
            dump_topics(bootstrap, [*topics.names(), f"{app_id}-subjects-changelog",
                                    f"{app_id}-taken-in-changelog"], app_id,
                        tmp_path / "topics.txt")
            for name, worker in (("killed", doomed), ("survivor", survivor)):
                (tmp_path / f"{name}.log").write_text("".join(worker.output), encoding="utf-8")
        assert not missing, (
            f"{len(missing)} of {USERS} revocations never decided after the takeover ({missing}); "
            f"logs and topics in {tmp_path}; survivor said:\n" + "".join(survivor.output[-25:]))
    finally:
        stop_worker(doomed)
        stop_worker(survivor)


@pytest.mark.parametrize("signum", [signal.SIGKILL])
def test_killing_a_worker_mid_scenario_loses_no_decision(bootstrap: str, idp: Idp,
                                                          signum: int, tmp_path: Path) -> None:
    """A worker killed mid-scenario: the survivor takes over its partitions and decides all.

    On failure the worker logs and every topic's records and offsets are left in `tmp_path`.
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
        (tmp_path / "kill.txt").write_text(f"killed at {time.time()}\n", encoding="utf-8")
        workers[0].process.send_signal(signum)
        workers[0].process.wait(10)
        publish_scenario(bootstrap, topics, records[half:], rng)
        got = wait_for(bootstrap, topics.decisions, expected, timeout=120)
        if not expected <= decided(got):
            dump_topics(bootstrap, [*topics.names(), f"{app_id}-subjects-changelog"], app_id,
                        tmp_path / "topics.txt")
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

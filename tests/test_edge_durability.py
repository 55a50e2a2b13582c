"""Issue 10, item 6, durability at the edge: with the broker stopped the push endpoint answers
503 (429 once saturated) to every push, never 202; once the broker is back, transmitters that
retry as RFC 8935 asks (after `Retry-After`) get 202 for every SET, each SET is on
`caep.security-events` exactly once, and a real engine worker decides on every one of them.

The broker is the embedded Tansu, which keeps everything in memory: the restarted broker is
empty. The edge re-creates its topic itself (after a failure it checks the topic before it takes
another record); the worker is started on the new broker as an operator would start the engine
on a fresh cluster (it creates the engine's topics when it starts)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from streams.broker import EmbeddedBroker
from streams.kafka_io import watch
from tests.conftest import (
    SESSION_REVOKED,
    Idp,
    Topics,
    collect,
    observe,
    start_worker,
    stop_worker,
)
from tests.edge_support import (
    PUSH_TOKEN,
    bearer,
    broker_restarted,
    edge_settings,
    running_edge,
)

SETS = 20
RETRY_AFTER = 1  # seconds: the edge's Retry-After, kept small for the test's duration
GIVE_UP_AFTER = 40.0  # seconds a transmitter keeps retrying one SET
REFUSALS = {503, 429}  # the answers a push may get while the broker is away


@dataclass(frozen=True)
class Attempt:
    sent: float
    answered: float
    status: int
    retry_after: str | None


def transmit(url: str, token: str, attempts: list[Attempt], give_up: float) -> None:
    """One SET pushed as an RFC 8935 transmitter does: again after each 429/503, once its
    Retry-After has passed, until the edge accepts it (202) or answers anything else."""
    headers = {"Content-Type": "application/secevent+jwt", "Accept": "application/json",
               **bearer(PUSH_TOKEN)}
    with httpx.Client(timeout=30) as http:
        while True:
            sent = time.monotonic()
            answer = http.post(f"{url}/ssf/push", content=token, headers=headers)
            attempts.append(Attempt(sent, time.monotonic(), answer.status_code,
                                    answer.headers.get("retry-after")))
            if answer.status_code not in REFUSALS or time.monotonic() > give_up:
                return
            time.sleep(float(answer.headers["retry-after"]))


def topic_contents(bootstrap: str, topic: str, expected: int, quiet: float = 2.0,
                   within: float = 20.0) -> list[str]:
    """Every record value of the topic: read until `expected` arrived and then nothing more for
    `quiet` seconds (Tansu's end offsets count batches, not records, so they cannot tell)."""

    async def run() -> list[str]:
        values: list[str] = []
        async for record in watch(bootstrap, topic, idle_timeout=quiet):
            values.append(record["value"])
            if len(values) > expected:  # a copy: no need to wait for more
                break
        return values

    return asyncio.run(asyncio.wait_for(run(), within))


def test_broker_restarted_retried_pushes_all_written_once_and_decided(
    idp: Idp, tmp_path: Path
) -> None:
    s = uuid.uuid4().hex[:8]
    topics = Topics(f"d{s}.security-events", f"d{s}.decisions", f"d{s}.dead-letter",
                    f"d{s}.session-activity", f"d{s}.engine-input", f"d{s}.flags",
                    f"d{s}.device-index")
    subjects = [{"format": "complex",
                 "user": {"format": "email", "email": f"durable{i}-{s}@example.com"},
                 "session": {"format": "opaque", "id": f"sess-{s}-{i}"},
                 "tenant": {"format": "opaque", "id": "acme"}} for i in range(SETS)]
    claims = [idp.claims(subject, SESSION_REVOKED) for subject in subjects]
    tokens = [idp.sign(c) for c in claims]
    jti_of = {token: c["jti"] for token, c in zip(tokens, claims, strict=True)}
    first = EmbeddedBroker().start()
    port = first.port
    try:
        settings = edge_settings(first.bootstrap, idp.trust_file, tmp_path,
                                 topic_security_events=topics.security_events,
                                 topic_decisions=topics.decisions, topic_partitions=4,
                                 edge_produce_timeout_seconds=1.0,
                                 edge_retry_after_seconds=RETRY_AFTER)
        with running_edge(settings) as edge:
            warm = idp.sign(idp.claims({"format": "email", "email": f"warm-{s}@example.com"}))
            assert httpx.post(f"{edge.url}/ssf/push", content=warm, timeout=30, headers={
                "Content-Type": "application/secevent+jwt", **bearer(PUSH_TOKEN)}
            ).status_code == 202

            first.stop(timeout=0.2)  # Tansu lingers ~5 s on SIGTERM with clients connected
            started = time.monotonic()
            attempts: list[list[Attempt]] = [[] for _ in tokens]
            with concurrent.futures.ThreadPoolExecutor(SETS) as pool:
                pushing = [pool.submit(transmit, edge.url, token, mine,
                                       started + GIVE_UP_AFTER)
                           for token, mine in zip(tokens, attempts, strict=True)]
                # each SET refused twice: once after waiting for the broker, once retried
                observe(lambda: all(len(mine) >= 2 for mine in attempts), 15,
                        "two answers to every SET")
                # what the producer was handed before the first refusal it gave up too (its
                # delivery timeout is the produce timeout), and retries were not handed to it:
                # nothing it holds may reach the empty broker before the topic is there again
                observe(lambda: edge.edge.sink.in_flight == 0, 10,
                        "the producer lets go of the records answered 503")
                restarting = time.monotonic()
                with broker_restarted(port) as second:
                    back = time.monotonic()
                    worker = start_worker(second.bootstrap, idp.trust_file, topics,
                                          CAEP_TOPIC_PARTITIONS="4")
                    try:
                        for future in pushing:
                            future.result(timeout=GIVE_UP_AFTER + 30)
                        accepted = time.monotonic()
                        written = topic_contents(second.bootstrap, topics.security_events,
                                                 SETS)
                        worker.wait_ready(60)
                        decided = collect(second.bootstrap, topics.decisions, lambda r: {
                            d["value"].get("source_jti") for d in r} >= set(jti_of.values()),
                            timeout=30)
                    finally:
                        stop_worker(worker)
    finally:
        first.stop()

    answers = [a for mine in attempts for a in mine]
    while_down = [a for a in answers if a.answered < restarting]
    assert {a.status for a in while_down} <= REFUSALS, sorted({a.status for a in while_down})
    assert [mine[0].status in REFUSALS for mine in attempts] == [True] * SETS
    # a retry while the broker is away is refused at once, not after the produce timeout
    retried = [mine[1] for mine in attempts]
    assert max(a.answered - a.sent for a in retried) < 1.0, retried
    refused = [a for a in answers if a.status != 202]
    assert refused and {a.retry_after for a in refused} == {str(RETRY_AFTER)}
    assert [mine[-1].status for mine in attempts] == [202] * SETS, [
        [a.status for a in mine] for mine in attempts]
    assert all(a.status in REFUSALS for mine in attempts for a in mine[:-1])
    assert all(a.answered >= back for mine in attempts for a in mine if a.status == 202)

    assert sorted(jti_of.get(v, repr(v)[:40]) for v in written) == sorted(jti_of.values())

    revocations: dict[str, list[dict[str, Any]]] = {}
    for record in decided:
        decision = record["value"]
        if decision["action"] == "revoke_session":
            revocations.setdefault(decision["source_jti"], []).append(decision)
    assert sorted(revocations) == sorted(jti_of.values())
    assert all(len(each) == 1 for each in revocations.values())
    assert sorted(each[0]["session_id"] for each in revocations.values()) == sorted(
        subject["session"]["id"] for subject in subjects)
    figures = {
        "sets": SETS, "broker_down_s": round(back - started, 2),
        "restart_s": round(back - restarting, 2),
        "last_202_after_back_s": round(accepted - back, 2),
        "attempts_per_set": sorted(len(mine) for mine in attempts),
        "answers_while_down": sorted({a.status for a in while_down}),
        "accepted_while_down": sum(a.status == 202 for a in while_down),
        "retry_refused_max_ms": round(max(a.answered - a.sent for a in retried) * 1000),
        "written": len(written), "revocations_decided": len(revocations),
    }
    figures["summary"] = (
        f"edge durability: {SETS} sets, broker down {figures['broker_down_s']} s, "
        f"{figures['accepted_while_down']} accepted while down, {len(written)} written once, "
        f"{len(revocations)} decided once")
    report = Path(os.environ.get("CAEP_RESULTS_DIR") or tmp_path) / "edge-durability.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode(),
                      encoding="utf-8")
    print(f"\n{figures['summary']} (report {report})")

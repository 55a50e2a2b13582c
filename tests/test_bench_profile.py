"""The pipeline benchmark's profile summary counts the event loop's thread only, and a sample
for every stage on its stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_pipeline import summarize_profile

LOOP = "thread (100): MainThread"
CONSUMER = "thread (101): Thread-1"
RUN = ("_run_once (asyncio/base_events.py:1900);Handle._run (asyncio/events.py:80);"
       "Agent._execute_actor (faust/agents/agent.py:700)")
INGEST = f"{RUN};create_app.<locals>.ingest (streams/app.py:250)"
VERIFY = (f"{INGEST};KeyRefresher.averify_all (caep/jwks.py:90);"
          "SetVerifier.verify_all (caep/codec.py:200);check (caep/signatures.py:50)")
FLUSH = f"{INGEST};Outbox.flush (streams/outbox.py:60);send (aiokafka/producer/producer.py:9)"
DRAIN = ("_run_once (asyncio/base_events.py:1900);Handle._run (asyncio/events.py:80);"
         "Consumer._drain_messages (streams/transport.py:200);"
         "Service.wait_first (mode/services.py:777);ensure_future (asyncio/tasks.py:600)")
IDLE = "_run_once (asyncio/base_events.py:1890);select (selectors.py:469)"


def test_stages_are_shares_of_the_event_loops_working_samples(tmp_path: Path) -> None:
    raw = tmp_path / "worker.pyspy"
    raw.write_text("\n".join([
        f"{LOOP};{VERIFY} 30",
        f"{LOOP};{FLUSH} 10",
        f"{LOOP};{DRAIN} 20",
        f"{LOOP};{IDLE} 40",
        f"{CONSUMER};{IDLE} 90",
        f"{CONSUMER};fetch (aiokafka/consumer/fetcher.py:10) 10",
    ]) + "\n", encoding="utf-8")
    profile = summarize_profile(raw)
    assert profile["samples"] == 100
    assert profile["idle_share"] == pytest.approx(0.40)
    assert profile["other_threads_samples"] == 100
    assert profile["other_threads_busy_share"] == pytest.approx(0.10)
    stages = profile["stages"]
    assert stages["ingest agent (streams/app.py)"] == pytest.approx(40 / 60)
    assert stages["  verify (SetVerifier.verify_all)"] == pytest.approx(30 / 60)
    assert stages["  outbox flushes (streams/outbox.py)"] == pytest.approx(10 / 60)
    assert stages["faust: consumer drain loop, per record"] == pytest.approx(20 / 60)
    wait_first = "mode's wait_first (faust wraps each record's hand-over in it)"
    assert stages[wait_first] == pytest.approx(20 / 60)
    assert stages["evaluate agent (streams/app.py)"] == 0
    assert profile["areas"]["verify (caep.codec, signatures)"] == pytest.approx(30 / 60)
    assert profile["leaves"]["check (caep/signatures.py)"] == pytest.approx(30 / 60)


def test_stacks_without_thread_frames_count_as_the_event_loop(tmp_path: Path) -> None:
    raw = tmp_path / "restore.pyspy"
    raw.write_text(f"{VERIFY} 3\n{IDLE} 1\n", encoding="utf-8")
    profile = summarize_profile(raw)
    assert (profile["samples"], profile["other_threads_samples"]) == (4, 0)
    assert profile["stages"]["  verify (SetVerifier.verify_all)"] == pytest.approx(1.0)

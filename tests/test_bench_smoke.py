"""Every benchmark's --quick mode runs and produces its figures; speed is never asserted here.

Speed goals live in `bench/` as printed figures with their ratios (the machine is shared and
noisy); these only prove each benchmark still works against the current code, and that
README's benchmark table is the one `python -m bench.readme` renders from bench/results.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench import bench_broker, harness, readme, results
from streams.topics import ensure_topics
from tests.batches import record_batches

PROJECT_DIR = Path(__file__).resolve().parent.parent
ALGORITHMS = ("RS256", "ES256")


BENCHMARKS = ("bench_codec", "bench_evaluation", "bench_client", "bench_pipeline",
              "bench_latency", "bench_scaleout", "bench_broker")
ON_BROKER = {"bench_pipeline", "bench_latency", "bench_scaleout"}


@dataclass
class QuickRun:
    code: int
    stdout: str
    data: dict[str, Any]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, QuickRun]]:
    """Every benchmark's --quick mode, run side by side (they only have to produce figures,
    not good ones), the broker ones sharing one embedded broker."""
    directory = tmp_path_factory.mktemp("bench")
    with harness.broker(os.environ.get("CAEP_TEST_BOOTSTRAP")) as bootstrap:
        running = {}
        for module in BENCHMARKS:
            command = [sys.executable, "-m", f"bench.{module}", "--quick", "--json",
                       str(directory / f"{module}.json")]
            if module in ON_BROKER:
                command += ["--bootstrap", bootstrap]
            running[module] = subprocess.Popen(command, cwd=PROJECT_DIR, text=True,
                                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        runs = {}
        for module, process in running.items():
            try:
                out, _ = process.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                process.kill()
                out, _ = process.communicate()
            results_file = directory / f"{module}.json"
            data = (json.loads(results_file.read_text(encoding="utf-8"))
                    if results_file.exists() else {})
            runs[module] = QuickRun(process.returncode, out, data)
        yield runs


def entry_of(run: QuickRun, key: str) -> dict[str, Any]:
    assert run.code == 0, run.stdout[-4000:]
    entry: dict[str, Any] = run.data[key]
    return entry


def assert_entry(entry: dict[str, Any], figures: set[str], checks: set[str]) -> None:
    """The entry is a quick run with the machine facts, a figure starting with each name in
    `figures`, at least the `checks`, and a boolean verdict on every check."""
    assert entry["quick"] is True
    assert {"cpu_count", "python", "timestamp"} <= entry["machine"].keys()
    named = {figure["name"]: figure["value"] for figure in entry["figures"]}
    missing = {name for name in figures if not any(n.startswith(name) for n in named)}
    assert not missing, (missing, sorted(named))
    assert {check["name"] for check in entry["checks"]} >= checks
    assert all(isinstance(check["met"], bool) for check in entry["checks"])


def test_quick_codec_benchmark_produces_all_figures(quick: dict[str, QuickRun]) -> None:
    run = quick["bench_codec"]
    entry = entry_of(run, "codec")
    assert entry["quick"] is True
    assert {"cpu_count", "python", "timestamp"} <= entry["machine"].keys()
    details = entry["details"]
    for alg in ALGORITHMS:
        for contender in ("batch", "engine", "baseline", "ceiling"):
            assert details["verify"][alg][contender]["median"] > 0, (alg, contender)
        for contender in ("sign_set", "sign_ceiling"):
            assert details["signing"][alg][contender]["median"] > 0, (alg, contender)
        for ratio in ("batch/baseline", "batch/ceiling", "engine/baseline", "engine/ceiling"):
            assert details["ratios"][alg][ratio] > 0, (alg, ratio)
    assert details["json"]["orjson"]["us_per_token"] > 0
    assert details["json"]["pairs_hook"]["us_per_token"] > 0
    checks = {check["name"]: check for check in entry["checks"]}
    assert set(checks) == {f"{alg} {ratio}" for alg in ALGORITHMS
                           for ratio in ("batch/baseline", "batch/ceiling")}
    assert all(isinstance(check["met"], bool) for check in checks.values())
    assert all(figure["value"] > 0 for figure in entry["figures"])

    for line in ("batch/baseline", "batch/ceiling", "engine/baseline", "engine/ceiling",
                 "duplicate-JSON-key detection"):
        assert line in run.stdout
    for alg in ALGORITHMS:
        assert f"{alg}  engine" in run.stdout
        assert f"{alg}  batch" in run.stdout


def test_quick_evaluation_benchmark_produces_rate_and_memory_figures(
        quick: dict[str, QuickRun]) -> None:
    entry = entry_of(quick["bench_evaluation"], "evaluation")
    out = quick["bench_evaluation"].stdout
    assert_entry(entry, {"evaluate (mix)", "decode + evaluate + encode",
                         "serialized state per live session", "RSS per session (",
                         "table RSS for", "RSS per session, raw orjson values"},
                 {"evaluate rate / 50k per core"})
    assert all(figure["value"] > 0 for figure in entry["figures"])
    details = entry["details"]
    assert details["mix"]["presented"] > 0.8 and details["mix"]["revoked"] > 0
    assert details["decisions_per_input"]["revoke_session"] > 0
    # The table keeps exactly-sized values: far below what raw orjson results hold.
    memory = details["memory"]
    assert memory["population"]["rss_per_session"] < memory["raw_orjson"]["rss_per_session"]
    assert "evaluate rate / 50k per core" in out


def test_quick_client_benchmark_produces_lookup_flag_and_middleware_figures(
        quick: dict[str, QuickRun]) -> None:
    entry = entry_of(quick["bench_client"], "client")
    assert_entry(entry, {"subscriber.is_revoked(sid)", "ceiling: key in dict",
                         "SDK + CaepProvider", "ceiling: SDK + InMemoryProvider",
                         "CaepProvider.resolve_boolean_details", "A bare app (max rate)",
                         "B app + own token check (max rate)", "C app + CaepMiddleware (max rate)",
                         "CaepMiddleware added per request"},
                 {"is_revoked / 1M per core", "flag evaluations / 100k per core",
                  "middleware overhead / 5%"})
    rates = entry["details"]["rates"]
    assert all(rate["median"] > 0 for rate in rates.values())


def test_quick_pipeline_benchmark_produces_engine_and_ceiling_rates(
        quick: dict[str, QuickRun]) -> None:
    entry = entry_of(quick["bench_pipeline"], "pipeline")
    assert_entry(entry, {"engine (verify, evaluate, publish)",
                         "engine, SETs keyed otherwise (hop via engine-input)",
                         "ceiling (bare aiokafka consume-produce)", "engine / ceiling"},
                 {"engine / ceiling"})
    details = entry["details"]
    assert details["engine"]["decisions"] == details["sets"]  # every SET decided
    assert details["engine_via_engine_input"]["decisions"] == details["sets"]
    assert details["engine"]["rate"] > 0 and all(r["rate"] > 0 for r in details["ceiling_runs"])


def test_quick_latency_benchmark_produces_percentiles_per_rate_and_enforcement(
        quick: dict[str, QuickRun]) -> None:
    entry = entry_of(quick["bench_latency"], "latency")
    run = entry["details"]["runs"][0]
    assert run["max_rate"] > 0
    assert set(run["phases"]) == {"25% of max", "50% of max", "80% of max", "1,000/s"}
    for phase in run["phases"].values():
        assert phase["decided"] == phase["sent"] > 0  # every SET's decision was seen
        assert 0 < phase["p50"] <= phase["p99"] <= phase["max"]
    assert run["enforcement"]["enforced"] == run["enforcement"]["revocations"] > 0
    assert {c["name"] for c in entry["checks"]} == {
        "p99 at 1,000/s / 100 ms (100 ms wait)", "revocation->401 p99 / 100 ms (100 ms wait)"}


def test_quick_scaleout_benchmark_produces_ratio_and_restore_times(
        quick: dict[str, QuickRun]) -> None:
    entry = entry_of(quick["bench_scaleout"], "scaleout")
    details = entry["details"]
    assert details["one"]["rate"] > 0 and details["two"]["rate"] > 0 and details["ratio"] > 0
    for name, measured in details["restores"].items():
        assert measured["seconds"] > 0, (name, measured)
        if not name.endswith("empty"):
            assert measured["subjects"] > 0, (name, measured)  # the table did come back
    assert any("rocksdb" in check["name"] for check in entry["checks"])


def test_quick_broker_benchmark_measures_the_broker_as_it_fills(
        quick: dict[str, QuickRun]) -> None:
    entry = entry_of(quick["bench_broker"], "broker")
    bulk = entry["details"]["bulk"]
    assert_entry(entry, {
        "broker CPU at 500/s, 0 records as one-record batches in the topic read",
        f"broker CPU at 500/s, {bulk:,} records as batches of 100 in the topic read",
        f"broker CPU at 500/s, {bulk:,} records as one-record batches in another topic",
        "last window / first (one-record batches in the topic read)"}, set())
    for series, per_batch in (("one_record_batches", 1), ("batches_of_100", 100),
                              ("other_topic", 1)):
        windows = entry["details"][series]
        assert len(windows) == 2 and all(w["cores"] > 0 and w["read"] > 0 for w in windows)
        assert (windows[1]["bulk_records"], windows[1]["bulk_batches"]) == (
            bulk, -(-bulk // per_batch))


@pytest.mark.parametrize("per_batch", [1, 100])
def test_broker_benchmark_bulk_writes_the_batches_it_counts(bootstrap: str,
                                                            per_batch: int) -> None:
    """Its figures name batches held, so each bulk batch must reach the broker whole and
    alone (an aiokafka batch silently takes no more than its byte limit allows)."""
    topic = f"bulk-{uuid.uuid4().hex[:8]}"

    async def written() -> list[list[int]]:
        await ensure_topics(bootstrap, [topic], bench_broker.PARTITIONS)
        await bench_broker.bulk(bootstrap, topic, 8 * per_batch, per_batch)
        return [await record_batches(bootstrap, topic, p)
                for p in range(bench_broker.PARTITIONS)]

    assert asyncio.run(written()) == [[per_batch] * 2] * bench_broker.PARTITIONS


def test_readme_benchmark_table_is_generated_from_the_committed_results() -> None:
    text = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")
    committed = results.load(results.RESULTS_PATH)
    assert readme.current_block(text) == readme.render(committed), (
        "README's benchmark table is stale: run python -m bench.readme")
    for key in committed:
        assert readme.TITLES.get(key, key) in readme.current_block(text)

"""The codec benchmark runs and produces every figure; its speed is never asserted here.

Speed goals live in `bench/` as printed figures with their ratios (the machine is shared and
noisy); this only proves the benchmark still works against the current codec.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
ALGORITHMS = ("RS256", "ES256")


def test_quick_codec_benchmark_produces_all_figures(tmp_path: Path) -> None:
    results_file = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.bench_codec", "--quick", "--json", str(results_file)],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr

    entry = json.loads(results_file.read_text(encoding="utf-8"))["codec"]
    assert entry["quick"] is True
    assert {"cpu_count", "python", "timestamp"} <= entry["machine"].keys()
    details = entry["details"]
    for alg in ALGORITHMS:
        for contender in ("engine", "baseline", "ceiling"):
            assert details["verify"][alg][contender]["median"] > 0, (alg, contender)
        for contender in ("sign_set", "sign_ceiling"):
            assert details["signing"][alg][contender]["median"] > 0, (alg, contender)
        for ratio in ("engine/baseline", "engine/ceiling"):
            assert details["ratios"][alg][ratio] > 0, (alg, ratio)
    assert details["json"]["orjson"]["us_per_token"] > 0
    assert details["json"]["pairs_hook"]["us_per_token"] > 0
    checks = {check["name"]: check for check in entry["checks"]}
    assert set(checks) == {f"{alg} {ratio}" for alg in ALGORITHMS
                           for ratio in ("engine/baseline", "engine/ceiling")}
    assert all(isinstance(check["met"], bool) for check in checks.values())
    assert all(figure["value"] > 0 for figure in entry["figures"])

    for line in ("engine/baseline", "engine/ceiling", "duplicate-JSON-key detection"):
        assert line in run.stdout
    for alg in ALGORITHMS:
        assert f"{alg}  engine" in run.stdout

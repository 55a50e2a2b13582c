"""Fuzzing (issue 10, item 4): the SET parser, the subject identifier parser, the session-activity
parser and the policy loader, each under atheris (`tests/fuzz_targets.py`).

The CI smoke runs the four targets in parallel, as subprocesses, for `CAEP_FUZZ_SECONDS` (60)
each, so it costs about that in wall time. Property: 0 crashes (an exception other than the
project's `CaepError` with an RFC 8935 code, or an input slower than 1 s of CPU). The figures go
to `CAEP_FUZZ_REPORT` (default: the test's tmp dir) and one summary line is printed, e.g.
`fuzz: 4 targets, 812340 execs, 0 crashes, slowest 38 ms`. `make fuzz` is the long profile (a
kept corpus under `.fuzz/`, longer runs).

Below the smoke, fixed inputs pin what fuzzing (or reading the code) found, so a regression shows
without waiting for the fuzzer to find it again.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from caep.activity import parse_activity
from caep.errors import CaepError, ErrorCode
from caep.policy import load_policy, parse_policy
from caep.subjects import parse_subject
from tests.fuzz_targets import TARGETS, SetTarget

ROOT = Path(__file__).resolve().parent.parent
SECONDS = int(os.environ.get("CAEP_FUZZ_SECONDS", "60"))
SLOW_MS = 1000.0
_DONE = re.compile(rb"stat::number_of_executed_units:\s*(\d+)")


def _report_path(tmp_path: Path) -> Path:
    configured = os.environ.get("CAEP_FUZZ_REPORT")
    return Path(configured) if configured else tmp_path / "fuzz.json"


def test_fuzz_smoke_four_targets_in_parallel(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris has wheels for Linux x86_64 only")
    workdir = Path(os.environ.get("CAEP_FUZZ_WORKDIR") or tmp_path / "fuzz")
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    running: dict[str, tuple[subprocess.Popen[bytes], Path, Path]] = {}
    for target in TARGETS:
        stats, log = workdir / f"{target}.stats.json", workdir / f"{target}.log"
        stats.unlink(missing_ok=True)
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.fuzz_targets", target, "--seconds", str(SECONDS),
                 "--workdir", str(workdir), "--report", str(stats)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        running[target] = (process, stats, log)

    results: dict[str, dict[str, Any]] = {}
    for target, (process, stats, log) in running.items():
        try:
            returncode = process.wait(timeout=SECONDS + 120)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = process.wait()
        output = log.read_bytes()
        figures: dict[str, Any] = json.loads(stats.read_text()) if stats.exists() else {}
        done = _DONE.search(output)
        if done:  # libFuzzer's own count is exact; the stats file is rewritten every second
            figures["execs"] = max(int(done.group(1)), figures.get("execs", 0))
        figures["returncode"] = returncode
        figures.pop("slowest_input_b64", None)
        if returncode != 0 or figures.get("crashes"):
            figures["log_tail"] = output[-4000:].decode("utf-8", "replace")
            figures["artifacts"] = sorted(str(p) for p in (workdir / target / "artifacts")
                                          .glob("*"))
        results[target] = figures
    wall = time.monotonic() - started

    execs = sum(r.get("execs", 0) for r in results.values())
    crashes = sum(r.get("crashes", 0) or (r["returncode"] != 0) for r in results.values())
    slowest = max(r.get("slowest_cpu_ms", 0.0) for r in results.values())
    summary = (f"fuzz: {len(results)} targets, {execs} execs, {crashes} crashes, "
               f"slowest {slowest:.0f} ms")
    report = {"summary": summary, "seconds_per_target": SECONDS, "wall_seconds": round(wall, 1),
              "engine": "atheris", "targets": results}
    path = _report_path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"\n{summary} (wall {wall:.0f} s, report {path})")

    for target, figures in results.items():
        assert figures["returncode"] == 0 and not figures.get("crashes"), (
            f"{target}: {json.dumps(figures.get('crash_details'), indent=1)}\n"
            f"{figures.get('log_tail', '')}")
        assert figures.get("execs", 0) > 0, f"{target} ran no input"
        assert figures["slowest_cpu_ms"] < SLOW_MS, f"{target}: an input took {figures}"
        assert figures["refused"], f"{target} refused nothing: the property was never exercised"


# --- fixed inputs ---------------------------------------------------------------------------

def _refused(call: Any, value: Any) -> CaepError:
    try:
        call(value)
    except CaepError as error:
        assert error.code in set(ErrorCode)
        return error
    except Exception as error:
        pytest.fail(f"raised {type(error).__name__}: {str(error)[:200]}, not a CaepError")
    pytest.fail("accepted")


DEEP_TOML = [
    pytest.param("a = " + "[" * 5000 + "]" * 5000, id="array-5000-deep"),
    pytest.param("[flags]\nx = " + "[" * 1000 + "]" * 1000, id="flag-array-1000-deep"),
    pytest.param("flags = " + "{a = " * 3000 + "1" + "}" * 3000, id="inline-table-3000-deep"),
]


@pytest.mark.parametrize("text", DEEP_TOML)
def test_policy_loader_refuses_deep_nesting_with_a_config_error(text: str, tmp_path: Path) -> None:
    """`parse_policy` catches TOMLDecodeError and ValidationError only; `tomllib` recurses per
    nesting level, so a deeply nested array or inline table raises RecursionError. Found while
    writing the policy fuzz target; `load_policy` (the worker's start-up) is affected too."""
    _refused(lambda t: parse_policy(t, "deep"), text)
    (tmp_path / "policy.toml").write_text(text, encoding="utf-8")
    _refused(load_policy, tmp_path / "policy.toml")


DEEP_JSON = [b"[" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
             b'{"format":"complex","user":' + b"[" * 3000 + b"]" * 3000 + b"}"]


@pytest.mark.parametrize("raw", DEEP_JSON, ids=["open-brackets", "objects", "member"])
def test_subject_and_activity_parsers_refuse_deep_nesting(raw: bytes) -> None:
    _refused(parse_activity, raw)
    _refused(parse_activity, b'{"kind":"presented","tenant":"t","session_id":"s",'
                             b'"observed_at":1,"subject":' + raw + b"}")
    try:
        value: Any = json.loads(raw)
    except RecursionError:
        value = raw.decode()
    _refused(parse_subject, value)


def test_set_target_seeds_verify_and_fuzzed_modes_refuse_cleanly() -> None:
    """The SET target's seeds are accepted (so the corpus starts from valid SETs) and its
    signing modes refuse malformed payloads and headers with a SetError."""
    target = SetTarget()
    for seed in target.seeds():
        assert target(seed), seed[:60]
    for data in (b"\x01{}", b"\x01[]", b"\x02{}", b"\x01" + b"{" * 2000, b"\x00" + b"." * 3,
                 b"\x02" + base64.b64encode(b"x" * 100)):
        _refused(target, data)

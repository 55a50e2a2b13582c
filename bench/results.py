"""Benchmark figures on disk: each benchmark merges its own entry into `bench/results.json`.

One shared file so `bench.run_all` can print one combined table; each entry carries the machine
facts of its own run, because a rate means nothing without the machine it was measured on.

An entry is ``{"machine": {...}, "quick": bool, "figures": [Figure], "checks": [Check],
"details": {...}}``: `figures` and `checks` are the generic rows every table shows, `details`
is whatever the benchmark wants to keep (per-round samples and the like).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Required, TypedDict

RESULTS_PATH = Path(__file__).with_name("results.json")


class Figure(TypedDict):
    """One measured figure, e.g. ``{"name": "RS256 verify engine", "value": 1e4, "unit": "/s"}``."""

    name: str
    value: float
    unit: str


class Check(TypedDict, total=False):
    """A headline ratio against its goal; `met` is informational, never a failure.

    `at_most` marks a figure that should stay at or below its goal (memory, latency)."""

    name: Required[str]
    value: Required[float]
    goal: Required[float]
    met: Required[bool]
    at_most: bool


def check(name: str, value: float, goal: float) -> Check:
    """A ratio that should be at least `goal`."""
    return {"name": name, "value": value, "goal": goal, "met": value >= goal}


def check_at_most(name: str, value: float, goal: float) -> Check:
    """A figure that should be at most `goal`."""
    return {"name": name, "value": value, "goal": goal, "met": value <= goal, "at_most": True}


def machine_facts() -> dict[str, Any]:
    """What the figures depend on besides the code: cores, interpreter, when."""
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def load(path: Path = RESULTS_PATH) -> dict[str, Any]:
    """All entries of a results file; an absent file has none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a benchmark results file (not a JSON object)")
    return data


def record(
    key: str,
    *,
    figures: Iterable[Figure],
    checks: Iterable[Check],
    details: Mapping[str, Any] | None = None,
    quick: bool = False,
    path: Path = RESULTS_PATH,
) -> dict[str, Any]:
    """Merge one benchmark's entry under `key`, keeping every other benchmark's entry.

    The file is replaced atomically, so an interrupted run never leaves half a file behind.
    """
    entry: dict[str, Any] = {
        "machine": machine_facts(),
        "quick": quick,
        "figures": list(figures),
        "checks": list(checks),
        "details": dict(details or {}),
    }
    data = load(path)
    data[key] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return entry


def format_number(value: float) -> str:
    """A figure for a table: thousands separated from 100 up, else two decimals."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


_number = format_number


def format_check(item: Check, width: int = 10) -> str:
    """One check as a table row: name, value, goal, PASS/MISS."""
    verdict = "PASS" if item["met"] else "MISS"
    relation = "<=" if item.get("at_most") else ">="
    return (f"{item['name']:<{width}}  {item['value']:>12.2f}  goal {relation} "
            f"{item['goal']:.2f}  {verdict}")


def figure_lines(figures: list[Figure], checks: list[Check]) -> list[str]:
    """A benchmark's own table: its figures, a blank line, its checks with PASS/MISS."""
    width = max(len(f["name"]) for f in figures)
    lines = [f"  {f['name']:<{width}}  {format_number(f['value']):>12}  {f['unit']}"
             for f in figures]
    lines.append("")
    lines += ["  " + format_check(item, width) for item in checks]
    return lines


def profile_lines(stats: Any, title: str, top: int) -> list[str]:
    """A cProfile run (`pstats.Stats`) ranked by own time: `title`, a header, the top rows.
    Own time, since cProfile inflates the cumulative time of Python-level calls."""
    entries: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats
    total = sum(row[2] for row in entries.values())
    ranked = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)
    lines = [title, f"   {'own %':>6} {'cum %':>6} {'calls':>8}  function"]
    for (filename, line, name), (_, calls, own, cumulative, _) in ranked[:top]:
        where = name if filename == "~" else f"{name}  ({Path(filename).name}:{line})"
        lines.append(f"   {own / total:>6.1%} {cumulative / total:>6.1%} {calls:>8}  {where}")
    return lines


def render(data: Mapping[str, Any]) -> str:
    """The combined table of every entry: figures, then checks with PASS/MISS."""
    lines: list[str] = []
    for key in sorted(data):
        entry = data[key]
        machine = entry.get("machine", {})
        mode = "quick" if entry.get("quick") else "full"
        lines.append(
            f"== {key}  ({mode} run, {machine.get('timestamp', '?')}, "
            f"{machine.get('implementation', '')} {machine.get('python', '?')}, "
            f"{machine.get('cpu_count', '?')} CPUs)"
        )
        figures = entry.get("figures", [])
        width = max([len(f["name"]) for f in figures] + [len(c["name"]) for c in entry.get(
            "checks", [])] + [10])
        for figure in figures:
            lines.append(
                f"   {figure['name']:<{width}}  {_number(figure['value']):>12}  {figure['unit']}"
            )
        for item in entry.get("checks", []):
            lines.append(f"   {format_check(item, width)}")
    return "\n".join(lines)

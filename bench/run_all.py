"""Run every `bench/bench_*.py` module in turn, then print one combined table.

Generic on purpose: a new benchmark plugs in by its file name alone, as long as it follows the
contract in `bench/__init__.py` (`--quick`, `--json PATH`, exit 0 on a missed goal). Each runs
in its own interpreter, so one benchmark's imports, caches and heap never colour another's.

    python -m bench.run_all [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import results

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent


def discover() -> list[str]:
    """Module names of every benchmark, in file-name order."""
    return [f"bench.{path.stem}" for path in sorted(BENCH_DIR.glob("bench_*.py"))]


def main(argv: Sequence[str] | None = None) -> int:
    """Run them all; exit 1 only if a benchmark crashed (a missed goal is not a crash)."""
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--json", type=Path, default=results.RESULTS_PATH, metavar="PATH",
                        help="results file the benchmarks merge into (default: %(default)s)")
    args = parser.parse_args(argv)

    crashed: list[str] = []
    for module in discover():
        command = [sys.executable, "-m", module, "--json", str(args.json)]
        if args.quick:
            command.append("--quick")
        print(f"### {module}{' --quick' if args.quick else ''}", flush=True)
        started = time.perf_counter()
        code = subprocess.run(command, cwd=PROJECT_DIR, check=False).returncode
        print(f"### {module}: exit {code} after {time.perf_counter() - started:.1f} s\n",
              flush=True)
        if code != 0:
            crashed.append(module)

    print(f"=== combined results from {args.json}")
    print(results.render(results.load(args.json)))
    if crashed:
        print(f"crashed: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

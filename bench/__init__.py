"""Benchmarks: speed goals are checked here, by printed figures, never by timed test assertions.

Every module `bench/bench_<name>.py` is runnable as `python -m bench.bench_<name>`, accepts
`--quick` (one short round) and `--json PATH` (the results file it merges its figures into,
default `bench/results.json`, see `bench.results`), prints its own table and exits 0 even when a
goal is missed: the figure is the result. `python -m bench.run_all` runs them all.

The machine is shared and noisy, so each figure is printed next to a ceiling or baseline
measured in the same run, and the ratio is the headline.
"""

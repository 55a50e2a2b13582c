"""Evaluation core benchmark: `caep.evaluation.evaluate` over a realistic mix, and table memory.

Why: every input the engine takes in ends in one `evaluate` call on the subject's state, read
from and written back to the session table, so the pure core bounds a worker's rate, and the
table's size per session bounds how many live sessions a worker holds.

- Rate: `evaluate` calls per second of CPU time (per core) over a seeded mix of inputs about
  a population of live sessions (two per subject on average): mostly session-presented
  activity, some device-compliance, risk-level and credential signals, 1% session revocations
  (the mix is printed). Each chunk's states are decoded beforehand, untimed, and written back
  afterwards, as the worker's table holds them; the worker's whole step (decode, evaluate,
  encode) is timed on alternate chunks of the same mix, for context.
- Memory: the table's values as the worker keeps them (`SubjectState.to_bytes`, a faust memory
  table of bytes keys and values): serialized bytes per live session, and the resident memory
  (RSS) the table grows by, per session, for the benchmark's population and for 1,000,000
  sessions (the population cloned under fresh ids, sizes unchanged). RSS, not `len()`:
  orjson's own results hold about 4 KiB each however short (see `caep/jsonbytes.py`), which the
  same table built from raw `orjson.dumps` results shows beside it.

    python -m bench.bench_evaluation [--quick] [--json PATH] [--profile]

Exits 0 whether or not a goal is met: the figure is the result.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import marshal
import multiprocessing
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import results
from caep.activity import SessionActivity
from caep.evaluation import EngineInput, SecurityEvent, evaluate
from caep.events import CAEP, parse_event
from caep.policy import Policy, load_policy
from caep.state import SubjectState

GOAL_RATE = 50_000.0  # evaluations per second per core
GOAL_BYTES = 1024.0  # resident bytes per live session
MILLION = 1_000_000
TENANT = "acme"
ISS = "https://idp.example.com"
T0 = 1_800_000_000.0
# The mix: input kind -> share of inputs. "revoked" is the 1% of session revocations.
MIX = {
    "presented": 0.90,
    "established": 0.02,
    "device": 0.025,
    "risk": 0.025,
    "credential": 0.01,
    "claims": 0.01,
    "revoked": 0.01,
}
USER_AGENTS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0",
               "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/17.5",
               "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0")


@dataclass(frozen=True)
class Mode:
    sessions: int  # live sessions in the table while the rate is measured
    inputs: int  # inputs per round
    rounds: int
    chunks: int  # per round; alternate chunks time evaluate alone and the whole step
    memory_sessions: int  # the large table, for the memory figure


FULL = Mode(sessions=100_000, inputs=120_000, rounds=3, chunks=24, memory_sessions=MILLION)
QUICK = Mode(sessions=4_000, inputs=6_000, rounds=1, chunks=6, memory_sessions=40_000)


# ---------------------------------------------------------------------------- the population

def user(n: int) -> dict[str, Any]:
    """Ids are fixed-width and prefixed (u00..., S00..., D00...) so the memory table can clone
    the population under fresh ids with one byte replacement, keeping every size."""
    return {"format": "email", "email": f"u{n:07d}@example.com"}


def session_id(n: int, j: int) -> str:
    return f"S{n:07d}.{j}"


def device_id(n: int, j: int) -> str:
    return f"D{n:07d}.{j}"


def ip_of(rng: random.Random) -> str:
    return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def activity(kind: str, n: int, j: int, at: float, rng: random.Random,
             **extra: Any) -> SessionActivity:
    return SessionActivity.model_validate({
        "kind": kind, "tenant": TENANT, "subject": user(n), "session_id": session_id(n, j),
        "observed_at": at, "device_id": device_id(n, j), "ip": extra.pop("ip", None) or ip_of(rng),
        "user_agent": USER_AGENTS[n % len(USER_AGENTS)],
        "geo": {"lat": 48.85 + (n % 7) * 0.01, "lon": 2.35 + (n % 5) * 0.01}, **extra})


class Population:
    """Subjects with one to three live sessions each (two on average), as a table of bytes."""

    def __init__(self, sessions: int, policy: Policy, seed: int = 7) -> None:
        self.policy = policy
        self.rng = random.Random(seed)
        self.table: dict[bytes, bytes] = {}
        self.keys: list[bytes] = []  # per subject number
        self.sessions_of: list[int] = []  # per subject number: session count (ids 0..count-1)
        self.ips: list[str] = []
        self.clock = T0
        made, n = 0, 0
        started = time.process_time()
        while made < sessions:
            count = min(1 + n % 3, sessions - made)
            self._establish(n, count)
            made += count
            n += 1
        self.establish_seconds = time.process_time() - started
        self.established = made

    def _establish(self, n: int, count: int) -> None:
        state: SubjectState | None = None
        ip = ip_of(self.rng)
        for j in range(count):
            self.clock += 0.001
            state, _ = evaluate(state, activity("established", n, j, self.clock, self.rng,
                                                ip=ip, acr="urn:caep-engine:acr:mfa"),
                                self.policy, self.clock)
        assert state is not None
        key = state.key.encode()
        self.table[key] = state.to_bytes()
        self.keys.append(key)
        self.sessions_of.append(count)
        self.ips.append(ip)

    def live_sessions(self) -> tuple[int, int]:
        """(active sessions, all sessions kept including revoked and ended tombstones)."""
        active = kept = 0
        for value in self.table.values():
            for session in orjson.loads(value)["x"]:
                kept += 1
                active += session[1] == "active"
        return active, kept


def security_event(n: int, key: bytes, event_type: str, payload: dict[str, Any], at: float,
                   rng: random.Random, *, session: str | None, device: str | None
                   ) -> SecurityEvent:
    subject: dict[str, Any] = {"format": "complex", "user": user(n)}
    if session is not None:
        subject["session"] = {"format": "opaque", "id": session}
    if device is not None:
        subject["device"] = {"format": "opaque", "id": device}
    return SecurityEvent(tenant=TENANT, subject=subject, key=key.decode(), event_type=event_type,
                         event=parse_event(event_type, payload), iss=ISS,
                         jti=f"{rng.getrandbits(128):032x}", occurred_at=at,
                         session_id=session, device_id=device)


def make_inputs(population: Population, count: int,
                rng: random.Random) -> list[tuple[bytes, EngineInput, float, str]]:
    """`count` inputs drawn from the mix: (table key, input, now, kind), in time order."""
    kinds, weights = list(MIX), list(MIX.values())
    subjects = len(population.keys)
    made: list[tuple[bytes, EngineInput, float, str]] = []
    for kind in rng.choices(kinds, weights, k=count):
        population.clock += 0.01
        at = population.clock
        n = rng.randrange(subjects)
        key = population.keys[n]
        j = rng.randrange(population.sessions_of[n])
        item: EngineInput
        stamp = {"event_timestamp": int(at * 1000)}
        if kind == "presented":
            # Mostly the same device, IP and agent; now and then another IP (mobile networks).
            ip = population.ips[n] if rng.random() < 0.95 else ip_of(rng)
            item = activity("presented", n, j, at, rng, ip=ip)
        elif kind == "established":
            j = population.sessions_of[n]
            population.sessions_of[n] += 1
            item = activity("established", n, j, at, rng, ip=population.ips[n])
        elif kind == "device":
            status = rng.choice(("compliant", "not-compliant"))
            other = "compliant" if status == "not-compliant" else "not-compliant"
            item = security_event(n, key, CAEP + "device-compliance-change",
                                  {"previous_status": other, "current_status": status,
                                   "initiating_entity": "policy", **stamp}, at, rng,
                                  session=session_id(n, j), device=device_id(n, j))
        elif kind == "risk":
            level = rng.choice(("LOW", "MEDIUM", "LOW"))
            item = security_event(n, key, CAEP + "risk-level-change",
                                  {"principal": "USER", "current_level": level,
                                   "risk_reason": "anomalous sign-in", **stamp}, at, rng,
                                  session=session_id(n, j), device=None)
        elif kind == "credential":
            # A credential changed: revokes the sessions established before it.
            item = security_event(n, key, CAEP + "credential-change",
                                  {"credential_type": "fido2-roaming", "change_type": "create",
                                   "initiating_entity": "user", **stamp}, at, rng,
                                  session=None, device=None)
        elif kind == "claims":
            item = security_event(n, key, CAEP + "token-claims-change",
                                  {"claims": {"role": "reader"}, **stamp}, at, rng,
                                  session=session_id(n, j), device=None)
        else:  # revoked
            item = security_event(n, key, CAEP + "session-revoked",
                                  {"initiating_entity": "admin", **stamp}, at, rng,
                                  session=session_id(n, j), device=None)
        made.append((key, item, at, kind))
    return made


# ----------------------------------------------------------------------------------- measuring

def measure_rate(population: Population, inputs: list[tuple[bytes, EngineInput, float, str]],
                 chunks: int) -> dict[str, Any]:
    """evaluate alone on even chunks, the worker's whole step on odd ones; CPU time."""
    table, policy = population.table, population.policy
    size = -(-len(inputs) // chunks)
    spent = {"evaluate": 0.0, "step": 0.0}
    done = {"evaluate": 0, "step": 0}
    decisions: Counter[str] = Counter()
    clock = time.process_time
    gc.collect()
    for index in range(chunks):
        chunk = inputs[index * size:(index + 1) * size]
        if index % 2 == 0:
            work = {key: SubjectState.from_bytes(table[key]) for key, _, _, _ in chunk}
            start = clock()
            for key, item, now, _ in chunk:
                state, made = evaluate(work[key], item, policy, now)
                work[key] = state
                for decision in made:
                    decisions[decision.action.value] += 1
            spent["evaluate"] += clock() - start
            done["evaluate"] += len(chunk)
            for key, state in work.items():
                table[key] = state.to_bytes()
        else:
            start = clock()
            for key, item, now, _ in chunk:
                state, made = evaluate(SubjectState.from_bytes(table[key]), item, policy, now)
                table[key] = state.to_bytes()
                for decision in made:
                    decisions[decision.action.value] += 1
            spent["step"] += clock() - start
            done["step"] += len(chunk)
    return {"evaluate": done["evaluate"] / spent["evaluate"],
            "step": done["step"] / spent["step"], "decisions": dict(decisions)}


def per_kind(population: Population, inputs: list[tuple[bytes, EngineInput, float, str]]
             ) -> dict[str, float]:
    """Mean microseconds of one evaluate call per input kind (each call timed on its own, so
    a little above what the chunked rate implies)."""
    table, policy = population.table, population.policy
    work = {key: SubjectState.from_bytes(table[key]) for key, _, _, _ in inputs}
    spent: Counter[str] = Counter()
    count: Counter[str] = Counter()
    clock = time.perf_counter
    for key, item, now, kind in inputs:
        start = clock()
        state, _ = evaluate(work[key], item, policy, now)
        spent[kind] += clock() - start
        count[kind] += 1
        work[key] = state
    for key, state in work.items():
        table[key] = state.to_bytes()
    return {kind: spent[kind] / count[kind] * 1e6 for kind in MIX if count[kind]}


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cloned_table(template: dict[bytes, bytes], copies: int, first: int,
                 raw: bool = False) -> dict[bytes, bytes]:
    """`copies` clones of the table under fresh subject, session and device ids.

    Every id is `u00`/`S00`/`D00` + digits; copy c replaces `00` by c's two digits, so sizes
    stay exactly the template's. With `raw`, values are re-serialized by plain `orjson.dumps`
    (what the table held before `caep/jsonbytes.py`), for the RSS comparison.
    """
    table: dict[bytes, bytes] = {}
    for copy in range(first, first + copies):
        tag = b"%02d" % copy
        u, s, d = b"u" + tag, b"S" + tag, b"D" + tag
        for key, value in template.items():
            new_key = key.replace(b"u00", u)
            new_value = value.replace(b"u00", u).replace(b"S00", s).replace(b"D00", d)
            table[new_key] = orjson.dumps(orjson.loads(new_value)) if raw else new_value
    return table


def measure_memory(template_file: Path, sessions_per_copy: int, wanted: int,
                   raw: bool = False) -> dict[str, Any]:
    """RSS growth of a table of about `wanted` sessions cloned from the template, measured in
    a fresh interpreter: memory this process freed earlier would be reused and hide growth."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        measured: dict[str, Any] = pool.apply(_memory_child,
                                              (str(template_file), sessions_per_copy, wanted, raw))
    return measured


def _memory_child(template_file: str, sessions_per_copy: int, wanted: int,
                  raw: bool) -> dict[str, Any]:
    template: dict[bytes, bytes] = marshal.loads(Path(template_file).read_bytes())
    copies = max(1, -(-wanted // sessions_per_copy))  # at least `wanted` sessions
    if copies > 99:
        raise ValueError("ids have two digits to clone into")
    gc.collect()
    before = rss_bytes()
    table = cloned_table(template, copies, first=1, raw=raw)
    gc.collect()
    grown = rss_bytes() - before
    sessions = copies * sessions_per_copy
    value_bytes = sum(len(v) for v in table.values())
    key_bytes = sum(len(k) for k in table)
    entries = len(table)
    del table
    gc.collect()
    return {"sessions": sessions, "subjects": entries, "rss_growth": grown,
            "rss_per_session": grown / sessions, "value_bytes_per_session": value_bytes / sessions,
            "key_bytes_per_session": key_bytes / sessions, "rss_after": before + grown}


def profile(population: Population, inputs: list[tuple[bytes, EngineInput, float, str]],
            top: int = 18) -> str:
    """Where evaluate's time goes, by own time (cProfile inflates Python-level calls)."""
    table, policy = population.table, population.policy
    work = {key: SubjectState.from_bytes(table[key]) for key, _, _, _ in inputs}
    profiler = cProfile.Profile()
    profiler.enable()
    for key, item, now, _ in inputs:
        work[key], _ = evaluate(work[key], item, policy, now)
    profiler.disable()
    title = f"profile: evaluate over {len(inputs):,} inputs of the mix, cProfile own time"
    return "\n".join(results.profile_lines(pstats.Stats(profiler), title, top))


# ------------------------------------------------------------------------------------ the run

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small population (seconds)")
    parser.add_argument("--json", type=Path, default=results.RESULTS_PATH, metavar="PATH",
                        help="results file to merge the figures into (default: %(default)s)")
    parser.add_argument("--profile", action="store_true",
                        help="also print where evaluate's time goes (cProfile)")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    began = time.perf_counter()
    policy = load_policy()
    rng = random.Random(11)

    population = Population(mode.sessions, policy)
    rounds: list[dict[str, Any]] = []
    kinds: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    for _ in range(mode.rounds):
        inputs = make_inputs(population, mode.inputs, rng)
        kinds.update(kind for _, _, _, kind in inputs)
        measured = measure_rate(population, inputs, mode.chunks)
        decisions.update(measured.pop("decisions"))
        rounds.append(measured)
    evaluate_rate = statistics.median(r["evaluate"] for r in rounds)
    step_rate = statistics.median(r["step"] for r in rounds)
    kind_us = per_kind(population, make_inputs(population, min(mode.inputs, 20_000), rng))
    active, kept = population.live_sessions()
    profile_text = profile(population, make_inputs(population, min(mode.inputs, 20_000), rng)
                           ) if args.profile else None

    # Memory: the population after the mix is the template; sizes as measured on it.
    template = population.table
    serialized = sum(len(v) for v in template.values()) / active
    with tempfile.TemporaryDirectory(prefix="bench-evaluation") as scratch:
        template_file = Path(scratch) / "table.marshal"
        template_file.write_bytes(marshal.dumps(template))
        small = measure_memory(template_file, active, mode.sessions)
        large = measure_memory(template_file, active, mode.memory_sessions)
        raw = measure_memory(template_file, active, mode.sessions, raw=True)

    total = sum(kinds.values())
    details: dict[str, Any] = {
        "sessions": mode.sessions, "subjects": len(population.keys), "inputs_per_round":
        mode.inputs, "rounds": mode.rounds, "chunks": mode.chunks,
        "mix": {kind: kinds[kind] / total for kind in MIX},
        "decisions_per_input": {action: count / total for action, count in decisions.items()},
        "rate": {"evaluate": evaluate_rate, "step": step_rate,
                 "evaluate_rounds": [r["evaluate"] for r in rounds],
                 "step_rounds": [r["step"] for r in rounds],
                 "establish": population.established / population.establish_seconds,
                 "us_per_kind": kind_us},
        "sessions_after": {"active": active, "kept": kept},
        "serialized_bytes_per_live_session": serialized,
        "memory": {"population": small, "large": large, "raw_orjson": raw},
    }
    figures: list[results.Figure] = [
        {"name": "evaluate (mix, 100k sessions)" if not args.quick else "evaluate (mix)",
         "value": evaluate_rate, "unit": "eval/s/core"},
        {"name": "decode + evaluate + encode", "value": step_rate, "unit": "eval/s/core"},
        {"name": "serialized state per live session", "value": serialized, "unit": "B"},
        {"name": f"RSS per session ({small['sessions']:,} sessions)",
         "value": small["rss_per_session"], "unit": "B"},
        {"name": f"RSS per session ({large['sessions']:,} sessions)",
         "value": large["rss_per_session"], "unit": "B"},
        {"name": f"table RSS for {large['sessions']:,} sessions",
         "value": large["rss_growth"] / 2**20, "unit": "MiB"},
        {"name": "RSS per session, raw orjson values",
         "value": raw["rss_per_session"], "unit": "B"},
    ]
    checks = [results.check("evaluate rate / 50k per core", evaluate_rate / GOAL_RATE, 1.0),
              results.check_at_most(f"RSS per session / 1 KiB ({large['sessions']:,})",
                                    large["rss_per_session"] / GOAL_BYTES, 1.0)]
    print(_table(details, figures, checks, time.perf_counter() - began, quick=args.quick))
    if profile_text:
        print()
        print(profile_text)
    results.record("evaluation", figures=figures, checks=checks, details=details,
                   quick=args.quick, path=args.json)
    print(f"\nfigures merged into {args.json} under 'evaluation'")
    return 0


def _table(details: dict[str, Any], figures: list[results.Figure],
           checks: list[results.Check], seconds: float, *, quick: bool) -> str:
    machine = results.machine_facts()
    mix = ", ".join(f"{kind} {share:.1%}" for kind, share in details["mix"].items())
    made = ", ".join(f"{action} {share:.2%}" for action, share in
                     sorted(details["decisions_per_input"].items()))
    rate = details["rate"]
    lines = [
        f"evaluation core benchmark{' (--quick)' if quick else ''}: "
        f"{details['sessions']:,} live sessions of {details['subjects']:,} subjects, "
        f"{details['rounds']} round(s) of {details['inputs_per_round']:,} inputs, median",
        f"{machine['implementation']} {machine['python']}, {machine['cpu_count']} CPUs; rates "
        f"are per core (CPU time of 1 process); run took {seconds:.1f} s",
        f"mix: {mix}",
        f"decisions per input: {made}",
        f"rounds: evaluate {', '.join(f'{r:,.0f}' for r in rate['evaluate_rounds'])}/s; "
        f"whole step {', '.join(f'{r:,.0f}' for r in rate['step_rounds'])}/s; "
        f"establishing the population {rate['establish']:,.0f}/s",
        "us per call by kind: " + ", ".join(f"{kind} {us:.1f}" for kind, us in
                                            rate["us_per_kind"].items()),
        f"sessions after the mix: {details['sessions_after']['active']:,} active, "
        f"{details['sessions_after']['kept']:,} kept (revoked and ended ones stay as tombstones)",
        "",
    ]
    lines += results.figure_lines(figures, checks)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""atheris fuzz targets for the parsers an attacker or an operator feeds (issue 10, item 4).

    python -m tests.fuzz_targets TARGET --seconds 60 --workdir DIR [--report FILE]

TARGET is one of `set` (`SetVerifier.verify` on arbitrary bytes, plus what the worker does with
an accepted SET), `subject` (`parse_subject`), `activity` (`parse_activity`, plus what the worker
does with an accepted activity) and `policy` (`parse_policy` / `load_policy` on arbitrary text).

The property of every target: the only exception ever raised is the project's own
(`caep.errors.CaepError`) carrying an RFC 8935 code, and no input takes more than
`SLOW_SECONDS` of CPU. Anything else is a crash: libFuzzer saves the input under
`DIR/artifacts/` and stops. The figures (execs, crashes, slowest input) go to the report file,
JSON, rewritten every second and at the end. Seed corpora are built from valid inputs: signed
SETs of the spec examples (`tests/spec_examples`), their subjects, valid activities and the
default policy (`caep/default_policy.toml`).

`tests/test_fuzz.py` runs the four targets in parallel as a CI smoke; `make fuzz` runs longer.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import hashlib
import json
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS = ("set", "subject", "activity", "policy")
SLOW_SECONDS = 1.0
ROOT = Path(__file__).resolve().parent.parent
SPEC_EXAMPLES = ROOT / "tests" / "spec_examples"
MAX_LEN = {"set": 8192, "subject": 2048, "activity": 2048, "policy": 16384}

ISS = "https://idp.fuzz.example"
AUD = "https://rp.fuzz.example"
NOW = 1_750_000_000
REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"


class Crash(Exception):
    """A property of the target does not hold for this input."""


class Stats:
    """What one fuzzing process found, written as JSON to `path`."""

    def __init__(self, target: str, path: Path | None) -> None:
        self.target = target
        self.path = path
        self.started = time.monotonic()
        self.execs = 0
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self.slowest_cpu = 0.0
        self.slowest_wall = 0.0
        self.slowest_input = ""
        self.crashes: list[dict[str, Any]] = []
        self._written = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "execs": self.execs,
            "seconds": round(time.monotonic() - self.started, 3),
            "accepted": self.accepted,
            "refused": dict(self.refused),
            "crashes": len(self.crashes),
            "crash_details": self.crashes,
            "slowest_cpu_ms": round(self.slowest_cpu * 1000, 3),
            "slowest_wall_ms": round(self.slowest_wall * 1000, 3),
            "slowest_input_b64": self.slowest_input,
        }

    def write(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.path is None or (not force and now - self._written < 1.0):
            return
        self._written = now
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(self.as_dict(), indent=1), encoding="utf-8")
        partial.replace(self.path)


# --- the targets: each takes the raw bytes and returns whether the input was accepted ----------

def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class SetTarget:
    """Mode by the first byte: 0 the bytes are the token; 1 the bytes are the payload, signed by
    a trusted key under a valid header (an issuer sending malformed claims); 2 the bytes are the
    JOSE header, signed over a valid payload. Modes 1 and 2 reach what lies past the signature.
    An accepted SET is then taken through what the worker does next (evaluation inputs, their
    engine-input record and its decoding), which must not raise either."""

    def __init__(self) -> None:
        from caep.codec import SetVerifier, sign_set
        from caep.keys import generate_jwk, jwks_of, private_key
        from caep.trust import IssuerConfig, TrustStore

        self.ed = generate_jwk("EdDSA", kid="fuzz-ed")
        self.rsa = generate_jwk("RS256", kid="fuzz-rsa")
        config = IssuerConfig(iss=ISS, audience=AUD, jwks_file=Path("unused"),
                              algorithms=["RS256", "EdDSA"], max_events=3)
        self.verifier = SetVerifier(TrustStore.from_jwks(config, jwks_of(self.ed, self.rsa)))
        self.ed_key = private_key(self.ed)
        self.header = _b64(json.dumps({"alg": "EdDSA", "typ": "secevent+jwt",
                                       "kid": "fuzz-ed"}).encode())
        self.payload = _b64(json.dumps(valid_claims()).encode())
        self._sign_set = sign_set
        self._rsa_key = private_key(self.rsa)

    def signed(self, header_b64: bytes, payload_b64: bytes) -> bytes:
        signing_input = header_b64 + b"." + payload_b64
        return signing_input + b"." + _b64(self.ed_key.sign(signing_input))

    def __call__(self, data: bytes) -> bool:
        from caep.evaluation import security_events
        from caep.wire import decode_input, encode_input

        mode, body = (data[0] % 3, data[1:]) if data else (0, b"")
        if mode == 0:
            token = body
        elif mode == 1:
            token = self.signed(self.header, _b64(body))
        else:
            token = self.signed(_b64(body), self.payload)
        verified = self.verifier.verify(token, now=NOW)
        for item in security_events(verified):
            decode_input(encode_input(item))
        return True

    def seeds(self) -> list[bytes]:
        out = []
        for claims in [valid_claims(), *spec_sets()]:
            claims = dict(claims, iss=ISS, aud=AUD, iat=NOW - 60)
            claims.pop("exp", None)
            payload = json.dumps(claims).encode()
            rsa_token = self._sign_set(claims, self._rsa_key, alg="RS256", kid="fuzz-rsa")
            out.append(b"\x00" + rsa_token.encode())
            out.append(b"\x00" + self.signed(self.header, _b64(payload)))
            out.append(b"\x01" + payload)
        out.append(b"\x02" + json.dumps({"alg": "EdDSA", "typ": "secevent+jwt",
                                         "kid": "fuzz-ed"}).encode())
        out.append(b"\x02" + json.dumps({"alg": "EdDSA", "typ": "secevent+jwt"}).encode())
        return out


def subject_target(data: bytes) -> bool:
    """`parse_subject` on the JSON the bytes hold (or the text they are, if not JSON); an
    accepted subject is then keyed as the pipeline keys it."""
    import orjson

    from caep.subjects import (
        device_of,
        parse_subject,
        partition_key,
        session_id_of,
        subject_key,
        tenant_of,
    )

    obj: Any
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = data.decode("utf-8", "replace")
    subject = parse_subject(obj)
    partition_key(tenant_of(subject) or "t", subject_key(subject))
    session_id_of(subject)
    device_of(subject)
    return True


def activity_target(data: bytes) -> bool:
    """`parse_activity` on the bytes; an accepted activity is then keyed and written as the
    engine-input record the worker sends, which must decode again."""
    from caep.activity import parse_activity
    from caep.evaluation import activity_key
    from caep.wire import decode_input, encode_input

    activity = parse_activity(data)
    activity_key(activity)
    activity.dedupe_key()
    decode_input(encode_input(activity))
    return True


class PolicyTarget:
    """UTF-8 text goes to `parse_policy`; other bytes are written to a file for `load_policy`
    (every fourth UTF-8 input too, so both paths see valid text)."""

    def __init__(self, workdir: Path) -> None:
        self.file = Path(tempfile.mkdtemp(prefix="policy-", dir=workdir)) / "policy.toml"

    def __call__(self, data: bytes) -> bool:
        from caep.policy import load_policy, parse_policy

        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None or (data and data[-1] % 4 == 0):
            self.file.write_bytes(data)
            load_policy(self.file)
        else:
            parse_policy(text, "fuzzed policy")
        return True


# --- seeds --------------------------------------------------------------------------------------

def valid_claims() -> dict[str, Any]:
    return {"iss": ISS, "aud": AUD, "iat": NOW - 60, "jti": "fuzz-jti-1",
            "sub_id": {"format": "email", "email": "alice@example.com"},
            "events": {REVOKED: {"initiating_entity": "policy", "event_timestamp": NOW * 1000}}}


def spec_documents() -> list[Any]:
    return [json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(SPEC_EXAMPLES.glob("*.json"))]


def spec_sets() -> list[dict[str, Any]]:
    return [d for d in spec_documents() if isinstance(d, dict)
            and isinstance(d.get("events"), dict) and isinstance(d.get("sub_id"), dict)]


def _subjects_in(value: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(value, dict):
        if isinstance(value.get("format"), str):
            found.append(value)
        for member in value.values():
            found.extend(_subjects_in(member))
    elif isinstance(value, list):
        for member in value:
            found.extend(_subjects_in(member))
    return found


def subject_seeds() -> list[bytes]:
    subjects = [s for d in spec_documents() for s in _subjects_in(d)]
    subjects += [
        {"format": "opaque", "id": "11112222333344445555"},
        {"format": "ip_addresses", "ip_addresses": ["10.29.37.75", "2001:db8::1"]},
        {"format": "uri", "uri": "https://example.com/user/1"},
        {"format": "complex", "session": {"format": "opaque", "id": "s-1"},
         "user": {"format": "email", "email": "a@example.com"}},
        {"format": "aliases", "identifiers": [{"format": "email", "email": "a@example.com"},
                                              {"format": "phone_number",
                                               "phone_number": "+12065550100"}]},
    ]
    return [json.dumps(s).encode() for s in subjects]


def activity_seeds() -> list[bytes]:
    base = {"kind": "established", "tenant": "acme", "session_id": "sess-1",
            "subject": {"format": "email", "email": "alice@example.com"},
            "observed_at": NOW}
    full = dict(base, device_id="dev-1", ip="203.0.113.7", user_agent="Mozilla/5.0",
                geo={"lat": 48.85, "lon": 2.35}, acr="urn:acr:mfa", amr=["pwd", "otp"],
                elevated_until=NOW + 600, activity_id="act-1")
    agent = dict(base, session_id="agent-1", parent_session_id="sess-1",
                 act={"sub": "agent://assistant", "act": {"sub": "agent://tool"}})
    complex_subject = dict(base, kind="presented", subject={
        "format": "complex", "user": {"format": "iss_sub", "iss": "https://idp.example.com",
                                      "sub": "u1"},
        "tenant": {"format": "opaque", "id": "acme"}})
    return [json.dumps(a).encode() for a in (base, full, agent, complex_subject,
                                             dict(base, kind="ended", ip="::1"))]


def policy_seeds() -> list[bytes]:
    default = (ROOT / "caep" / "default_policy.toml").read_bytes()
    small = (b'mode = "monitor"\n[flags]\nexport = true\n[security_flags]\nexport = false\n'
             b'[[rule]]\nname = "r"\non = ["session-revoked"]\naction = "revoke_session"\n')
    return [default, small, b'[scoring.bands]\nmedium = 10\nhigh = 20\ncritical = 30\n']


# --- the harness --------------------------------------------------------------------------------

def make_target(name: str, workdir: Path) -> tuple[Callable[[bytes], bool], list[bytes]]:
    if name == "set":
        target = SetTarget()
        return target, target.seeds()
    if name == "subject":
        return subject_target, subject_seeds()
    if name == "activity":
        return activity_target, activity_seeds()
    if name == "policy":
        return PolicyTarget(workdir), policy_seeds()
    raise SystemExit(f"unknown target {name!r}; one of {', '.join(TARGETS)}")


def checked(target: Callable[[bytes], bool], stats: Stats) -> Callable[[bytes], None]:
    """The property around a target: own errors with an RFC 8935 code only, never slow."""
    from caep.errors import CaepError, ErrorCode

    codes = {code.value for code in ErrorCode}

    def one_input(data: bytes) -> None:
        started_cpu, started_wall = time.thread_time(), time.perf_counter()
        problem = None
        try:
            target(data)
            stats.accepted += 1
        except CaepError as error:
            code = getattr(error.code, "value", None)
            if code not in codes or not isinstance(error.description, str):
                problem = f"CaepError without an RFC 8935 code: {error!r:.300}"
            else:
                stats.refused[code] += 1
        except Exception as error:
            problem = (f"{type(error).__module__}.{type(error).__name__}: {str(error)[:300]}\n"
                       + "".join(traceback.format_exception(error))[-3000:])
        cpu = time.thread_time() - started_cpu
        wall = time.perf_counter() - started_wall
        stats.execs += 1
        stats.slowest_wall = max(stats.slowest_wall, wall)  # wall time: noisy on shared cores
        if cpu > stats.slowest_cpu:
            stats.slowest_cpu = cpu
            stats.slowest_input = base64.b64encode(data[:4096]).decode()
        if problem is None and cpu > SLOW_SECONDS:
            problem = f"input took {cpu:.3f} s of CPU (limit {SLOW_SECONDS} s)"
        if problem is not None:
            stats.crashes.append({"sha1": hashlib.sha1(data).hexdigest(),
                                  "input_b64": base64.b64encode(data[:4096]).decode(),
                                  "size": len(data), "problem": problem})
            stats.write(force=True)
            raise Crash(problem)
        stats.write()

    return one_input


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--report", type=Path)
    parser.add_argument("--runs", type=int, default=-1, help="stop after this many inputs")
    args = parser.parse_args(argv)

    import atheris

    with atheris.instrument_imports(include=["caep"]):
        import caep.activity
        import caep.codec
        import caep.evaluation
        import caep.policy
        import caep.subjects
        import caep.wire  # noqa: F401

    workdir: Path = args.workdir
    corpus, seeds, artifacts = (workdir / args.target / d for d in ("corpus", "seeds",
                                                                     "artifacts"))
    for directory in (corpus, seeds, artifacts):
        directory.mkdir(parents=True, exist_ok=True)
    target, seed_inputs = make_target(args.target, workdir)
    for seed in seed_inputs:
        (seeds / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    stats = Stats(args.target, args.report)
    for seed in seed_inputs:  # every seed must pass the property before fuzzing starts
        checked(target, stats)(seed)
    atexit.register(stats.write, True)
    libfuzzer = [sys.argv[0], f"-max_total_time={args.seconds}", f"-runs={args.runs}",
                 "-timeout=10", "-rss_limit_mb=2048", f"-max_len={MAX_LEN[args.target]}",
                 f"-artifact_prefix={artifacts}{os.sep}", "-print_final_stats=1",
                 str(corpus), str(seeds)]
    atheris.Setup(libfuzzer, checked(target, stats))
    atheris.Fuzz()


if __name__ == "__main__":
    main()

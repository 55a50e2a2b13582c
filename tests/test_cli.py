"""The `caep` command as a user runs it: real processes, real broker, exit codes and output."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from tests.conftest import AUDIENCE, ISSUER, SESSION_REVOKED, Idp


def caep(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def claims_json(**overrides: object) -> str:
    claims = {
        "iss": ISSUER, "aud": AUDIENCE,
        "sub_id": {"format": "email", "email": "dave@example.com"},
        "events": {SESSION_REVOKED: {"initiating_entity": "admin"}},
    }
    claims.update(overrides)
    return orjson.dumps(claims).decode()


def test_keys_generate_sign_and_verify_round_trip(tmp_path: Path) -> None:
    private, jwks = tmp_path / "k.jwk", tmp_path / "k.jwks.json"
    assert caep("keys", "generate", "--kid", "cli-1", "--private", str(private),
                "--jwks", str(jwks)).returncode == 0
    assert "d" not in orjson.loads(jwks.read_bytes())["keys"][0]
    trust = tmp_path / "trust.toml"
    trust.write_text(f'[[issuer]]\niss = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
                     f'jwks_file = "{jwks.name}"\n', encoding="utf-8")
    signed = caep("set", "sign", "--key", str(private), stdin=claims_json())
    assert signed.returncode == 0, signed.stderr
    token = signed.stdout.strip()
    assert token.count(".") == 2

    verified = caep("set", "verify", "--trust", str(trust), token)
    assert verified.returncode == 0, verified.stdout
    decoded = orjson.loads(verified.stdout)
    assert decoded["header"] == {"alg": "RS256", "kid": "cli-1", "typ": "secevent+jwt"}
    assert decoded["claims"]["sub_id"] == {"format": "email", "email": "dave@example.com"}
    assert isinstance(decoded["claims"]["jti"], str)
    (event,) = decoded["events"]
    assert event["event_type"] == SESSION_REVOKED
    assert event["recognized"] is True
    assert event["event"] == {"initiating_entity": "admin"}
    assert event["tenant"] == ISSUER

    bad = claims_json(events={SESSION_REVOKED: {"initiating_entity": "robot"}})
    refused = caep("set", "sign", "--key", str(private), stdin=bad)
    assert refused.returncode == 2
    assert "initiating_entity" in refused.stderr and "--unchecked" in refused.stderr
    forced = caep("set", "sign", "--key", str(private), "--unchecked", stdin=bad)
    assert forced.returncode == 0
    invalid = caep("set", "verify", "--trust", str(trust), forced.stdout.strip())
    assert orjson.loads(invalid.stdout)["err"] == "invalid_request"

    wrong = caep("set", "sign", "--key", str(private), "--aud", "https://elsewhere.example",
                 stdin=claims_json())
    rejected = caep("set", "verify", "--trust", str(trust), "-", stdin=wrong.stdout)
    assert rejected.returncode == 2
    assert orjson.loads(rejected.stdout)["err"] == "invalid_audience"


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    bad_trust = tmp_path / "bad.toml"
    bad_trust.write_text("[[issuer]]\niss = 3\n", encoding="utf-8")
    for args in (
        ("set", "verify", "token"),
        ("set", "verify", "--trust", str(bad_trust), "token"),
        ("worker", "--bootstrap", "127.0.0.1:1", "--trust", str(bad_trust)),
        ("set", "sign", "--key", str(tmp_path / "missing.jwk")),
        ("publish", "--topic", "x"),
    ):
        result = caep(*args, stdin="{}", env={"CAEP_TRUST_FILE": "", "CAEP_BOOTSTRAP": ""})
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("caep: error: "), (args, result.stderr)
        assert result.stderr.strip().count("\n") == 0, (args, result.stderr)


def test_publish_and_watch_move_records_through_the_broker(bootstrap: str, idp: Idp) -> None:
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    token = idp.sign(idp.claims({"format": "email", "email": "erin@example.com"}))
    published = caep("publish", "--bootstrap", bootstrap, "--topic", topic, "--key", "k1", "-",
                     stdin=f"{token}\n\n{{\"hello\": 1}}\n")
    assert published.returncode == 0, published.stderr
    assert "published 2 record(s)" in published.stderr
    watched = caep("watch", "--bootstrap", bootstrap, "--topic", topic, "--count", "2",
                   "--timeout", "20")
    assert watched.returncode == 0, watched.stderr
    records = [orjson.loads(line) for line in watched.stdout.splitlines()]
    assert [r["value"] for r in records if r["partition"] == records[0]["partition"]] == [
        token, {"hello": 1}]
    assert {r["key"] for r in records} == {"k1"}


DEMO_ENV = {"CAEP_BOOTSTRAP": "", "CAEP_GROUP_SESSION_TIMEOUT_SECONDS": "6"}


def test_demo_runs_the_whole_loop_and_stops_cleanly() -> None:
    result = caep("demo", "--duration", "8", "--rate", "80", "--users", "40", "--agents", "4",
                  "--timeout", "60", env=DEMO_ENV, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    summary = {line.split(" ", 2)[1]: line for line in lines if line.startswith("demo: ")}
    published = re.search(r"published (\d+) records \((\d+) SETs, (\d+) activities\)",
                          summary["published"])
    assert published and int(published[2]) > 0 and int(published[3]) > 0, lines
    decided = summary[next(k for k in summary if k[0].isdigit())]
    assert "revoke_session" in decided and "set_flags" in decided, decided
    assert re.search(r"latency p50 \d+ ms, p99 \d+ ms", summary["latency"]), summary
    answered = summary["example"]
    assert "200 served" in answered and "401 revoked" in answered, answered
    assert lines[-1] == "demo: stopped the worker, the service and the broker"
    assert any(line.startswith("dashboard: http://127.0.0.1:") for line in lines)


def test_ctrl_c_stops_the_demo_and_everything_it_started() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "demo", "--duration", "600", "--users", "20",
         "--agents", "2"], env=dict(os.environ, **DEMO_ENV), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("dashboard:"):
            break
    worker = next(int(m[1]) for line in output if (m := re.search(r"pid (\d+)", line)))
    time.sleep(1)  # the live phase is under way: that is what Ctrl-C must interrupt
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 130, "".join(output) + rest
    assert "demo: interrupted" in rest.splitlines()
    assert "Unclosed" not in rest, rest
    assert rest.splitlines()[-1] == "demo: stopped the worker, the service and the broker"
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)

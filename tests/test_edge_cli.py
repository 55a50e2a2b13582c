"""`caep edge` as an operator runs it: its own embedded broker, a real port, clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from streams.broker import free_port
from tests.conftest import Idp
from tests.edge_support import PUSH_TOKEN, bearer, topic_size, write_edge_file


def _push_one_and_stop(process: subprocess.Popen[str], idp: Idp, port: int, email: str,
                       keys: Path) -> None:
    """The edge process is ready on `port`: one pushed SET is accepted, the key file exists
    (generated on first start, kept), and SIGTERM stops the edge cleanly."""
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.strip() == f"caep: edge ready on http://127.0.0.1:{port}", ready
        token = idp.sign(idp.claims({"format": "email", "email": email}))
        answer = httpx.post(f"http://127.0.0.1:{port}/ssf/push", content=token, timeout=30,
                            headers={"Content-Type": "application/secevent+jwt",
                                     **bearer(PUSH_TOKEN)})
        assert answer.status_code == 202, answer.text
        assert keys.is_file()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_edge_command_runs_on_an_embedded_broker_and_accepts_a_push(
    idp: Idp, tmp_path: Path
) -> None:
    port = free_port()
    env = dict(os.environ, CAEP_BOOTSTRAP="", CAEP_EDGE_KEY_FILE=str(tmp_path / "keys.json"),
               CAEP_PRODUCER_IDEMPOTENCE="false", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "edge", "--trust", str(idp.trust_file),
         "--port", str(port), "--config", str(write_edge_file(tmp_path))],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL)
    assert process.stdout is not None
    first = process.stdout.readline()  # the embedded broker it started
    assert first.startswith("bootstrap=127.0.0.1:"), first
    _push_one_and_stop(process, idp, port, "op@example.com", tmp_path / "keys.json")


def test_edge_command_on_a_given_broker_with_settings_from_the_environment(
    bootstrap: str, idp: Idp, tmp_path: Path
) -> None:
    """`caep edge --bootstrap HOST:PORT --trust FILE --port N`: no embedded broker is started,
    the other settings come from the same `CAEP_*` variables (here the topic and the key
    file), and a pushed SET lands on that broker's topic."""
    port = free_port()
    topic = f"cli-{uuid.uuid4().hex[:8]}.security-events"
    env = dict(os.environ, CAEP_EDGE_KEY_FILE=str(tmp_path / "keys.json"),
               CAEP_PRODUCER_IDEMPOTENCE="false", PYTHONUNBUFFERED="1",
               CAEP_TOPIC_SECURITY_EVENTS=topic, CAEP_APP_ID=f"cli-{uuid.uuid4().hex[:8]}",
               CAEP_TOPIC_SSF_STREAMS=f"{topic}.streams", CAEP_EDGE_CONFIG_FILE=str(
                   write_edge_file(tmp_path)))
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "edge", "--bootstrap", bootstrap,
         "--trust", str(idp.trust_file), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL)
    _push_one_and_stop(process, idp, port, "ops@example.com", tmp_path / "keys.json")
    assert topic_size(bootstrap, topic) == 1


def test_edge_command_without_trust_is_one_line(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "edge", "--port", str(free_port())],
        capture_output=True, text=True, timeout=30,
        env={k: v for k, v in os.environ.items() if k != "CAEP_TRUST_FILE"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "caep: error: no trust file: pass --trust FILE or set CAEP_TRUST_FILE")
    assert time.monotonic() - started < 30


def test_key_rotation_from_the_command_line(tmp_path: Path) -> None:
    env = dict(os.environ, CAEP_EDGE_KEY_FILE=str(tmp_path / "keys.json"))

    def edge(*flags: str) -> list[str]:
        result = subprocess.run([sys.executable, "-m", "streams.cli", "edge", *flags],
                                capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout.split("\n")

    first = edge("--rotate-key")
    signing = first[0].removeprefix("signing key: ")
    assert first[1].startswith(f"published: {signing} ")  # the new key and the first one
    assert len(first[1].split()) == 3
    retired = edge("--retire-old-keys")
    assert retired[:2] == [f"signing key: {signing}", f"published: {signing}"]

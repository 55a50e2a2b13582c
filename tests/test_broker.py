"""The embedded broker: starts, answers Kafka metadata, fails in one clear line, stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from caep.errors import BrokerError
from streams.broker import EmbeddedBroker, free_port, metadata_answers


def test_embedded_broker_answers_metadata_and_stops() -> None:
    with EmbeddedBroker() as broker:
        host, port = broker.bootstrap.split(":")
        assert metadata_answers(host, int(port))
        assert broker.alive()
    assert not broker.alive()
    assert not metadata_answers(host, int(port), timeout=0.5)


def test_taken_port_is_a_clear_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} .* already in use"):
            EmbeddedBroker(port=port).start()


def test_metadata_probe_rejects_a_server_that_is_not_kafka() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not metadata_answers("127.0.0.1", port, timeout=0.3)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_cli_broker_taken_port_is_one_line_without_traceback() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli("broker", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_broker_missing_binary_is_one_line() -> None:
    env = dict(os.environ, CAEP_TANSU_BIN="/nonexistent/tansu")
    result = run_cli("broker", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "caep: error: CAEP_TANSU_BIN=/nonexistent/tansu is not an executable file")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cli_broker_stops_cleanly_on_a_signal_sent_the_moment_the_line_is_read(
        signum: int) -> None:
    """A supervisor may signal as soon as it has the bootstrap line: exit 0, not 130."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "streams.cli", "broker", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"bootstrap=127.0.0.1:{port}"
        process.send_signal(signum)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cli_broker_prints_bootstrap_and_stops_on_signal(signum: int) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "streams.cli", "broker", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line == f"bootstrap=127.0.0.1:{port}"
        assert metadata_answers("127.0.0.1", port)
        process.send_signal(signum)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 5
    while metadata_answers("127.0.0.1", port, timeout=0.2) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not metadata_answers("127.0.0.1", port, timeout=0.2), "tansu outlived caep broker"

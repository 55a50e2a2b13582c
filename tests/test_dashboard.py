"""The worker's dashboard, its live feed and its Prometheus metrics, on a real worker and broker,
and what a user sees of a revocation in headless Chromium."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import (
    ISSUER,
    SESSION_REVOKED,
    Idp,
    Topics,
    WorkerProcess,
    produce,
    start_worker,
    stop_worker,
)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def activity(email: str, session: str, kind: str = "established") -> bytes:
    return orjson.dumps({"kind": kind, "tenant": ISSUER, "session_id": session,
                         "subject": {"format": "email", "email": email},
                         "observed_at": time.time()})


def revocation(idp: Idp, email: str, session: str) -> bytes:
    subject = {"format": "complex", "user": {"format": "email", "email": email},
               "session": {"format": "opaque", "id": session}}
    return idp.sign(idp.claims(subject)).encode()


def wait_for(condition: Callable[[], Any], within: float, what: str) -> Any:
    """Observe `condition` until it returns something truthy; fail after `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {within} s: {what}")


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from a Prometheus exposition, by name and (some) labels."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match[3])
    return None


@pytest.fixture(scope="module")
def engine(bootstrap: str, idp: Idp, topics: Topics) -> Iterator[WorkerProcess]:
    """This module's worker logs JSON lines, so the tests can read its decisions' fields."""
    worker = start_worker(bootstrap, idp.trust_file, topics, CAEP_LOG_FORMAT="json")
    try:
        worker.wait_ready()
        yield worker
    finally:
        stop_worker(worker)


@pytest.fixture
def web(engine: WorkerProcess) -> Iterator[httpx.Client]:
    assert engine.web, "the worker printed no web address"
    with httpx.Client(base_url=engine.web, timeout=5) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="caep-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def live_sessions(web: httpx.Client) -> int:
    return int(web.get("/api/overview").json()["sessions"].get(ISSUER, {}).get("low", 0))


def test_metrics_count_inputs_decisions_and_sessions(
        bootstrap: str, idp: Idp, topics: Topics, web: httpx.Client) -> None:
    email, session = f"mia-{uuid.uuid4().hex[:6]}@example.com", "mia-1"
    before = live_sessions(web)
    produce(bootstrap, topics.session_activity, [activity(email, session)], key=email.encode())
    wait_for(lambda: live_sessions(web) == before + 1, 10, "the session counted live")
    produce(bootstrap, topics.security_events, [revocation(idp, email, session)],
            key=email.encode())
    wait_for(lambda: live_sessions(web) == before, 10, "the revoked session no longer live")

    text = web.get("/metrics").text
    assert web.get("/metrics").headers["content-type"].startswith("text/plain")
    assert (metric(text, "caep_events_in_total", type="session-revoked", outcome="accepted")
            or 0) >= 1
    assert (metric(text, "caep_events_in_total", type="activity:established",
                   outcome="accepted") or 0) >= 1
    assert (metric(text, "caep_decisions_total", action="revoke_session", enforced="true")
            or 0) >= 1
    assert (metric(text, "caep_end_to_end_seconds_count") or 0) >= 1
    assert (metric(text, "caep_evaluation_seconds_count") or 0) >= 2
    assert metric(text, "caep_live_sessions", tenant=ISSUER) == before
    lags = [line for line in text.splitlines() if line.startswith("caep_consumer_lag{")]
    assert any(topics.engine_input in line for line in lags), lags

    produce(bootstrap, topics.security_events, [b"not a token"], key=b"garbage")
    wait_for(lambda: metric(web.get("/metrics").text, "caep_dead_letters_total",
                            code="invalid_request"), 10, "the dead letter counted")


def test_the_feed_and_the_timeline_explain_a_revocation(
        bootstrap: str, idp: Idp, topics: Topics, web: httpx.Client,
        engine: WorkerProcess) -> None:
    email, session = f"noa-{uuid.uuid4().hex[:6]}@example.com", "noa-1"
    produce(bootstrap, topics.session_activity, [activity(email, session)], key=email.encode())
    frames: list[str] = []
    with web.stream("GET", "/api/stream", timeout=15) as feed:
        lines = feed.iter_lines()
        assert next(lines) == "event: overview"
        produce(bootstrap, topics.security_events, [revocation(idp, email, session)],
                key=email.encode())
        deadline = time.monotonic() + 10
        for line in lines:
            frames.append(line)
            if line.startswith("data: ") and session in line and '"revoke_session"' in line:
                break
            assert time.monotonic() < deadline, "no decision on the feed within 10 s"
    decision = orjson.loads(frames[-1][len("data: "):])
    assert frames[-2] == "event: decision"
    assert (decision["action"], decision["session_id"]) == ("revoke_session", session)

    found = web.get("/api/session", params={"key": decision["subject_key"], "session": session})
    assert found.status_code == 200, found.text
    story = found.json()
    assert story["status"] == "revoked"
    assert [e["action"] for e in story["events"] if e["kind"] == "decision"] == [
        "revoke_session"]
    assert any(SESSION_REVOKED in reason for e in story["events"] for reason in e["reasons"])
    missing = web.get("/api/session", params={"key": decision["subject_key"], "session": "x"})
    assert missing.status_code == 404 and "no session" in missing.json()["error"]
    assert web.get("/api/session").status_code == 400

    logged = [orjson.loads(line) for line in list(engine.output) if line.startswith("{")]
    lines = [entry for entry in logged if entry.get("decision_id") == decision["decision_id"]]
    assert lines, "no JSON log line for the decision"
    assert (lines[0]["jti"], lines[0]["subject_key"], lines[0]["level"]) == (
        decision["source_jti"], decision["subject_key"], "info")


def click(found: tuple[WebElement, str] | None) -> bool:
    """Click a row found, for WebDriverWait: False (try again) while there is none."""
    if found is None:
        return False
    found[0].click()
    return True


def test_a_user_watching_the_dashboard_sees_the_revocation_happen(
        bootstrap: str, idp: Idp, topics: Topics, web: httpx.Client,
        browser: WebDriver) -> None:
    email, session = f"ola-{uuid.uuid4().hex[:6]}@example.com", f"ola-{uuid.uuid4().hex[:4]}"
    produce(bootstrap, topics.session_activity, [activity(email, session)], key=email.encode())
    live = wait_for(lambda: live_sessions(web), 10, "a live session")

    browser.get(str(web.base_url.join("/dashboard")))
    # the page redraws its tables as updates arrive: a row found may be replaced before it is read
    wait = WebDriverWait(browser, 10, ignored_exceptions=[StaleElementReferenceException])
    wait.until(lambda b: b.find_element(By.ID, "status").text == "live")
    row = f"#sessions tr[data-tenant='{ISSUER}']"

    def low_count(b: WebDriver) -> str:
        cells = b.find_elements(By.CSS_SELECTOR, f"{row} td.band-low")
        return cells[0].text if cells else ""

    wait.until(lambda b: low_count(b) == str(live))

    produce(bootstrap, topics.security_events, [revocation(idp, email, session)],
            key=email.encode())
    def decision_row(b: WebDriver) -> tuple[WebElement, str] | None:
        for r in b.find_elements(By.CSS_SELECTOR, "#decisions tbody tr"):
            text = r.text
            if session in text and "revoke_session" in text:
                return r, text
        return None

    _, text = wait.until(decision_row)
    assert SESSION_REVOKED in text, "the decision's reason is shown"
    wait.until(lambda b: low_count(b) == str(live - 1))
    assert browser.find_element(By.ID, "live").text == str(live - 1)

    wait.until(lambda b: click(decision_row(b)))
    wait.until(lambda b: "status revoked" in b.find_element(By.ID, "timeline").text)
    timeline = browser.find_element(By.ID, "timeline").text
    assert "revoke_session" in timeline and SESSION_REVOKED in timeline
    assert browser.find_element(By.ID, "timeline-title").text == session

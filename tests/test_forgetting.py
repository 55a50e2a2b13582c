"""A revoked session leaves the worker's table once no token of it can be valid any more.

The pure rule (`caep.evaluation.forget_at`) is checked by the evaluation state machine in
tests/test_evaluation_properties.py; this checks the worker wires it up: the deadline index
names the forget time, the timer sends the tick, and the table's changelog shows the session
gone, while the subject's record stays.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import (
    Idp,
    collect,
    fresh_topics,
    produce,
    start_worker,
    stop_worker,
    write_policy,
)

ABSOLUTE = 4
SKEW = 1


def test_a_revoked_session_is_forgotten_after_its_absolute_lifetime(
        bootstrap: str, idp: Idp, tmp_path: Path) -> None:
    topics = fresh_topics(bootstrap)
    app_id = f"caep-forget-{uuid.uuid4().hex[:8]}"
    worker = start_worker(bootstrap, idp.trust_file, topics, CAEP_APP_ID=app_id,
                          CAEP_POLICY_FILE=str(write_policy(
                              tmp_path, absolute_seconds=ABSOLUTE, clock_skew_seconds=SKEW)),
                          CAEP_TICK_INTERVAL_SECONDS="0.2")
    try:
        worker.wait_ready()
        subject = {"format": "complex", "user": {"format": "opaque", "id": "forgetful"},
                   "session": {"format": "opaque", "id": "s-1"}}
        claims = idp.claims(subject)
        produce(bootstrap, topics.security_events, [idp.sign(claims).encode()],
                key=b"forgetful")
        revoked_by = time.time()

        def sessions(record: dict[str, Any]) -> list[str] | None:
            value = record["value"]
            if not isinstance(value, dict) or "x" not in value:
                return None
            return [session[0] for session in value["x"]]

        def forgotten(records: list[dict[str, Any]]) -> bool:
            seen = [s for s in map(sessions, records) if s is not None]
            return ["s-1"] in seen and seen[-1] == []

        records = collect(bootstrap, f"{app_id}-subjects-changelog", forgotten, timeout=60.0)
        history = [s for s in map(sessions, records) if s is not None]
        assert ["s-1"] in history, f"the revocation never reached the table: {history}"
        assert history[-1] == [], (
            f"the revoked session is still in the table after {len(history)} writes "
            f"(last: {history[-3:]}); worker said:\n" + "".join(worker.output[-20:]))
        gone = next(r for r in records if sessions(r) == [])
        assert gone["timestamp_ms"] / 1000 >= revoked_by + ABSOLUTE, (
            "forgotten before its absolute lifetime had passed")
    finally:
        stop_worker(worker)

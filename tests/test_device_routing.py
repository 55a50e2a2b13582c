"""An event about a device alone reaches every subject using that device, via the device index."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from tests.conftest import (
    ISSUER,
    Idp,
    collect,
    fresh_topics,
    produce,
    start_worker,
    stop_worker,
)

COMPLIANCE = "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change"


def established(user: str, session: str, device: str, at: float) -> bytes:
    return orjson.dumps({"kind": "established", "tenant": ISSUER, "session_id": session,
                         "subject": {"format": "email", "email": f"{user}@example.com"},
                         "observed_at": at, "device_id": device})


def test_device_out_of_compliance_reaches_every_session_on_it(bootstrap: str, idp: Idp) -> None:
    topics = fresh_topics(bootstrap)
    worker = start_worker(bootstrap, idp.trust_file, topics,
                          CAEP_APP_ID=f"caep-devices-{uuid.uuid4().hex[:8]}")
    try:
        worker.wait_ready()
        now = time.time()
        produce(bootstrap, topics.session_activity, [
            established("ann", "ann-1", "shared-kiosk", now),
            established("ben", "ben-1", "shared-kiosk", now),
            established("cat", "cat-1", "own-laptop", now),
        ])

        def indexed(records: list[dict[str, Any]]) -> bool:
            users = {r["value"]["subject_key"] for r in records
                     if r["key"].endswith("shared-kiosk")}
            return len(users) == 2

        collect(bootstrap, topics.device_index, indexed)
        device_only = {"format": "complex",
                       "device": {"format": "opaque", "id": "shared-kiosk"}}
        claims = idp.claims(device_only, event_type=COMPLIANCE, event={
            "previous_status": "compliant", "current_status": "not-compliant",
            "event_timestamp": int(now * 1000)})
        produce(bootstrap, topics.security_events, [idp.sign(claims).encode()])

        def restricted(records: list[dict[str, Any]]) -> bool:
            return {"ann-1", "ben-1"} <= {r["value"]["session_id"] for r in records
                                          if r["value"]["source_jti"] == claims["jti"]}

        decisions = [r["value"] for r in collect(bootstrap, topics.decisions, restricted)]
        mine = [d for d in decisions if d["source_jti"] == claims["jti"]]
        assert {d["session_id"] for d in mine} == {"ann-1", "ben-1"}
        assert {d["rule"] for d in mine} == {"device-out-of-compliance"}
        assert all(d["flags"]["admin.console"] is False for d in mine)
    finally:
        stop_worker(worker)

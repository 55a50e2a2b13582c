"""Two workers in one consumer group on the real broker run a scripted scenario end to end."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from tests.conftest import (
    ISSUER,
    Idp,
    collect,
    fresh_topics,
    start_worker,
    stop_worker,
)

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
USERS = [f"user{n}" for n in range(8)]


def subject(user: str) -> dict[str, Any]:
    return {"format": "email", "email": f"{user}@example.com"}


def activity(user: str, kind: str, session: str, at: float, **extra: Any) -> bytes:
    return orjson.dumps({"kind": kind, "tenant": ISSUER, "subject": subject(user),
                         "session_id": session, "observed_at": at, **extra})


def sign(idp: Idp, user: str, event: str, payload: dict[str, Any], at: float,
         session: str | None = None) -> bytes:
    sub_id: dict[str, Any] = subject(user)
    if session is not None:
        sub_id = {"format": "complex", "user": subject(user),
                  "session": {"format": "opaque", "id": session}}
    claims = idp.claims(sub_id, event_type=CAEP + event,
                        event={**payload, "event_timestamp": int(at * 1000)})
    return idp.sign(claims).encode()


Scenario = tuple[list[tuple[bytes, str, bytes]], set[tuple[str, str]]]


def scenario(idp: Idp, start: float, elevation_seconds: float = 6.0) -> Scenario:
    """(key, topic kind, value) records, and the (action, session) decisions they must cause.

    Each user's admin session is elevated just in time until `elevation_seconds` after start;
    the expiry must be decided with no event arriving. The window must outlast the time it
    takes to report the session, or there is no elevation left to expire.
    """
    setup: list[tuple[bytes, str, bytes]] = []
    for user in USERS:
        key = user.encode()
        setup += [
            (key, "activity", activity(user, "established", f"{user}-web", start,
                                       device_id="laptop", user_agent="Firefox/140",
                                       geo={"lat": 48.85, "lon": 2.35})),
            (key, "activity", activity(user, "established", f"{user}-agent", start + 1,
                                       parent_session_id=f"{user}-web",
                                       act={"sub": f"agent-{user}"})),
            (key, "activity", activity(user, "established", f"{user}-admin", start + 2,
                                       elevated_until=start + elevation_seconds)),
        ]
    signals = [
        (b"user0", "activity", activity("user0", "presented", "user0-web", start + 5,
                                        device_id="phone")),
        (b"user1", "set", sign(idp, "user1", "risk-level-change",
                               {"principal": "USER", "current_level": "HIGH"}, start + 5)),
        (b"user2", "set", sign(idp, "user2", "credential-change",
                               {"credential_type": "password", "change_type": "update"},
                               start + 5)),
        (b"user3", "set", sign(idp, "user3", "session-revoked", {}, start + 5,
                               session="user3-web")),
        (b"user4", "activity", activity("user4", "presented", "user4-web", start + 5,
                                        user_agent="curl/8", device_id="unknown-box")),
    ]
    expected = {
        ("set_flags", "user0-web"),
        ("step_up", "user1-web"), ("step_up", "user1-agent"), ("step_up", "user1-admin"),
        ("revoke_subject", ""), ("revoke_session", "user2-web"),
        ("revoke_session", "user2-agent"), ("revoke_session", "user2-admin"),
        ("revoke_session", "user3-web"), ("revoke_session", "user3-agent"),
        ("step_up", "user4-web"), ("set_flags", "user4-web"),
    }
    for user in USERS:
        expected.add(("set_flags", f"{user}-admin"))  # elevated when established
        if user != "user2":  # user2's sessions are revoked first
            expected.add(("elevation-expired", f"{user}-admin"))
    return setup + signals, expected


def publish_scenario(bootstrap: str, topics: Any, records: list[tuple[bytes, str, bytes]],
                     rng: random.Random) -> None:
    """Every record three times; users interleaved at random, each user's records in order.

    One producer, each record acknowledged before the next is sent: the whole scenario must be
    on the broker well within the elevation window, even on a loaded machine."""
    per_user: dict[bytes, list[tuple[str, bytes]]] = {}
    for key, kind, value in records:
        per_user.setdefault(key, []).extend([(kind, value)] * 3)
    queue = [key for key, items in per_user.items() for _ in items]
    rng.shuffle(queue)
    cursors = dict.fromkeys(per_user, 0)
    ordered: list[tuple[str, bytes, bytes]] = []
    for key in queue:
        kind, value = per_user[key][cursors[key]]
        cursors[key] += 1
        topic = topics.session_activity if kind == "activity" else topics.security_events
        ordered.append((topic, key, value))

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for topic, key, value in ordered:
                await producer.send_and_wait(topic, value=value, key=key)
        finally:
            await producer.stop()

    asyncio.run(run())


def decided(records: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(action, session) of each decision, and (rule, session) for JIT elevation expiries."""
    found = set()
    for record in records:
        value = record["value"]
        found.add((value["action"], value["session_id"] or ""))
        if value["rule"] == "elevation-expired":
            found.add(("elevation-expired", value["session_id"]))
    return found


def wait_for(bootstrap: str, topic: str, expected: set[tuple[str, str]],
             timeout: float = 90.0) -> list[dict[str, Any]]:
    return collect(bootstrap, topic, lambda rs: expected <= decided(rs), timeout=timeout)


def test_two_workers_decide_the_scenario(bootstrap: str, idp: Idp) -> None:
    topics = fresh_topics(bootstrap)
    app_id = f"caep-scenario-{uuid.uuid4().hex[:8]}"
    workers = [start_worker(bootstrap, idp.trust_file, topics, CAEP_APP_ID=app_id)
               for _ in range(2)]
    try:
        for worker in workers:
            worker.wait_ready()
        records, expected = scenario(idp, time.time())
        publish_scenario(bootstrap, topics, records, random.Random(7))
        got = wait_for(bootstrap, topics.decisions, expected)
        assert expected <= decided(got), (
            f"missing {expected - decided(got)}\n" + "".join(workers[0].output[-20:]))
        revocations = {d for d in decided(got) if d[0].startswith("revoke_")}
        assert revocations == {d for d in expected if d[0].startswith("revoke")}
        by_cause: dict[tuple[str, str, str], set[str]] = {}
        for r in got:
            v = r["value"]
            by_cause.setdefault((v["action"], v["session_id"] or "", v["rule"] or ""),
                                set()).add(v["decision_id"])
        assert all(len(ids) == 1 for ids in by_cause.values()), "one decision id per effect"

        expired = [f"{user}-admin" for user in USERS if user != "user2"]

        def settled(rs: list[dict[str, Any]]) -> bool:
            latest = {r["key"]: r["value"]["flags"] for r in rs}
            return all(latest.get(s, {}).get("elevated") is False for s in expired) and (
                {"user0-web", "user1-web", "user4-web"} <= set(latest))

        flags = collect(bootstrap, topics.flags, settled)
        latest = {r["key"]: r["value"]["flags"] for r in flags}
        assert latest["user0-web"] == {"downloads.enabled": False, "admin.console": True,
                                       "elevated": False}, "new device: medium risk"
        assert latest["user1-web"]["downloads.enabled"] is False, "IdP risk high"
        assert latest["user1-agent"]["downloads.enabled"] is False, "subject-wide risk"
        assert latest["user4-web"]["downloads.enabled"] is False, "hijack suspicion"
        assert all(latest[s]["elevated"] is False for s in expired), "JIT elevation expired"
        assert "user2-web" not in latest, "revoked sessions get no flag updates"
        assert all(r["value"]["subject_key"].startswith(ISSUER) for r in flags)
        assert all(w.process.poll() is None for w in workers)
    finally:
        for worker in workers:
            stop_worker(worker)

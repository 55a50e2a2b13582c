"""The worker's live dashboard and metrics, on faust's own web server.

    /dashboard          the page (streams/dashboard.html): updates itself from /api/stream
    /api/overview       live sessions by tenant and band, per-rule counts, lag (JSON)
    /api/decisions      recent decisions, newest first (JSON)
    /api/session        one session's timeline: ?key=SUBJECT_KEY&session=ID (JSON; asked of
                        the worker that holds the subject's partition, faust routes it there)
    /api/stream         server-sent events: `decision` as each is published, `overview` every
                        second
    /metrics            Prometheus

A worker shows the partitions it holds; with several workers each shows its share and
Prometheus sums them. Recent decisions are this worker's since it started (a bounded ring).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import faust
import orjson
from aiohttp import web

from caep.decisions import Decision
from caep.overview import BandCounts, apply_change, by_tenant, timeline
from caep.policy import Policy
from caep.state import SubjectState
from streams.metrics import CONTENT_TYPE, EngineMetrics

PAGE = Path(__file__).with_name("dashboard.html")
BANDS = ("low", "medium", "high", "critical")
RECENT = 200
SUBSCRIBER_QUEUE = 256


class Board:
    """What the dashboard shows, kept current by the agents as they publish."""

    def __init__(self, policy: Policy, lag: Callable[[], Iterable[tuple[str, int, int]]]) -> None:
        self.policy = policy
        self.lag = lag
        self.bands: BandCounts = Counter()
        self.tenants: set[str] = set()  # seen since start: a tenant with no session shows 0
        self.rules: Counter[tuple[str, bool]] = Counter()
        self.recent: deque[Decision] = deque(maxlen=RECENT)
        self._subscribers: set[asyncio.Queue[bytes]] = set()

    def live_by_tenant(self) -> dict[str, int]:
        totals: Counter[str] = Counter(dict.fromkeys(self.tenants, 0))
        for (tenant, _band), count in self.bands.items():
            totals[tenant] += count
        return dict(totals)

    def evaluated(self, before: SubjectState | None, after: SubjectState) -> None:
        self.tenants.add(after.tenant)
        apply_change(self.bands, before, after, self.policy.scoring)

    def rebuild(self, states: Iterable[SubjectState]) -> None:
        """After a recovery: count the partitions this worker holds now."""
        self.bands.clear()
        for state in states:
            self.tenants.add(state.tenant)
            apply_change(self.bands, None, state, self.policy.scoring)

    def decided(self, decisions: Iterable[Decision]) -> None:
        for decision in decisions:
            self.recent.append(decision)
            if decision.rule is not None:
                self.rules[(decision.rule, decision.enforced)] += 1
            self._broadcast(b"decision", decision.to_json())

    def overview(self) -> dict[str, Any]:
        rules: dict[str, dict[str, int]] = {}
        for (rule, enforced), count in sorted(self.rules.items()):
            rules.setdefault(rule, {"enforced": 0, "monitor": 0})[
                "enforced" if enforced else "monitor"] = count
        return {
            "at": time.time(), "bands": list(BANDS),
            "sessions": by_tenant(self.bands, BANDS, self.tenants),
            "live": sum(self.bands.values()),
            "rules": rules, "mode": self.policy.mode.value,
            "lag": [{"topic": t, "partition": p, "lag": n} for t, p, n in self.lag()],
        }

    def subscribe(self) -> asyncio.Queue[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes]) -> None:
        self._subscribers.discard(queue)

    def _broadcast(self, event: bytes, data: bytes) -> None:
        frame = b"event: " + event + b"\ndata: " + data + b"\n\n"
        for queue in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):  # a stalled page misses, never blocks
                queue.put_nowait(frame)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def install(app: faust.App, board: Board, metrics: EngineMetrics, subjects: Any) -> None:
    """Register the dashboard's pages on the app's web server."""

    @app.page("/dashboard")  # type: ignore[arg-type]
    async def page(_view: Any, _request: web.Request) -> web.Response:
        return web.Response(body=PAGE.read_bytes(), content_type="text/html", charset="utf-8")

    @app.page("/api/overview")  # type: ignore[arg-type]
    async def overview(_view: Any, _request: web.Request) -> web.Response:
        return _json(board.overview())

    @app.page("/api/decisions")  # type: ignore[arg-type]
    async def decisions(_view: Any, _request: web.Request) -> web.Response:
        return _json([d.model_dump(mode="json") for d in reversed(board.recent)])

    @app.table_route(table=subjects, query_param="key")  # type: ignore[arg-type]
    async def owned_session(_view: Any, request: web.Request) -> web.Response:
        """Runs on the worker holding the key's partition; faust forwards the request there."""
        key, session_id = request.query["key"], request.query["session"]
        stored = subjects.get(key.encode())
        if stored is None:
            return _json({"error": f"no subject {key!r} in this worker's partitions"}, 404)
        found = timeline(SubjectState.from_bytes(stored), session_id, board.recent,
                         board.policy.scoring, time.time())
        if found is None:
            return _json({"error": f"subject {key!r} has no session {session_id!r}"}, 404)
        return _json(found)

    @app.page("/api/session")  # type: ignore[arg-type]
    async def session(view: Any, request: web.Request) -> web.Response:
        if not request.query.get("key") or not request.query.get("session"):
            return _json({"error": "give key (the subject key) and session"}, 400)
        return cast(web.Response, await owned_session(view, cast(Any, request)))

    @app.page("/api/stream")  # type: ignore[arg-type]
    async def stream(_view: Any, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        queue = board.subscribe()
        try:
            await response.write(b"event: overview\ndata: " + orjson.dumps(board.overview())
                                 + b"\n\n")
            while not app.should_stop:
                try:
                    frame = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    frame = b"event: overview\ndata: " + orjson.dumps(board.overview()) + b"\n\n"
                await response.write(frame)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            board.unsubscribe(queue)
        return response

    @app.page("/metrics")  # type: ignore[arg-type]
    async def prometheus(_view: Any, _request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

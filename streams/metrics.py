"""The worker's Prometheus metrics, served at `/metrics`.

Each worker reports what it processed and the partitions it holds; Prometheus sums workers.
One registry per app, so several apps in one process (tests) never share a counter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from caep.decisions import Decision

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Offsets = Callable[[], Iterable[tuple[str, int, int]]]  # (topic, partition, lag)


class _Gauges(Collector):
    """Gauges read when scraped, from state the worker keeps anyway: nothing to keep in sync."""

    def __init__(self, live: Callable[[], Mapping[str, int]], lag: Offsets) -> None:
        self._live = live
        self._lag = lag

    def collect(self) -> Iterator[Metric]:
        live = GaugeMetricFamily("caep_live_sessions",
                                 "Active sessions in the partitions this worker holds.",
                                 labels=["tenant"])
        for tenant, count in sorted(self._live().items()):
            live.add_metric([tenant], count)
        yield live
        lag = GaugeMetricFamily("caep_consumer_lag",
                                "Records not yet processed, per input partition held.",
                                labels=["topic", "partition"])
        for topic, partition, behind in self._lag():
            lag.add_metric([topic, str(partition)], behind)
        yield lag


class EngineMetrics:
    """Counters and histograms the agents update as they go."""

    def __init__(self, live: Callable[[], Mapping[str, int]], lag: Offsets) -> None:
        self.registry = CollectorRegistry()
        self.events_in = Counter(
            "caep_events_in", "Inputs taken in, by type (SET event name or activity kind) and "
            "outcome (accepted, duplicate, or the RFC 8935 error code).",
            ["type", "outcome"], registry=self.registry)
        self.decisions = Counter(
            "caep_decisions", "Decisions published, by action, rule and whether enforced.",
            ["action", "rule", "enforced"], registry=self.registry)
        self.dead_letters = Counter(
            "caep_dead_letters", "Inputs sent to the dead-letter topic, by error code.",
            ["code"], registry=self.registry)
        self.evaluated_on_arrival = Counter(
            "caep_evaluated_on_arrival", "SET inputs evaluated by the ingest agent, without "
            "the hop through engine-input (their records were keyed by their subject).",
            registry=self.registry)
        self.evaluation_seconds = Histogram(
            "caep_evaluation_seconds", "Time of one pure evaluation (state, input -> decisions).",
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
            registry=self.registry)
        self.end_to_end_seconds = Histogram(
            "caep_end_to_end_seconds", "From an input's arrival on its topic to its decisions "
            "being published.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 15.0),
            registry=self.registry)
        self.registry.register(_Gauges(live, lag))

    def decided(self, decisions: Iterable[Decision], arrived_at: float | None) -> None:
        made = False
        for decision in decisions:
            made = True
            self.decisions.labels(decision.action.value, decision.rule or "",
                                  "true" if decision.enforced else "false").inc()
        if made and arrived_at is not None:
            self.end_to_end_seconds.observe(max(0.0, time.time() - arrived_at))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

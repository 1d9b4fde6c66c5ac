"""What the worker counts and exports, as data: every counted word and every metric, once.

`COUNTS` names each word a batch counts (`BatchResult`, the `stats` hash in the
state store, `fashionai-pipeline stats` and the Prometheus labels all use these
words and nothing else); `METRICS` defines each Prometheus metric: name, type,
help and labels. `Metrics` builds the collectors on a registry it is given, so a
test gets a fresh `CollectorRegistry`; worker processes share one per process
(`default_metrics()`).

With the prefork pool each child counts in prometheus-client's multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`, set by `fashionai-pipeline worker` before anything
imports prometheus_client when FASHIONAI_METRICS_PORT is set); the main process
serves the sum on http://0.0.0.0:PORT/metrics. That mode allows counters and
histograms as defined here, and gauges only with an explicit
`multiprocess_mode` (a `MetricDef` field, for the gauges monitoring will add).
Labels are tenant names and counted words only: never a token, id or URL.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, get_args

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

Count = Literal[
    "received",
    "calls",
    "delivered",
    "cached",
    "empty",
    "stale",
    "retried",
    "throttled",
    "dead",
    "invalid",
    "foreign",
    "coalesced",
    "duplicate",
    "auth_failures",
]

# What each word counts, per batch. Every message a batch receives ends in exactly
# one of cached, stale, retried, dead, duplicate or (window-)coalesced; the others
# are details of those (empty ⊂ cached, throttled ⊂ retried, invalid and foreign ⊂ dead).
COUNT_HELP: dict[Count, str] = {
    "received": "messages taken from the queue or the retry set",
    "calls": "POSTs made to Fashion.AI",
    "delivered": "POSTs answered with a ranking",
    "cached": "events whose ranking was written to the cache",
    "empty": "cached events whose ranking was empty (Fashion.AI lacks data yet)",
    "stale": "events whose ranking was older than the cached one, so not written",
    "retried": "events scheduled for another attempt",
    "throttled": "retried events that were answered 429 (they spend no attempt)",
    "dead": "messages dead-lettered, for any reason",
    "invalid": "dead-lettered messages that could not be decoded",
    "foreign": "dead-lettered messages naming another tenant than their queue's",
    "coalesced": "events served by an identical event's call instead of their own",
    "duplicate": "messages dropped because their id was recorded already",
    "auth_failures": "HTTP 401 answers: the app token is wrong (sending pauses)",
}
COUNTS: tuple[Count, ...] = get_args(Count)
assert set(COUNTS) == set(COUNT_HELP), "every counted word needs its help text"


class MetricName(StrEnum):
    EVENTS = "fashionai_events_total"
    UPSTREAM_CALLS = "fashionai_upstream_calls_total"
    AUTH_FAILURES = "fashionai_auth_failures_total"
    LATENCY = "fashionai_enqueue_to_cache_seconds"


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: MetricName
    kind: Literal["counter", "histogram", "gauge"]
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    # Gauges in multiprocess mode must say how the processes' values combine
    # ("livesum", "max", ...); counters and histograms always sum.
    multiprocess_mode: str = ""


# Which metric carries each word: the two with their own metric keep it (dashboards
# use those names); every other word is an `outcome` label of fashionai_events_total.
_OWN_METRIC: dict[Count, MetricName] = {
    "calls": MetricName.UPSTREAM_CALLS,
    "auth_failures": MetricName.AUTH_FAILURES,
}
EVENT_OUTCOMES: tuple[Count, ...] = tuple(w for w in COUNTS if w not in _OWN_METRIC)

METRICS: tuple[MetricDef, ...] = (
    MetricDef(
        MetricName.EVENTS,
        "counter",
        "Events by outcome: " + "; ".join(f"{w}: {COUNT_HELP[w]}" for w in EVENT_OUTCOMES) + ".",
        ("tenant", "outcome"),
    ),
    MetricDef(MetricName.UPSTREAM_CALLS, "counter", COUNT_HELP["calls"] + ".", ("tenant",)),
    MetricDef(MetricName.AUTH_FAILURES, "counter", COUNT_HELP["auth_failures"] + ".", ("tenant",)),
    MetricDef(
        MetricName.LATENCY,
        "histogram",
        "Time from publish to the ranking being cached.",
        ("tenant",),
        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    ),
)


def _build(d: MetricDef, registry: CollectorRegistry | None) -> Counter | Histogram | Gauge:
    # prometheus-client appends "_total" to a counter's name itself.
    if d.kind == "counter":
        return Counter(d.name.removesuffix("_total"), d.help, d.labels, registry=registry)
    if d.kind == "histogram":
        return Histogram(d.name, d.help, d.labels, buckets=d.buckets, registry=registry)
    mode = d.multiprocess_mode or "all"
    return Gauge(d.name, d.help, d.labels, registry=registry, multiprocess_mode=mode)  # type: ignore[arg-type]


class Metrics:
    """The collectors of `METRICS` on one registry. Thread-safe (prometheus-client is)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.registry = registry
        self._collectors = {d.name: _build(d, registry) for d in METRICS}

    def record(self, tenant: str, counts: Mapping[Count, int], latencies_ms: Sequence[float]) -> None:
        """Add one batch's counts (`BatchResult.counts`) and latency samples."""
        events = self._collectors[MetricName.EVENTS]
        for word, n in counts.items():
            if not n:
                continue
            own = _OWN_METRIC.get(word)
            if own is None:
                events.labels(tenant, word).inc(n)  # type: ignore[union-attr]
            else:
                self._collectors[own].labels(tenant).inc(n)  # type: ignore[union-attr]
        hist = self._collectors[MetricName.LATENCY].labels(tenant)
        for ms in latencies_ms:
            hist.observe(ms / 1000)  # type: ignore[union-attr]


_default: Metrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> Metrics:
    """This process's metrics on the global registry, built on first use (idempotent)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Metrics()
        return _default


def serve(port: int) -> None:
    """Serve /metrics from this process, summing every process's files in multiprocess mode."""
    from prometheus_client import start_http_server

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        start_http_server(port, registry=registry)
    else:
        start_http_server(port)

"""Every Prometheus metric the worker exports: name, type and help in one place.

With the prefork pool each child counts in prometheus-client's multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`, set by `fashionai-pipeline worker` before anything
imports prometheus_client when FASHIONAI_METRICS_PORT is set); the main process
serves the sum on http://0.0.0.0:PORT/metrics. Labels are tenant names and
outcome words only: never a token, id or URL.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS = Counter(
    "fashionai_events_total",
    "Events by outcome: received, delivered, cached, empty, stale, retried, dead, invalid, coalesced.",
    ["tenant", "outcome"],
)
UPSTREAM_CALLS = Counter("fashionai_upstream_calls_total", "POSTs made to Fashion.AI.", ["tenant"])
AUTH_FAILURES = Counter(
    "fashionai_auth_failures_total",
    "HTTP 401 answers: the app token is wrong (a configuration error; sending pauses).",
    ["tenant"],
)
LATENCY = Histogram(
    "fashionai_enqueue_to_cache_seconds",
    "Time from publish to the ranking being cached.",
    ["tenant"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

_OUTCOMES = ("received", "delivered", "cached", "empty", "stale", "retried", "dead", "invalid", "coalesced")


def record(tenant: str, counts: dict[str, int], latencies_ms: list[float]) -> None:
    """Add one batch's counts (BatchResult.as_counts()) and latency samples."""
    for outcome in _OUTCOMES:
        if counts.get(outcome):
            EVENTS.labels(tenant, outcome).inc(counts[outcome])
    if counts.get("calls"):
        UPSTREAM_CALLS.labels(tenant).inc(counts["calls"])
    if counts.get("auth_failures"):
        AUTH_FAILURES.labels(tenant).inc(counts["auth_failures"])
    hist = LATENCY.labels(tenant)
    for ms in latencies_ms:
        hist.observe(ms / 1000)


def serve(port: int) -> None:
    """Serve /metrics from this process, summing every process's files when in multiprocess mode."""
    import os

    from prometheus_client import CollectorRegistry, start_http_server

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        start_http_server(port, registry=registry)
    else:
        start_http_server(port)

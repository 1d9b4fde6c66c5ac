"""Metric definitions are data; a fresh registry per test sees exactly what was recorded."""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest

from fashionai_pipeline.worker.metrics import COUNT_HELP, COUNTS, EVENT_OUTCOMES, METRICS, Count, Metrics


def test_every_counted_word_has_help_and_every_event_outcome_is_in_the_help_text():
    assert set(COUNT_HELP) == set(COUNTS)
    (events,) = [d for d in METRICS if d.name == "fashionai_events_total"]
    for word in EVENT_OUTCOMES:
        assert f"{word}: " in events.help


def test_record_counts_outcomes_calls_auth_failures_and_latency_on_its_own_registry():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    counts: Counter[Count] = Counter({"received": 5, "calls": 4, "cached": 3, "stale": 1, "dead": 1})
    counts["auth_failures"] = 1
    metrics.record("shop", counts, [12.0, 40.0, 900.0])
    more: Counter[Count] = Counter({"cached": 2})
    metrics.record("shop", more, [])

    def value(name: str, **labels: str) -> float:
        got = registry.get_sample_value(name, labels)
        return 0.0 if got is None else got

    assert value("fashionai_events_total", tenant="shop", outcome="cached") == 5
    assert value("fashionai_events_total", tenant="shop", outcome="stale") == 1
    assert value("fashionai_events_total", tenant="shop", outcome="calls") == 0  # has its own metric
    assert value("fashionai_upstream_calls_total", tenant="shop") == 4
    assert value("fashionai_auth_failures_total", tenant="shop") == 1
    assert value("fashionai_enqueue_to_cache_seconds_count", tenant="shop") == 3
    assert value("fashionai_enqueue_to_cache_seconds_bucket", tenant="shop", le="0.05") == 2


def test_two_registries_do_not_share_values():
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    one: Counter[Count] = Counter({"cached": 1})
    a.record("x", one, [])
    assert b.registry is not None
    assert b'outcome="cached"' not in generate_latest(b.registry)

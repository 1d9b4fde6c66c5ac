"""Prometheus metrics summed over the prefork children, served by the worker."""

from __future__ import annotations

import re
import urllib.request

import pytest

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.worker.local import free_port
from tests.conftest import BROKERS, TOKEN, make_settings, wait_until

pytestmark = pytest.mark.integration


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_outcomes_and_auth_failures_without_the_token(sandbox, cache, state, workers):
    port = free_port()
    settings = make_settings(BROKERS["redis"], sandbox.url, metrics_port=port)
    t = settings.tenant
    with Publisher(settings) as pub:
        for i in range(30):
            pub.product_view(f"m-{t}-{i}", f"p{i}")
    workers(settings, "-c", "2")
    wait_until(lambda: int(state.hget(keys.stats(t), "cached") or 0) >= 30, 30, "delivery")
    wait_until(
        lambda: _value(_scrape(port), "fashionai_events_total", tenant=t, outcome="cached") >= 30,
        10,
        "metrics from both children",
    )
    sandbox.configure(token="someone-else-rotated-it")
    with Publisher(settings) as pub:
        pub.product_view(f"m-{t}-401", "p401")
    wait_until(
        lambda: _value(_scrape(port), "fashionai_auth_failures_total", tenant=t) >= 1, 30, "a 401 metric"
    )

    text = _scrape(port)
    assert _value(text, "fashionai_events_total", tenant=t, outcome="cached") == 30
    assert _value(text, "fashionai_upstream_calls_total", tenant=t) >= 31
    assert _value(text, "fashionai_enqueue_to_cache_seconds_count", tenant=t) == 30
    assert re.search(r"# TYPE fashionai_auth_failures_total counter", text)
    assert TOKEN not in text and "someone-else" not in text

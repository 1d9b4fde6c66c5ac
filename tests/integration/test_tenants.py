"""Several storefronts in one deployment: own token, own limit, no starvation."""

from __future__ import annotations

import time
import uuid

import pytest

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.errors import InvalidEvent
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.sandbox import SandboxConfig, SandboxServer
from tests.conftest import BROKERS, make_settings, wait_until

pytestmark = pytest.mark.integration


def test_noisy_tenant_cannot_starve_a_quiet_one(broker_url, cache, state, workers):
    run = uuid.uuid4().hex[:6]
    noisy, quiet = f"noisy{run}", f"quiet{run}"
    with (
        SandboxServer(SandboxConfig(token="token-noisy-111")) as up_noisy,
        SandboxServer(SandboxConfig(token="token-quiet-222")) as up_quiet,
    ):
        settings = make_settings(
            broker_url,
            up_noisy.url,
            tenants={
                noisy: {
                    "app_token": "token-noisy-111",
                    "api_url": up_noisy.url,
                    "rate_limit": 5,
                    "rate_burst": 2,
                },
                quiet: {"app_token": "token-quiet-222", "api_url": up_quiet.url},
            },
        )
        with Publisher(settings) as pub:
            for i in range(300):  # a backlog of 60 s at its limit
                pub.publish(
                    {"sessionId": f"n{i}", "eventType": "productView", "data": {"id": f"p{i}"}}, tenant=noisy
                )
            for i in range(30):
                pub.publish(
                    {"sessionId": f"q{i}", "eventType": "categoryView", "data": {"id": f"c{i}"}}, tenant=quiet
                )
            with pytest.raises(InvalidEvent, match="tenant: unknown tenant"):
                pub.publish({"sessionId": "x", "eventType": "customShelf", "data": {"id": ""}}, tenant="nope")
        started = time.monotonic()
        workers(settings, "-c", "1")

        def cached(tenant: str) -> int:
            return int(state.hget(keys.stats(tenant), "cached") or 0)

        wait_until(lambda: cached(quiet) >= 30, 30, "the quiet tenant's events")
        quiet_done = time.monotonic() - started
        assert cached(noisy) < 300 / 2, "the noisy tenant was not backlogged; the test proves nothing"
        assert quiet_done < 20
        # Each tenant's requests went to its own upstream with its own token, noisy at its own limit.
        assert len(up_quiet.requests()) == 30 and all(r["headers"]["token_ok"] for r in up_quiet.requests())
        noisy_log = up_noisy.requests()
        assert noisy_log and all(r["headers"]["token_ok"] for r in noisy_log)
        times = sorted(r["t"] for r in noisy_log)
        span = times[-1] - times[0]
        assert len(times) <= 5 * span + 2 + 2


def test_single_tenant_default_needs_no_tenant_configuration():
    settings = make_settings(BROKERS["redis"], "http://127.0.0.1:9/x")
    assert settings.tenant_names() == [settings.tenant]
    assert settings.for_tenant(settings.tenant) is settings
    assert settings.queue_for(settings.tenant) == settings.queue

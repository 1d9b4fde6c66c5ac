"""The framework helpers' one call (`PageViews.serve`): publish, then the reader's answer with its
source and local checks; with `wait_ms`, publish-and-wait. Real broker and cache."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.integrations.common import AsyncPageViews, PageViews, Shopper
from tests.conftest import BROKERS, make_settings

pytestmark = pytest.mark.integration

NATIVE = ["a", "b", "c", "d", "e"]


@pytest.fixture
def settings(cache):
    s = make_settings(BROKERS["redis"], "http://127.0.0.1:9/unused", read_timeout_ms=1000)
    key = keys.ranking(s.tenant, "categoryView", "dresses", "sess-pv-1", None)
    cache.set(key, json.dumps([int(time.time() * 1000), "d", "c"]), px=60_000)
    return s


def test_page_views_serve_with_source_stock_and_page_size(settings):
    views = PageViews(settings, stock=lambda ids: [p for p in ids if p != "c"])
    try:
        served = views.serve("category", "dresses", Shopper("sess-pv-1"), NATIVE, page_size=3)
        assert (served.products, served.source) == (["d", "a", "b"], "cached")
        assert views.personalize("category", "dresses", Shopper("sess-pv-1"), NATIVE) == ["d", "a", "b", "e"]
        assert views.serve("category", "dresses", Shopper("someone-else"), NATIVE).source == "native"
        assert views.stats.published == 3
    finally:
        views.close()


def test_page_views_with_wait_ms_publish_and_wait_and_return_at_the_bound_without_a_worker(settings):
    views = PageViews(settings, wait_ms=200)
    try:
        started = time.monotonic()
        served = views.serve("product", "p9", Shopper("sess-pv-2"), NATIVE)
        assert served.source == "native" and served.message_id is not None
        assert 0.15 < time.monotonic() - started < 2.0
    finally:
        views.close()


def test_async_page_views_agree(settings):
    async def main():
        views = AsyncPageViews(settings, stock=lambda ids: [p for p in ids if p != "c"])
        try:
            return await views.serve("category", "dresses", Shopper("sess-pv-1"), NATIVE, page_size=3)
        finally:
            await views.aclose()

    served = asyncio.run(main())
    assert (served.products, served.source) == (["d", "a", "b"], "cached")

"""The framework helpers' one call (`PageViews.serve`): publish, then the reader's answer with its
source and local checks; with `wait_ms`, publish-and-wait. Real broker and cache."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.integrations.common import AsyncPageViews, PageViews, Shopper
from tests.conftest import BROKERS, CACHE_URL, make_settings
from tests.integration.own_clients import own_clients

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


# -- one round trip per page: the broker is the cache's Redis ------------------------------------


@pytest.fixture
def one_redis(cache):
    """Settings whose broker and cache are the same Redis (the default single-Redis deployment)."""
    s = make_settings(CACHE_URL, "http://127.0.0.1:9/unused", read_timeout_ms=1000)
    key = keys.ranking(s.tenant, "categoryView", "dresses", "sess-pv-1", None)
    cache.set(key, json.dumps([int(time.time() * 1000), "d", "c"]), px=60_000)
    return s


def _queued(cache, settings) -> int:
    return int(cache.llen(settings.queue))


def test_one_redis_the_page_reads_along_with_its_publish(cache, one_redis):
    # The read goes in the publish's round trip: the reader never opens a connection of its
    # own, and the page is served exactly as with two round trips.
    views = PageViews(one_redis, stock=lambda ids: [p for p in ids if p != "c"])
    try:
        served = views.serve("category", "dresses", Shopper("sess-pv-1"), NATIVE, page_size=3)
        assert (served.products, served.source) == (["d", "a", "b"], "cached")
        assert views.serve("category", "dresses", Shopper("someone-else"), NATIVE).source == "native"
        assert views.stats.published == 2 and _queued(cache, one_redis) == 2
        assert own_clients(cache, "fashionai-reader") == []  # no read of its own
        assert views.reader.stats.reads["hit"] == 1 and views.reader.stats.reads["miss"] == 1
    finally:
        views.close()
        cache.delete(one_redis.queue)


def test_one_redis_an_error_reply_to_the_read_is_the_readers_fallback(cache, one_redis):
    # The page's ranking key holds a hash (WRONGTYPE for GET): the publish is still published,
    # the page gets the native order labelled "fallback", and the breaker does not count it
    # (Redis answered).
    key = keys.ranking(one_redis.tenant, "categoryView", "wrongtype", "sess-pv-3", None)
    cache.hset(key, "x", "1")
    views = PageViews(one_redis)
    try:
        served = views.serve("category", "wrongtype", Shopper("sess-pv-3"), NATIVE)
        assert (served.products, served.source) == (NATIVE, "fallback")
        assert views.stats.published == 1 and _queued(cache, one_redis) == 1
        assert not views.reader.cache_open
        assert views.serve("category", "dresses", Shopper("sess-pv-1"), NATIVE).source == "cached"
    finally:
        views.close()
        cache.delete(key, one_redis.queue)


def test_one_redis_a_broker_that_is_down_leaves_the_read_to_the_reader(cache, one_redis):
    # The publish is dropped (nothing sent along); the reader reads on its own and its own
    # connection fails the same way: the page still renders, natively.
    down = one_redis.model_copy(
        update={"broker_url": "redis://127.0.0.1:1/0", "redis_url": "redis://127.0.0.1:1/0"}
    )
    views = PageViews(down)
    try:
        served = views.serve("category", "dresses", Shopper("sess-pv-1"), NATIVE)
        assert (served.products, served.source) == (NATIVE, "fallback")
        assert views.stats.published == 0 and views.stats.not_published == 1
    finally:
        views.close()


def test_one_redis_async_page_views_read_along_too(cache, one_redis):
    async def main():
        views = AsyncPageViews(one_redis, stock=lambda ids: [p for p in ids if p != "c"])
        try:
            served = await views.serve("category", "dresses", Shopper("sess-pv-1"), NATIVE, page_size=3)
            return served, own_clients(cache, "fashionai-reader"), views.stats.published
        finally:
            await views.aclose()

    try:
        served, readers, published = asyncio.run(main())
        assert (served.products, served.source) == (["d", "a", "b"], "cached")
        assert readers == [] and published == 1 and _queued(cache, one_redis) == 1
    finally:
        cache.delete(one_redis.queue)

"""Two commands in one round trip (direct.execute_pair, the page views' publish + read) on the
real Redis: both replies, an error reply to either, the connection kept in step; the plain path
sends the first alone; Publisher.publish_with_read sends the read along only to its own Redis."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from fashionai_pipeline.producers.direct import NOT_READ, AsyncDirectRedis, DirectRedis
from fashionai_pipeline.producers.publisher import AsyncPublisher, Publisher
from fashionai_pipeline.producers.transport import RedisTransport, Tuning, cache_failures
from tests.conftest import CACHE_URL, make_settings

pytestmark = pytest.mark.integration

L, K, H = "fashionai-pair-test:list", "fashionai-pair-test:key", "fashionai-pair-test:hash"


@pytest.fixture
def keys(cache):
    cache.delete(L, K, H)
    cache.set(K, "v")
    cache.hset(H, "f", "1")
    yield
    cache.delete(L, K, H)


def test_sync_pairs(keys):
    conn = DirectRedis(CACHE_URL, timeout=1.0, name="fashionai-pair-test")
    try:
        assert conn.execute_pair(("LPUSH", L, "x"), ("GET", K)) == (1, b"v")
        pushed, error = conn.execute_pair(("LPUSH", L, "x"), ("GET", H))  # WRONGTYPE for the read
        assert pushed == 2 and isinstance(error, redis.ResponseError)
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            conn.execute_pair(("LPUSH", H, "x"), ("GET", K))  # the first refused
        assert conn.execute("ECHO", "in step") == b"in step"  # both replies were read
    finally:
        conn.close()


def test_async_pairs(keys):
    async def main() -> None:
        conn = AsyncDirectRedis(CACHE_URL, timeout=1.0, name="fashionai-pair-test")
        try:
            assert await conn.execute_pair(("LPUSH", L, "x"), ("GET", K)) == (1, b"v")
            pushed, error = await conn.execute_pair(("LPUSH", L, "x"), ("GET", H))
            assert pushed == 2 and isinstance(error, redis.ResponseError)
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                await conn.execute_pair(("LPUSH", H, "x"), ("GET", K))
            assert await conn.execute("ECHO", "in step") == b"in step"
        finally:
            await conn.aclose()

    asyncio.run(main())


def test_the_plain_path_sends_the_first_alone(keys, cache):
    plain = RedisTransport(
        CACHE_URL, timeout=1.0, name="fashionai-pair-test", tuning=Tuning(direct=False),
        failures=cache_failures(),
    )  # fmt: skip
    try:
        assert plain.execute_pair(("LPUSH", L, "x"), ("GET", K)) == (1, NOT_READ)
        assert cache.llen(L) == 1
    finally:
        plain.close()


def test_publish_with_read_sends_the_read_along_only_to_its_own_redis(cache):
    settings = make_settings(CACHE_URL, "http://127.0.0.1:9/unused")
    key = f"fashionai-pair-test:{settings.tenant}"
    cache.set(key, json.dumps([1, "p1"]))
    event = {"sessionId": "s1", "eventType": "productView", "data": {"id": "p1"}}
    try:
        with Publisher(settings) as pub:
            receipt, reply = pub.publish_with_read(event, ("GET", key), read_url=CACHE_URL)
            assert receipt.outcome == "published" and reply == b'[1, "p1"]'
            receipt, reply = pub.publish_with_read(event, ("GET", key), read_url="redis://elsewhere:6379/0")
            assert receipt.outcome == "published" and reply is NOT_READ

        async def main() -> tuple[str, object]:
            pub = AsyncPublisher(settings)
            try:
                receipt, reply = await pub.publish_with_read(event, ("GET", key), read_url=CACHE_URL)
                return receipt.outcome, reply
            finally:
                await pub.aclose()

        assert asyncio.run(main()) == ("published", b'[1, "p1"]')
        assert cache.llen(settings.queue) == 3
    finally:
        cache.delete(key, settings.queue)

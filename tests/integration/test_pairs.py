"""Commands sent along with another in one round trip (direct.execute_along, the page views'
publish + read) on the real Redis: every reply, an error reply to any, the connection kept in
step or dropped when it is not; the plain path sends the first alone;
Publisher.publish_with_read sends the read along only to its own Redis, and AsyncPublisher's
group commit carries the reads of the publishes it joins, each answered with its own reply."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from fashionai_pipeline.producers.direct import NOT_READ, AsyncDirectRedis, DirectRedis
from fashionai_pipeline.producers.publisher import AsyncPublisher, Publisher
from fashionai_pipeline.producers.transport import RedisTransport, Tuning, cache_failures
from tests.conftest import CACHE_URL, make_settings
from tests.integration.proxy import FirstReplyOnly

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
        assert conn.execute_along(("LPUSH", L, "x"), [("GET", K)]) == (1, [b"v"])
        pushed, (error, value) = conn.execute_along(("LPUSH", L, "x"), [("GET", H), ("GET", K)])
        assert pushed == 2 and isinstance(error, redis.ResponseError) and value == b"v"  # WRONGTYPE, then on
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            conn.execute_along(("LPUSH", H, "x"), [("GET", K), ("GET", K)])  # the first refused
        assert conn.execute("ECHO", "in step") == b"in step"  # every reply was read
        assert conn.execute_along(("ECHO", "alone"), []) == (b"alone", [])
    finally:
        conn.close()


def test_async_pairs(keys):
    async def main() -> None:
        conn = AsyncDirectRedis(CACHE_URL, timeout=1.0, name="fashionai-pair-test")
        try:
            assert await conn.execute_along(("LPUSH", L, "x"), [("GET", K)]) == (1, [b"v"])
            pushed, (error, value) = await conn.execute_along(("LPUSH", L, "x"), [("GET", H), ("GET", K)])
            assert pushed == 2 and isinstance(error, redis.ResponseError) and value == b"v"
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                await conn.execute_along(("LPUSH", H, "x"), [("GET", K), ("GET", K)])
            assert await conn.execute("ECHO", "in step") == b"in step"
        finally:
            await conn.aclose()

    asyncio.run(main())


def test_replies_lost_after_the_first_are_not_read_and_the_connection_is_replaced(keys, cache):
    proxy = FirstReplyOnly(CACHE_URL)
    try:
        conn = DirectRedis(proxy.url, timeout=1.0, name="fashionai-pair-test")
        try:
            assert conn.execute("PING") == b"PONG"  # connected; the next call reuses it
            proxy.cut = True
            assert conn.execute_along(("LPUSH", L, "x"), [("GET", K), ("GET", K)]) == (
                1,
                [NOT_READ, NOT_READ],
            )
            assert conn.execute("ECHO", "fresh") == b"fresh"  # a new connection, in step
        finally:
            conn.close()

        async def main() -> None:
            conn = AsyncDirectRedis(proxy.url, timeout=1.0, name="fashionai-pair-test")
            try:
                assert await conn.execute("PING") == b"PONG"
                proxy.cut = True
                pushed, replies = await conn.execute_along(("LPUSH", L, "x"), [("GET", K), ("GET", K)])
                assert (pushed, replies) == (2, [NOT_READ, NOT_READ])
                assert await conn.execute("ECHO", "fresh") == b"fresh"
            finally:
                await conn.aclose()

        asyncio.run(main())
        assert cache.llen(L) == 2  # each push applied once: nothing was sent twice
    finally:
        proxy.close()


def test_the_plain_path_sends_the_first_alone(keys, cache):
    plain = RedisTransport(
        CACHE_URL, timeout=1.0, name="fashionai-pair-test", tuning=Tuning(direct=False),
        failures=cache_failures(),
    )  # fmt: skip
    try:
        assert plain.execute_along(("LPUSH", L, "x"), [("GET", K), ("GET", K)]) == (1, [NOT_READ, NOT_READ])
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


def test_the_group_commit_carries_the_reads_of_the_publishes_it_joins(cache):
    """Concurrent page views on one loop: the publishes made while one is in flight go as one
    LPUSH, and each one's read goes in that round trip, answered with its own key's value."""
    settings = make_settings(CACHE_URL, "http://127.0.0.1:9/unused")
    names = [f"fashionai-pair-test:{settings.tenant}:{n}" for n in range(40)]
    for n, name in enumerate(names):
        cache.set(name, json.dumps([n, f"p{n}"]))
    before = cache.info("commandstats").get("cmdstat_lpush", {}).get("calls", 0)

    async def main() -> list[tuple[str, object]]:
        pub = AsyncPublisher(settings)
        try:

            async def view(n: int) -> tuple[str, object]:
                event = {"sessionId": f"s{n}", "eventType": "productView", "data": {"id": "p1"}}
                receipt, reply = await pub.publish_with_read(event, ("GET", names[n]), read_url=CACHE_URL)
                return receipt.outcome, reply

            return await asyncio.gather(*(view(n) for n in range(40)))
        finally:
            await pub.aclose()

    try:
        answers = asyncio.run(main())
        assert answers == [("published", json.dumps([n, f"p{n}"]).encode()) for n in range(40)]
        assert cache.llen(settings.queue) == 40
        pushes = cache.info("commandstats")["cmdstat_lpush"]["calls"] - before
        assert pushes < 40  # grouped (other tests' pushes only make this larger, never smaller)
    finally:
        cache.delete(settings.queue, *names)

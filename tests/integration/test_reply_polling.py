"""Reply polling on the request path (producers.direct) against the real Redis."""

from __future__ import annotations

import pytest

from fashionai_pipeline.producers.direct import DirectRedis
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.producers.reader import RankingReader
from tests.conftest import BROKERS, CACHE_URL, make_settings

pytestmark = pytest.mark.integration


def test_a_near_redis_reply_is_taken_while_polling():
    # A generous window: even a busy machine answers a PING within 5 ms.
    direct = DirectRedis(CACHE_URL, timeout=1.0, name="fashionai-test", reply_poll_us=5000)
    try:
        for _ in range(200):
            assert direct.execute("PING") == b"PONG"
        # Every call went through the poll (redis-py's socket was found), and it caught replies.
        assert direct.replies_polled + direct.replies_waited == 200
        assert direct.replies_polled > 0
    finally:
        direct.close()


def test_polling_stops_by_itself_when_replies_outlast_the_window(cache):
    direct = DirectRedis(CACHE_URL, timeout=1.0, name="fashionai-test", reply_poll_us=100)
    key = "fashionai-test:empty-list"
    cache.delete(key)
    try:
        for _ in range(20):  # each reply comes after Redis waited 10 ms on an empty list
            assert direct.execute("BLPOP", key, "0.01") is None
        assert direct.replies_waited == 16  # then it rested
        assert direct.replies_polled == 0
        for _ in range(50):  # resting: even quick replies are awaited without polling
            direct.execute("PING")
        assert (direct.replies_polled, direct.replies_waited) == (0, 16)
    finally:
        direct.close()


@pytest.mark.parametrize("poll_us", [0, 5000])
def test_publisher_and_reader_take_the_setting(cache, poll_us):
    settings = make_settings(BROKERS["redis"], "http://127.0.0.1:9/unused", reply_poll_us=poll_us)
    with Publisher(settings) as publisher, RankingReader(settings) as reader:
        for i in range(20):
            assert publisher.product_view(f"s{i}", "p1")
            assert reader.get("productView", "p1", f"s{i}") is None
        pub_direct = publisher._sink._redis  # type: ignore[union-attr]
        for direct in (pub_direct, reader._direct):
            assert direct is not None
            awaited = direct.replies_polled + direct.replies_waited
            assert awaited == (20 if poll_us else 0)
    cache.delete(settings.queue)

"""Reply polling on the request path (producers.direct) against the real Redis.

Polling is observed through the poller's injectable observer, never through counters on
the production classes."""

from __future__ import annotations

import pytest

from fashionai_pipeline.producers.direct import MISSES_BEFORE_REST, DirectRedis, ReplyPoller
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.producers.reader import RankingReader
from fashionai_pipeline.producers.transport import RedisTransport, Tuning, cache_failures
from tests.conftest import BROKERS, CACHE_URL, make_settings

pytestmark = pytest.mark.integration


def _watched(direct: DirectRedis) -> list[bool]:
    seen: list[bool] = []
    assert direct.poller is not None
    direct.poller.observer = seen.append
    return seen


def test_a_near_redis_reply_is_taken_while_polling():
    # A generous window: even a busy machine answers a PING within 5 ms.
    direct = DirectRedis(CACHE_URL, timeout=1.0, name="fashionai-test", reply_poll_us=5000)
    seen = _watched(direct)
    try:
        for _ in range(200):
            assert direct.execute("PING") == b"PONG"
        # Every call went through the poll (redis-py's socket was found), and it caught replies.
        assert len(seen) == 200
        assert any(seen)
    finally:
        direct.close()


def test_polling_stops_by_itself_when_replies_outlast_the_window(cache):
    direct = DirectRedis(CACHE_URL, timeout=1.0, name="fashionai-test", reply_poll_us=100)
    seen = _watched(direct)
    key = "fashionai-test:empty-list"
    cache.delete(key)
    try:
        for _ in range(20):  # each reply comes after Redis waited 10 ms on an empty list
            assert direct.execute("BLPOP", key, "0.01") is None
        assert seen == [False] * MISSES_BEFORE_REST  # then it rested
        for _ in range(50):  # resting: even quick replies are awaited without polling
            direct.execute("PING")
        assert seen == [False] * MISSES_BEFORE_REST
    finally:
        direct.close()


@pytest.mark.parametrize("poll_us", [0, 5000])
def test_publisher_and_reader_take_the_setting(cache, poll_us, monkeypatch):
    polls: list[bool] = []
    original = ReplyPoller.__init__

    def observed(self, window_us, observer=None):
        original(self, window_us, polls.append)

    monkeypatch.setattr(ReplyPoller, "__init__", observed)
    settings = make_settings(BROKERS["redis"], "http://127.0.0.1:9/unused", reply_poll_us=poll_us)
    with Publisher(settings) as publisher, RankingReader(settings) as reader:
        for i in range(20):
            assert publisher.product_view(f"s{i}", "p1")
            assert reader.get("productView", "p1", f"s{i}") is None
    assert len(polls) == (40 if poll_us else 0)
    cache.delete(settings.queue)


@pytest.mark.parametrize("direct", [True, False])
def test_both_paths_answer_and_translate_the_same(direct):
    """The direct path and the plain path (a redis.Redis client) give the same replies and errors."""
    from fashionai_pipeline.producers.errors import CacheUnavailable

    tuning = Tuning(direct=direct, reply_poll_us=100)
    transport = RedisTransport(
        CACHE_URL, timeout=1.0, name="fashionai-test", tuning=tuning, failures=cache_failures()
    )
    try:
        assert transport.execute("PING") in (b"PONG", True)
        assert transport.execute("GET", "fashionai-test:never-set") is None
        with pytest.raises(CacheUnavailable, match="refused the command: unknown command"):
            transport.execute("NOSUCHCOMMAND")
    finally:
        transport.close()
    down = RedisTransport(
        "redis://127.0.0.1:1/0", timeout=0.3, name="fashionai-test", tuning=tuning, failures=cache_failures()
    )
    with pytest.raises(CacheUnavailable, match="unavailable"):
        down.execute("GET", "k")

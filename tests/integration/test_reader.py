"""Both readers against the real Redis: ranking first, native authority, fallbacks."""

from __future__ import annotations

import asyncio
import json

import pytest

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.reader import AsyncRankingReader, RankingReader
from tests.conftest import BROKERS, make_settings
from tests.integration.own_clients import own_clients
from tests.integration.proxy import SlowStart

pytestmark = pytest.mark.integration

NATIVE = [f"n{i}" for i in range(200)]


@pytest.fixture
def settings():
    # A wide read bound: these tests are about correctness under concurrency, and the cache is
    # the shared Redis of a busy machine (the bound itself: tests/integration/test_read_faults.py).
    return make_settings(BROKERS["redis"], "http://127.0.0.1:9/unused", read_timeout_ms=1000)


def _store(cache, settings, value: list) -> None:
    key = keys.ranking(settings.tenant, "categoryView", "c1", "s1", "u1")
    cache.set(key, json.dumps(value), px=60_000)


def test_sync_and_async_readers_agree(cache, settings):
    _store(cache, settings, [1_700_000_000_000, "n150", "unknown", "n3"])
    expected = ["n150", "n3", *(p for p in NATIVE if p not in ("n150", "n3"))]
    with RankingReader(settings) as reader:
        ranking = reader.get("categoryView", "c1", "s1", "u1")
        assert ranking is not None and ranking.products == ["n150", "unknown", "n3"]
        assert ranking.enqueued_at == 1_700_000_000.0
        assert reader.order("categoryView", "c1", "s1", NATIVE, "u1") == expected
        assert reader.order("categoryView", "c1", "s1", NATIVE) == NATIVE  # the session has no ranking

    async def run() -> tuple[list[str], list[str], list[str]]:
        reader = AsyncRankingReader(settings)
        try:
            ranked = await reader.order("categoryView", "c1", "s1", NATIVE, "u1")
            _store(cache, settings, [1_700_000_000_001])  # "not enough data yet"
            empty = await reader.order("categoryView", "c1", "s1", NATIVE, "u1")
            down = AsyncRankingReader(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
            fallback = await down.order("categoryView", "c1", "s1", NATIVE, "u1")
            await down.aclose()
            return ranked, empty, fallback
        finally:
            await reader.aclose()

    ranked, empty, fallback = asyncio.run(run())
    assert ranked == expected
    assert empty == NATIVE
    assert fallback == NATIVE


def _reader_addrs(cache) -> list[str]:
    return own_clients(cache, "fashionai-reader")


def test_reader_reconnects_within_the_call_when_the_server_dropped_its_connection(cache, settings):
    _store(cache, settings, [1_700_000_000_000, "n7"])
    with RankingReader(settings) as reader:
        assert reader.order("categoryView", "c1", "s1", NATIVE, "u1")[0] == "n7"
        before = _reader_addrs(cache)
        assert len(before) == 1
        cache.client_kill_filter(addr=before[0])  # a Redis restart or `timeout` does the same
        # The idle connection is dead; the read is still personalised, on a new one.
        assert reader.order("categoryView", "c1", "s1", NATIVE, "u1")[0] == "n7"
        after = _reader_addrs(cache)
        assert len(after) == 1 and after != before


def test_reader_is_safe_across_threads_and_reuses_its_connections(cache, settings):
    from concurrent.futures import ThreadPoolExecutor

    for i in range(50):
        key = keys.ranking(settings.tenant, "productView", f"p{i}", f"s{i}", None)
        cache.set(key, json.dumps([1, f"n{i}"]), px=60_000)
    with RankingReader(settings) as reader:

        def read(i: int) -> str:
            return reader.order("productView", f"p{i % 50}", f"s{i % 50}", NATIVE)[0]

        with ThreadPoolExecutor(8) as pool:
            firsts = list(pool.map(read, range(2000)))
        assert firsts == [f"n{i % 50}" for i in range(2000)]  # no reply went to another caller
        assert 1 <= len(_reader_addrs(cache)) <= 8  # connections are kept, at most one per thread


def test_reader_after_fork_opens_its_own_connection(cache, settings):
    import os

    _store(cache, settings, [1_700_000_000_000, "n9"])
    reader = RankingReader(settings)
    assert reader.order("categoryView", "c1", "s1", NATIVE, "u1")[0] == "n9"
    pid = os.fork()
    if pid == 0:  # child: read on the inherited reader, then leave at once
        code = 1
        try:
            code = 0 if reader.order("categoryView", "c1", "s1", NATIVE, "u1")[0] == "n9" else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's connection was not touched by the child: it still reads.
    assert reader.order("categoryView", "c1", "s1", NATIVE, "u1")[0] == "n9"
    reader.close()


def test_async_reader_serves_concurrent_reads_and_reconnects_within_the_call(cache, settings):
    for i in range(50):
        key = keys.ranking(settings.tenant, "productView", f"p{i}", f"s{i}", None)
        cache.set(key, json.dumps([1, f"n{i}"]), px=60_000)

    outcomes: dict[str, int] = {}

    async def main() -> tuple[list[str], str]:
        reader = AsyncRankingReader(settings)
        try:
            firsts = await asyncio.gather(
                *(reader.order("productView", f"p{i % 50}", f"s{i % 50}", NATIVE) for i in range(400))
            )
            outcomes.update(reader.stats.reads)  # a fallback's cause, for the message below
            assert 1 <= len(_reader_addrs(cache)) <= 16  # connections kept for reuse, bounded
            for addr in _reader_addrs(cache):  # the server drops every idle connection
                cache.client_kill_filter(addr=addr)
            after_kill = await reader.order("productView", "p7", "s7", NATIVE)
            return [page[0] for page in firsts], after_kill[0]
        finally:
            await reader.aclose()

    firsts, after_kill = asyncio.run(main())
    assert firsts == [f"n{i % 50}" for i in range(400)], outcomes  # no reply went to another caller
    assert after_kill == "n7"  # personalised, not the native fallback
    assert _reader_addrs(cache) == []  # aclose() closed them


def test_a_slow_connection_handshake_within_the_read_bound_is_waited_for(cache, settings):
    # The read bound is 1 s; each new connection's handshake takes 0.5 s, longer than the
    # asyncio reader's floor for an opening (direct.OPEN_FLOOR, 0.25 s) but within the
    # bound: both readers serve the ranking, neither gives up at the floor.
    _store(cache, settings, [1_700_000_000_000, "n7"])
    proxy = SlowStart(settings.redis_url, hold=0.5)
    slow = settings.model_copy(update={"redis_url": proxy.url, "read_breaker_failures": 100})
    try:
        with RankingReader(slow) as reader:
            assert reader.order("categoryView", "c1", "s1", NATIVE, "u1")[0] == "n7"

        async def main() -> list[str]:
            reader = AsyncRankingReader(slow)
            try:
                return await reader.order("categoryView", "c1", "s1", NATIVE, "u1")
            finally:
                await reader.aclose()

        assert asyncio.run(main())[0] == "n7"
    finally:
        proxy.close()

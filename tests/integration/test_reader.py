"""Both readers against the real Redis: ranking first, native authority, fallbacks."""

from __future__ import annotations

import asyncio
import json

import pytest

from producers import keys
from producers.reader import AsyncRankingReader, RankingReader
from tests.conftest import BROKERS, make_settings

pytestmark = pytest.mark.integration

NATIVE = [f"n{i}" for i in range(200)]


@pytest.fixture
def settings():
    return make_settings(BROKERS["redis"], "http://127.0.0.1:9/unused")


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

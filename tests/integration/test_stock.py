"""Local stock checks and the settings safety net through the readers, on real Redis: the
storefront's own structures (SET and HASH of stock, HASH of facts) in its own Redis."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.reader import AsyncRankingReader, RankingReader
from fashionai_pipeline.producers.recsettings import RecommendationSettings, TypeSettings
from fashionai_pipeline.producers.stock import RedisFacts, RedisStock
from tests.conftest import BROKERS, make_settings

pytestmark = pytest.mark.integration

STOREFRONT = BROKERS["redis"]  # DB 14: no eviction, as a storefront's own Redis should be
NATIVE = [f"n{i}" for i in range(12)]


@pytest.fixture
def shop(cache):
    settings = make_settings(BROKERS["redis"], "http://127.0.0.1:9/unused", storefront_redis_url=STOREFRONT,
                             read_timeout_ms=1000)  # fmt: skip
    storefront = redis.Redis.from_url(STOREFRONT)
    ranked = ["n9", "n3", "n7", "n1", "zz"]
    for event_type in ("productView", "categoryView"):
        key = keys.ranking(settings.tenant, event_type, "x", "s1", None)
        cache.set(key, json.dumps([int(time.time() * 1000), *ranked]), px=60_000)
    made = [keys.stock(settings.tenant), f"{keys.stock(settings.tenant)}:h", keys.facts(settings.tenant)]
    yield settings, storefront
    storefront.delete(*made)
    storefront.close()


def test_a_redis_set_and_a_redis_hash_drop_and_backfill_to_the_page_size(shop):
    settings, storefront = shop
    in_stock = [p for p in NATIVE if p not in ("n3", "n1", "n0")]
    storefront.sadd(keys.stock(settings.tenant), *in_stock)
    hash_key = f"{keys.stock(settings.tenant)}:h"
    storefront.hset(hash_key, mapping={p: (0 if p in ("n3", "n1", "n0") else 4) for p in NATIVE[:-1]})
    expected = ["n9", "n7", "n2", "n4", "n5"]  # ranked n9 n7 (n3, n1 gone), then native n2.. (n0 gone)
    with RankingReader(settings, stock=RedisStock(keys.stock(settings.tenant), "set")) as by_set:
        served = by_set.serve("categoryView", "x", "s1", NATIVE, page_size=5)
        assert (served.products, served.source) == (expected, "cached")
        assert by_set.stats.snapshot()["removed"]["stock"] == 3
        whole = by_set.serve("categoryView", "x", "s1", NATIVE)  # no page size: removed, not refilled
        assert whole.products == ["n9", "n7", *[p for p in in_stock if p not in ("n9", "n7")]]
    with RankingReader(settings, stock=RedisStock(hash_key, "hash")) as by_hash:
        assert by_hash.serve("categoryView", "x", "s1", NATIVE, page_size=5).products == expected
        # n11 is not in the hash: no stock record is no stock.
        assert "n11" not in by_hash.serve("categoryView", "x", "s1", NATIVE).products

    async def main() -> list[str]:
        reader = AsyncRankingReader(settings, stock=RedisStock(hash_key, "hash"))
        try:
            return (await reader.serve("categoryView", "x", "s1", NATIVE, page_size=5)).products
        finally:
            await reader.aclose()

    assert asyncio.run(main()) == expected


def test_facts_from_a_redis_hash_and_the_settings_of_the_pages_type_only(shop):
    settings, storefront = shop
    facts = {
        "n9": {"price": "12000.00", "discounted": False, "stock": {"U": 3}},
        "n3": {"price": "9999.99", "discounted": True, "stock": {"U": 30}},
        "n7": {"price": 10000.5, "discounted": False, "stock": {"P": 0, "M": 5}},
        "n1": {"price": "80", "discounted": False},
    }
    storefront.hset(keys.facts(settings.tenant), mapping={k: json.dumps(v) for k, v in facts.items()})
    above = RecommendationSettings(product=TypeSettings.model_validate({"priceRange": {"mode": "above10k"}}))
    with RankingReader(settings, facts=RedisFacts(keys.facts(settings.tenant)), filters=above) as reader:
        product = reader.serve("productView", "x", "s1", NATIVE)
        # above R$ 10,000.00: n9 and n7 stay, n3 (9,999.99) and n1 go; zz is not on the page.
        assert product.products[:2] == ["n9", "n7"] and "n3" in product.products  # n3 back in native order
        assert product.products.index("n3") > 1
        category = reader.serve("categoryView", "x", "s1", NATIVE)  # no category settings: unchanged
        assert category.products[:4] == ["n9", "n3", "n7", "n1"]
        assert reader.stats.snapshot()["removed"]["settings"] == 2


def test_a_storefront_redis_that_is_down_removes_nothing_and_is_counted(shop):
    settings, _ = shop
    down = settings.model_copy(update={"storefront_redis_url": "redis://127.0.0.1:1/0"})
    with RankingReader(down, stock=RedisStock("whatever", "set")) as reader:
        served = reader.serve("categoryView", "x", "s1", NATIVE, page_size=4)
        assert served.products == ["n9", "n3", "n7", "n1"] and served.source == "cached"
        checks = reader.stats.snapshot()["checks"]
        assert checks["stock:failed"] == 1


class _Raises:
    def __iter__(self):
        raise ValueError("the storefront's iterator broke")


async def _async_none(ids):
    return None


async def _async_ids(ids):
    return ids


STOCK_MISTAKES: dict[str, Any] = {
    "None": lambda ids: None,
    "a count": lambda ids: 5,
    "a str (read as its characters)": lambda ids: "n9",
    "an iterable that raises": lambda ids: _Raises(),
    "a coroutine on the sync reader": _async_ids,
}


@pytest.mark.parametrize("answer", list(STOCK_MISTAKES), ids=list(STOCK_MISTAKES))
def test_a_stock_callable_that_answers_the_wrong_thing_removes_nothing_and_is_counted(shop, answer):
    settings, _ = shop
    with RankingReader(settings) as reader:
        served = reader.serve("categoryView", "x", "s1", NATIVE, page_size=4, stock=STOCK_MISTAKES[answer])
        assert (served.products, served.source) == (["n9", "n3", "n7", "n1"], "cached")
        assert reader.stats.snapshot()["checks"]["stock:failed"] == 1


def test_an_async_check_that_answers_none_on_the_async_reader_removes_nothing(shop):
    settings, _ = shop

    async def main() -> tuple[list[str], int]:
        reader = AsyncRankingReader(settings)
        try:
            served = await reader.serve("categoryView", "x", "s1", NATIVE, page_size=4, stock=_async_none)
            return served.products, reader.stats.snapshot()["checks"]["stock:failed"]
        finally:
            await reader.aclose()

    assert asyncio.run(main()) == (["n9", "n3", "n7", "n1"], 1)


@pytest.mark.parametrize(
    "facts", [lambda ids: ["n9"], lambda ids: {"n9": {"price": 1}}, lambda ids: None],
    ids=["a list", "plain dicts, not ProductFacts", "None"],
)  # fmt: skip
def test_a_facts_callable_that_answers_the_wrong_thing_filters_nothing_and_is_counted(shop, facts):
    settings, _ = shop
    above = TypeSettings.model_validate({"priceRange": {"mode": "above10k"}})
    with RankingReader(settings) as reader:
        served = reader.serve("productView", "x", "s1", NATIVE, facts=facts, filters=above)
        assert served.products[:4] == ["n9", "n3", "n7", "n1"]
        assert reader.stats.snapshot()["checks"]["facts:failed"] == 1


def test_a_native_list_with_repeats_renders_each_product_once_and_fills_the_page(shop):
    settings, _ = shop
    with RankingReader(settings) as reader:
        ranked = reader.serve("categoryView", "x", "s1", ["n1", "n1", "n2", "n9", "n9", "n4"])
        assert ranked.products == ["n9", "n1", "n2", "n4"]
        nothing = reader.serve(
            "categoryView", "x", "nobody", ["a", "a", "b"], stock=lambda ids: ids, page_size=2
        )
        assert (nothing.products, nothing.source) == (["a", "b"], "native")


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("pageView", "x", "s1"), "event_type"),
        (("productView", 5, "s1"), "item_id"),
        (("productView", "x", None), "session_id"),
        (("productView", "x", ""), "session_id"),
        (("productView", "x", "s\ud800"), "session_id"),
    ],
)
def test_a_read_no_ranking_can_answer_is_refused_naming_the_argument(shop, args: Any, field):
    settings, _ = shop
    with RankingReader(settings) as reader:
        with pytest.raises(ValueError, match=rf"^{field}: "):
            reader.serve(args[0], args[1], args[2], NATIVE)
        with pytest.raises(ValueError, match=r"^user_id: "):
            reader.serve("productView", "x", "s1", NATIVE, user_id="")

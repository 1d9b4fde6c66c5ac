"""The reader's sans-I/O parts: the breaker, the holdout, the page fill, the settings filters,
and the plan's sources, driven with scripted answers (no Redis: the plan only asks for I/O)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.attribution import ReadStats, prometheus_text
from fashionai_pipeline.producers.breaker import Breaker
from fashionai_pipeline.producers.errors import CacheUnavailable, ConfigurationError
from fashionai_pipeline.producers.holdout import Holdout, holdout_point
from fashionai_pipeline.producers.reader import Call, Command, Query, ReaderCore
from fashionai_pipeline.producers.recsettings import ProductFacts, RecommendationSettings, TypeSettings
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.producers.stock import (
    PageFill,
    RedisFacts,
    RedisStock,
    counts_check,
    facts_from_json,
    filter_ranked,
    settings_for,
)


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- breaker ------------------------------------------------------------------------------


def test_breaker_opens_after_failures_in_a_row_and_a_success_resets_the_count():
    clock, changes = Clock(), list[bool]()
    b = Breaker(failures=3, open_for=0.5, clock=clock, listener=changes.append)
    b.failure()
    b.failure()
    b.success()  # the count starts again
    b.failure()
    b.failure()
    assert b.allow() and not b.is_open
    b.failure()
    assert b.is_open and not b.allow() and changes == [True]


def test_breaker_lets_one_probe_through_after_open_for_and_closes_on_its_success():
    clock, changes = Clock(), list[bool]()
    b = Breaker(failures=1, open_for=0.5, probe_for=1.0, clock=clock, listener=changes.append)
    b.failure()
    clock.now += 0.49
    assert not b.allow()
    clock.now += 0.02
    assert b.allow()  # the probe
    assert not b.allow()  # only one at a time
    b.success()
    assert not b.is_open and b.allow() and changes == [True, False]


def test_a_failed_probe_opens_again_and_a_lost_probe_is_given_up():
    clock = Clock()
    b = Breaker(failures=1, open_for=0.5, probe_for=1.0, clock=clock)
    b.failure()
    clock.now += 0.6
    assert b.allow()
    b.failure()  # the probe failed
    assert not b.allow()
    clock.now += 0.6
    assert b.allow()  # the next probe; it never reports (a cancelled task)
    clock.now += 0.9
    assert not b.allow()
    clock.now += 0.2
    assert b.allow()  # given up after probe_for: another read probes


def test_breaker_refuses_settings_that_cannot_work():
    with pytest.raises(ValueError):
        Breaker(failures=0)


# -- holdout ----------------------------------------------------------------------------


def test_holdout_is_stable_salted_and_close_to_its_fraction():
    h = Holdout(0.1, "exp-1")
    sessions = [f"session-{i}" for i in range(20_000)]
    held = [s for s in sessions if s in h]
    assert 0.09 <= len(held) / len(sessions) <= 0.11
    assert held == [s for s in sessions if s in Holdout(0.1, "exp-1")]  # the same groups again
    other = {s for s in sessions if s in Holdout(0.1, "exp-2")}
    assert 0.05 < len(other & set(held)) / len(held) < 0.2  # a new salt draws new groups (~10% overlap)
    assert not any(s in Holdout(0.0, "exp-1") for s in sessions)
    assert all(s in Holdout(1.0, "exp-1") for s in sessions[:100])


def test_holdout_point_is_the_documented_recipe():
    import hashlib

    expected = int.from_bytes(hashlib.sha256(b"salt:sess-1").digest()[:8], "big")
    assert holdout_point("sess-1", "salt") == expected


# -- stock: page fill and Redis layouts ----------------------------------------------------


def test_page_fill_drops_the_unavailable_and_backfills_in_order_to_keep_the_size():
    order = [f"p{i}" for i in range(30)]
    gone = {"p0", "p2", "p3", "p7"}
    fill = PageFill(order, 6)
    asked = []
    while not fill.done:
        chunk = fill.next_chunk()
        asked.append(chunk)
        fill.take(chunk, {p for p in chunk if p not in gone})
    assert fill.result() == ["p1", "p4", "p5", "p6", "p8", "p9"]
    assert fill.removed == 4
    assert len(asked) == 1  # one round trip: the chunk carries slack


def test_page_fill_asks_again_when_many_are_gone_and_without_a_size_checks_everything_once():
    order = [f"p{i}" for i in range(100)]
    fill = PageFill(order, 5)
    rounds = 0
    while not fill.done:
        chunk = fill.next_chunk()
        rounds += 1
        fill.take(chunk, {p for p in chunk if int(p[1:]) >= 40})
    assert fill.result() == ["p40", "p41", "p42", "p43", "p44"] and rounds == 3
    whole = PageFill(order, None)
    chunk = whole.next_chunk()
    assert chunk == order and whole.done  # every id in one chunk
    whole.take(chunk, set(order[::2]))
    assert whole.result() == order[::2]


def test_a_failed_check_removes_nothing():
    fill = PageFill([f"p{i}" for i in range(10)], 4)
    fill.unchecked(fill.next_chunk())
    assert fill.result() == ["p0", "p1", "p2", "p3"]


def test_redis_stock_layouts_read_their_replies():
    ids = ["a", "b", "c"]
    assert RedisStock("k", "set").command(ids) == ("SMISMEMBER", "k", "a", "b", "c")
    assert RedisStock("k", "set").available(ids, [1, 0, 1]) == {"a", "c"}
    assert RedisStock("k", "hash").command(ids) == ("HMGET", "k", "a", "b", "c")
    assert RedisStock("k", "hash").available(ids, [b"3", b"0", None]) == {"a"}
    assert RedisStock("k", "hash").available(ids, [b"x", b"-1", b"2"]) == {"c"}
    with pytest.raises(ValueError):
        RedisStock("k", "set").available(ids, [1])
    assert counts_check({"a": 2, "b": 0})(ids) == ["a"]


def test_facts_from_json_is_strict_and_names_the_field():
    facts = facts_from_json({"price": "129.90", "discounted": True, "stock": {"P": 1, "M": 0}})
    assert facts == ProductFacts(Decimal("129.90"), True, {"P": 1, "M": 0})
    assert facts_from_json({"price": 10}).price == Decimal("10")
    for bad, field in [
        ({"price": True}, "price"),
        ({"price": "abc"}, "price"),
        ({"price": -1}, "price"),
        ({"price": 1, "discounted": "yes"}, "discounted"),
        ({"price": 1, "stock": {"P": "2"}}, "stock"),
    ]:
        with pytest.raises(ValueError, match=field):
            facts_from_json(bad)
    decoded = RedisFacts("f").decode(["a", "b", "c"], [json.dumps({"price": 5}), b"not json", None])
    assert list(decoded) == ["a"]


# -- the settings filters, one type at a time ----------------------------------------------

FACTS = {
    "cheap": ProductFacts(Decimal("99.90"), False, {"P": 6, "M": 5}),
    "sale": ProductFacts(Decimal("150.00"), True, {"P": 0, "M": 30}),
    "lux": ProductFacts(Decimal("10000.01"), False, {"U": 2}),
    "edge": ProductFacts(Decimal("10000.00"), True, {"P": 20, "M": 20}),
}
RANKED = ["lux", "cheap", "sale", "edge"]


@pytest.mark.parametrize(
    ("settings", "kept"),
    [
        ({"discount": "onlyWith"}, ["sale", "edge"]),
        ({"discount": "onlyWithout"}, ["lux", "cheap"]),
        ({"priceRange": {"mode": "custom", "min": 99.9, "max": 150}}, ["cheap", "sale"]),
        ({"priceRange": {"mode": "above10k"}}, ["lux"]),  # strictly above R$ 10,000.00
        ({"lowStock": {"enabled": True, "limit": 10}}, ["cheap", "sale", "edge"]),  # lux: 2 units
        ({"fullSizeRun": True}, ["lux", "cheap", "edge", "sale"]),  # sale misses a size: last
    ],
)
def test_each_local_filter_drops_what_it_should(settings, kept):
    chosen = TypeSettings.model_validate(settings)
    out, dropped, missing = filter_ranked(chosen, RANKED, FACTS)
    assert out == kept and dropped == len(RANKED) - len(kept) and missing == 0


def test_filters_apply_only_to_their_own_type_and_products_without_facts_stay():
    filters = RecommendationSettings(product=TypeSettings(discount="onlyWith"))
    assert settings_for(filters, "productView") == filters.product
    assert settings_for(filters, "categoryView") is None  # category: nothing filtered
    assert settings_for(filters, "shopTheLook") is None
    assert settings_for(filters, "customShelf") is None  # no settings tab
    out, dropped, missing = filter_ranked(filters.product, ["x", "cheap", "sale", "y"], FACTS)
    assert out == ["x", "sale", "y"] and (dropped, missing) == (1, 2)


# -- the plan ------------------------------------------------------------------------------


def _settings(**extra) -> Settings:
    return Settings(tenant="t1", **extra)


def _drive(core: ReaderCore, q: Query, cache: dict[str, object] | Exception, calls: list | None = None):
    """Run a plan, answering cache commands from `cache` (or failing them all with it)."""
    plan = core.serve_plan(q)
    answer: object = None
    try:
        request = next(plan)
        while True:
            if isinstance(request, Call):
                if calls is not None:
                    calls.append(request.ids)
                try:
                    answer = request.fn(request.ids)
                except Exception as exc:
                    answer = exc
            elif isinstance(cache, Exception):
                answer = cache
            else:
                assert isinstance(request, Command) and request.store == "cache"
                verb, *names = request.args
                values = [cache.get(n) for n in names]
                answer = values[0] if verb == "GET" else values
            request = plan.send(answer)
    except StopIteration as stop:
        return stop.value


def _q(native, **kw) -> Query:
    return Query("productView", "p1", kw.pop("session", "s1"), None, None, native, **kw)


KEY = keys.ranking("t1", "productView", "p1", "s1", None)
CROWD = keys.crowd("t1", "productView", "p1")
NATIVE = ["a", "b", "c", "d", "e"]


def test_plan_sources_cached_native_fallback_and_counts():
    core = ReaderCore(_settings(), clock=Clock(100.0))
    cached = _drive(core, _q(NATIVE), {KEY: json.dumps([99_000, "c", "zz", "a"])})
    assert (cached.products, cached.source, cached.age_ms) == (["c", "a", "b", "d", "e"], "cached", 1000)
    assert _drive(core, _q(NATIVE), {}).source == "native"
    assert _drive(core, _q(NATIVE), {KEY: "[5]"}).source == "native"  # empty: not enough data
    failed = CacheUnavailable("down")
    failed.__cause__ = ConnectionError()
    down = _drive(core, _q(NATIVE), failed)
    assert (down.products, down.source) == (NATIVE, "fallback")
    assert _drive(core, _q(NATIVE), {KEY: "garbage"}).source == "fallback"
    snap = core.stats.snapshot()
    assert snap["served"] == {"fresh": 0, "cached": 1, "crowd": 0, "native": 2, "fallback": 2, "holdout": 0}
    assert snap["reads"]["hit"] == 1 and snap["reads"]["invalid"] == 1 and snap["reads"]["unavailable"] == 1


def test_plan_short_circuits_while_the_breaker_is_open():
    core = ReaderCore(_settings(read_breaker_failures=2))
    failed = CacheUnavailable("down")
    failed.__cause__ = TimeoutError()
    for _ in range(2):
        assert _drive(core, _q(NATIVE), failed).source == "fallback"
    # An empty cache would answer "native": "fallback" means it was not asked.
    assert _drive(core, _q(NATIVE), {}).source == "fallback"
    snap = core.stats.snapshot()
    assert snap["reads"]["timeout"] == 2 and snap["reads"]["short_circuit"] == 1
    assert snap["breaker_trips"]["cache"] == 1 and snap["breaker_open"]["cache"] == 1


def test_plan_serves_the_crowd_when_the_shopper_has_none_and_only_when_enabled():
    crowd = json.dumps([99_500, "e", "d"])
    off = ReaderCore(_settings(), clock=Clock(100.0))
    assert _drive(off, _q(NATIVE), {CROWD: crowd}).source == "native"
    on = ReaderCore(_settings(crowd=True), clock=Clock(100.0))
    served = _drive(on, _q(NATIVE), {CROWD: crowd})
    assert (served.products[:2], served.source, served.age_ms) == (["e", "d"], "crowd", 500)
    assert _drive(on, _q(NATIVE), {KEY: "[1]", CROWD: crowd}).source == "crowd"  # an empty ranking too
    own = _drive(on, _q(NATIVE), {KEY: json.dumps([99_000, "b"]), CROWD: crowd})
    assert own.source == "cached" and own.products[0] == "b"  # the shopper's own comes first


def test_plan_holds_out_its_sessions_without_reading():
    core = ReaderCore(_settings(holdout=1.0))
    served = _drive(core, _q(NATIVE, page_size=3), RuntimeError("never asked"))
    assert (served.products, served.source, served.age_ms) == (["a", "b", "c"], "holdout", None)


def test_plan_checks_stock_backfills_and_filters_the_ranked_part_only():
    filters = RecommendationSettings(product=TypeSettings(discount="onlyWith"))
    facts = {pid: ProductFacts(Decimal("10"), pid in ("c", "d"), {"U": 9}) for pid in NATIVE}
    core = ReaderCore(
        _settings(),
        stock=lambda ids: [p for p in ids if p != "c"],
        facts=lambda ids: {p: facts[p] for p in ids},
        filters=filters,
    )
    calls: list = []
    served = _drive(core, _q(NATIVE, page_size=3), {KEY: json.dumps([1, "e", "d", "c"])}, calls)
    # ranked e,d,c -> the filter keeps d,c (discounted) -> merged d,c,a,b,e -> stock drops c -> 3
    assert served.products == ["d", "a", "b"] and served.source == "cached"
    assert calls[0] == ["e", "d", "c"]  # facts asked for the ranked ids only
    snap = core.stats.snapshot()
    assert snap["removed"] == {"stock": 1, "settings": 1}


def test_a_failing_check_is_counted_and_removes_nothing():
    def broken(ids):
        raise OSError("db down")

    core = ReaderCore(_settings(), stock=broken)
    served = _drive(core, _q(NATIVE, page_size=2), {})
    assert served.products == ["a", "b"]
    assert core.stats.snapshot()["checks"]["stock:failed"] == 1


def test_bad_page_size_and_settings_that_cannot_work_are_refused():
    core = ReaderCore(_settings())
    with pytest.raises(ValueError, match="page_size"):
        _drive(core, _q(NATIVE, page_size=0), {})
    with pytest.raises(ConfigurationError, match="FASHIONAI_STOREFRONT_REDIS_URL"):
        ReaderCore(_settings(stock_layout="set"))
    with pytest.raises(ConfigurationError, match="ranking cache"):
        ReaderCore(_settings(storefront_redis_url="redis://h/1", redis_url="redis://h/1"))


def test_prometheus_text_has_every_metric_once_with_help_and_type():
    stats = ReadStats()
    stats.count_served("crowd")
    stats.count_read("timeout")
    text = prometheus_text(stats, labels={"tenant": "t1"})
    assert 'fashionai_reader_served_total{source="crowd",tenant="t1"} 1' in text
    assert 'fashionai_reader_reads_total{outcome="timeout",tenant="t1"} 1' in text
    assert 'fashionai_reader_facts_missing_total{tenant="t1"} 0' in text
    assert text.count("# TYPE fashionai_reader_served_total counter") == 1


def test_the_settings_stock_and_facts_keys_follow_the_calls_tenant():
    settings = _settings(
        storefront_redis_url="redis://127.0.0.1:1/2", stock_layout="hash", facts_layout="hash",
        local_filters='{"product": {"discount": "onlyWith"}}',
    )  # fmt: skip
    core = ReaderCore(settings)
    asked: list[tuple[str, ...]] = []
    for tenant in (None, "shop-b"):
        q = Query("productView", "p1", "s1", None, tenant, NATIVE)
        plan = core.serve_plan(q)
        try:
            request = next(plan)
            while True:
                assert isinstance(request, Command)
                asked.append(request.args)
                if request.store == "cache":
                    answer: object = json.dumps([1, "c", "a"])
                elif request.args[0] == "HMGET" and request.args[1].endswith(":facts"):
                    answer = [json.dumps({"price": 1, "discounted": True})] * (len(request.args) - 2)
                else:
                    answer = [b"1"] * (len(request.args) - 2)
                request = plan.send(answer)
        except StopIteration:
            pass
    storefront = [a[1] for a in asked if a[0] == "HMGET"]
    assert storefront == [keys.facts("t1"), keys.stock("t1"), keys.facts("shop-b"), keys.stock("shop-b")]

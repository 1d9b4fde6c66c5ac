"""The service's reads with the local checks: the POST form's stock, facts and page size, the
service's own stock structure in the storefront's Redis, the local filters, `/metrics`."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import redis

from fashionai_pipeline.producers import keys
from tests.conftest import BROKERS, make_settings
from tests.service.conftest import INGEST, READ

pytestmark = pytest.mark.integration

ING = {"Authorization": f"Bearer {INGEST}"}
STOREFRONT = BROKERS["redis"]  # DB 14: no eviction, like a storefront's own Redis should be
FILTERS = json.dumps({"product": {"discount": "onlyWith"}})  # productView pages only


@pytest.fixture
def shop(sandbox, start_service, cache):
    settings = make_settings(
        BROKERS["redis"],
        sandbox.url,
        storefront_redis_url=STOREFRONT,
        stock_layout="set",
        local_filters=FILTERS,
    )
    storefront = redis.Redis.from_url(STOREFRONT)
    stock_key = keys.stock(settings.tenant)
    storefront.sadd(stock_key, "a", "b", "d", "e", "f", "g")  # "c" is sold out
    for event_type in ("productView", "categoryView"):
        key = keys.ranking(settings.tenant, event_type, "x1", "s1", None)
        cache.set(key, json.dumps([int(time.time() * 1000), "e", "c", "d"]), px=60_000)
    service = start_service(settings)
    yield settings, service
    storefront.delete(stock_key)
    storefront.close()


def _read(url: str, **body) -> dict:
    r = httpx.post(f"{url}/v1/rankings", json={"id": "x1", "sessionId": "s1", **body}, headers=ING)
    assert r.status_code == 200, r.text
    return r.json()


def test_stock_from_the_storefronts_redis_drops_and_backfills_to_the_page_size(shop):
    _, service = shop
    native = ["a", "b", "c", "d", "e", "f", "g"]
    got = _read(service.url, eventType="categoryView", native=native, page_size=4)
    # ranked e, c, d -> c is sold out -> e, d, then the native order fills the page
    assert got["products"] == ["e", "d", "a", "b"] and got["source"] == "cached"
    # GET (no native list): the ranking alone, still stock-checked.
    q = {"eventType": "categoryView", "id": "x1", "sessionId": "s1"}
    assert httpx.get(f"{service.url}/v1/rankings", params=q, headers=ING).json()["products"] == ["e", "d"]
    assert httpx.get(f"{service.url}/v1/rankings", params={**q, "page_size": 1}, headers=ING).json()[
        "products"
    ] == ["e"]


def test_the_post_form_carries_its_own_stock_and_facts(shop):
    _, service = shop
    native = ["a", "b", "c", "d", "e"]
    # Its own stock map replaces the service's: here "e" is out and "c" is in.
    got = _read(service.url, eventType="categoryView", native=native, stock={"a": 1, "b": 2, "c": 3, "d": 1})
    assert got["products"] == ["c", "d", "a", "b"]
    # productView: the local filter (only discounted) checks the ranked ids against the facts.
    facts = {
        "e": {"price": "199.90", "discounted": False},
        "c": {"price": 99, "discounted": True},
        "d": {"price": "10.5", "discounted": True, "stock": {"P": 2}},
    }
    got = _read(service.url, eventType="productView", native=native, facts=facts, page_size=3)
    # e is not discounted: filtered; c sold out (the service's stock set); d stays; a, b backfill.
    assert got["products"] == ["d", "a", "b"]
    # categoryView has no local filter: the same facts change nothing there.
    got = _read(service.url, eventType="categoryView", native=native, facts=facts)
    assert got["products"] == ["e", "d", "a", "b"]


def test_views_take_the_same_fields_and_bad_ones_name_the_field(shop):
    _, service = shop
    event = {"sessionId": "s1", "eventType": "categoryView", "data": {"id": "x1"}}
    r = httpx.post(
        f"{service.url}/v1/views",
        json={
            "event": event,
            "native": ["a", "c", "d", "e"],
            "wait_ms": 0,
            "page_size": 2,
            "stock": {"d": 1},
        },
        headers=ING,
    )
    assert r.status_code == 200 and r.json()["products"] == ["d"]  # only d is in the map's stock
    for extra, field in (
        ({"page_size": 0}, "page_size"),
        ({"page_size": "3"}, "page_size"),
        ({"stock": []}, "stock"),
        ({"stock": {"a": "1"}}, "stock.a"),
        ({"facts": {"a": {"price": -1}}}, "facts.a.price"),
        ({"facts": {"a": {"price": 1, "colour": "red"}}}, "facts.a.colour"),
        ({"stock": None}, "stock"),
    ):
        r = httpx.post(
            f"{service.url}/v1/rankings",
            json={"eventType": "categoryView", "id": "x1", "sessionId": "s1", "native": [], **extra},
            headers=ING,
        )
        assert r.status_code == 422 and r.json()["error"]["field"] == field, (extra, r.text)


def test_metrics_count_sources_and_need_an_ingest_key(shop):
    _, service = shop
    _read(service.url, eventType="categoryView", native=["a"])
    _read(service.url, eventType="categoryView", native=["a"], id="nothing-here")
    r = httpx.get(f"{service.url}/metrics", headers=ING)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'fashionai_reader_served_total{source="cached"} 1' in r.text
    assert 'fashionai_reader_served_total{source="native"} 1' in r.text
    assert 'fashionai_reader_checks_total{check="stock",outcome="ok"}' in r.text
    assert httpx.get(f"{service.url}/metrics", headers={"Authorization": f"Bearer {READ}"}).status_code == 403
    assert httpx.get(f"{service.url}/metrics").status_code == 401


def test_a_frozen_cache_gives_the_fallback_within_the_bound_and_reads_resume(
    sandbox, start_service, tmp_path
):
    import signal

    from fashionai_pipeline.worker.local import start_redis

    proc, cache_url = start_redis(log_dir=str(tmp_path))
    try:
        # The breaker opens after 2 failed reads for 3 s: far longer than the 40 reads take
        # on a quiet machine, and still most of them on a loaded one.
        settings = make_settings(BROKERS["redis"], sandbox.url, redis_url=cache_url, read_timeout_ms=100,
                                 read_breaker_failures=2, read_breaker_open_ms=3000)  # fmt: skip
        key = keys.ranking(settings.tenant, "categoryView", "x1", "s1", None)
        redis.Redis.from_url(cache_url).set(key, json.dumps([int(time.time() * 1000), "b"]))
        service = start_service(settings)
        body = {"eventType": "categoryView", "id": "x1", "sessionId": "s1", "native": ["a", "b"]}
        with httpx.Client(base_url=service.url, headers=ING, timeout=5) as client:
            assert client.post("/v1/rankings", json=body).json()["source"] == "cached"
            proc.signal(signal.SIGSTOP)
            for _ in range(40):
                got = client.post("/v1/rankings", json=body).json()
                assert got == {"products": ["a", "b"], "source": "fallback", "age_ms": None}
            metrics = client.get("/metrics").text
            assert 'fashionai_reader_breaker_open{store="cache"} 1' in metrics
            reads = _counts(metrics, "fashionai_reader_reads_total", "outcome")
            waited = reads.get("timeout", 0) + reads.get("unavailable", 0)
            # The breaker: two reads paid the bound to open it, then at most a probe per 3 s.
            assert 2 <= waited <= 8, reads
            assert reads.get("short_circuit", 0) == 40 - waited, reads
            proc.signal(signal.SIGCONT)
            deadline = time.monotonic() + 15
            while client.post("/v1/rankings", json=body).json()["source"] != "cached":
                assert time.monotonic() < deadline, "reads did not resume"
                time.sleep(0.05)
    finally:
        proc.signal(signal.SIGCONT)
        proc.stop()


def _counts(text: str, name: str, label: str) -> dict[str, int]:
    """The samples of one labelled counter in Prometheus text: label value -> count."""
    found: dict[str, int] = {}
    prefix = f'{name}{{{label}="'
    for line in text.splitlines():
        if line.startswith(prefix):
            value, _, count = line[len(prefix) :].partition('"} ')
            found[value] = int(float(count))
    return found

"""`fashionai-pipeline serve` with real processes: the service, a worker, the sandbox, Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from fashionai_pipeline.producers.service.openapi import render
from fashionai_pipeline.producers.service.signing import sign_shopper
from fashionai_pipeline.worker.local import start_redis
from tests.conftest import BROKERS, TOKEN, make_settings, wait_until
from tests.service.conftest import INGEST, ORIGIN, READ, SIGNING, launch, service_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ING = {"Authorization": f"Bearer {INGEST}"}
RD = {"Authorization": f"Bearer {READ}"}
CATALOG = [f"p{i:04d}" for i in range(3_001)]  # covers the sandbox demo catalog; fits the test body limit
LIMITS = {
    "FASHIONAI_SERVE_MAX_BODY": "65536",
    "FASHIONAI_SERVE_MAX_EVENTS": "50",
    "FASHIONAI_SERVE_MAX_WAIT_MS": "5000",
}


def ev(session: str, item: str = "p1", event_type: str = "productView", user: str | None = None) -> dict:
    body: dict = {"sessionId": session, "eventType": event_type, "data": {"id": item}}
    return body if user is None else {"userId": user, **body}


def answered(sandbox, body: dict) -> list[str] | None:
    """What the sandbox answered for this body (its request log), None before it was sent."""
    want = json.dumps(body, sort_keys=True)
    for r in sandbox.requests():
        if json.dumps(r["body"], sort_keys=True) == want and r["status"] == 200:
            return list(r["products"])
    return None


@pytest.fixture
def live(sandbox, workers, start_service):
    """A single-tenant service with a worker behind it."""
    settings = make_settings(BROKERS["redis"], sandbox.url)
    workers(settings)
    service = start_service(settings, **LIMITS)
    return settings, service


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def test_auth_keys_and_what_each_may_do(live):
    _, service = live
    url = service.url
    one = ev("auth-s1")
    none = httpx.post(f"{url}/v1/events", json=one)
    assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
    assert none.json()["error"]["code"] == "unauthorized"
    wrong = httpx.post(f"{url}/v1/events", json=one, headers={"Authorization": "Bearer " + INGEST[:-1] + "X"})
    assert wrong.status_code == 401
    assert httpx.post(f"{url}/v1/events", json=one, headers={"Authorization": INGEST}).status_code == 401
    assert (
        httpx.post(f"{url}/v1/events", json=one, headers=RD).status_code == 403
    )  # publishable key: no ingest
    view = {"event": one, "native": ["a"]}
    assert httpx.post(f"{url}/v1/views", json=view, headers=RD).status_code == 403
    assert httpx.post(f"{url}/v1/events", json=one, headers=ING).status_code == 202
    # The Fashion.AI token is not a key of the service.
    assert (
        httpx.post(f"{url}/v1/events", json=one, headers={"Authorization": f"Bearer {TOKEN}"}).status_code
        == 401
    )
    assert INGEST not in service.output() and READ not in service.output() and SIGNING not in service.output()


def test_batch_publishes_the_valid_events_and_names_index_and_field_of_the_refused(live, sandbox):
    settings, service = live
    good = [ev(f"batch-{settings.tenant}-{n}", f"p{n + 1:04d}") for n in range(3)]
    batch = [
        good[0],
        {"sessionId": "x", "eventType": "productView", "data": {}},
        good[1],
        {"sessionId": "x", "eventType": "pageView", "data": {"id": "1"}},
        {**good[2], "extra": 1},
        good[2],
        {"sessionId": "", "eventType": "customShelf", "data": {"id": ""}},
        {"userId": None, "sessionId": "x", "eventType": "productView", "data": {"id": "1"}},
    ]
    r = httpx.post(f"{service.url}/v1/events", json={"events": batch}, headers=ING)
    assert r.status_code == 207, r.text
    body = r.json()
    assert body["accepted"] == 3
    assert [i for i, mid in enumerate(body["ids"]) if mid] == [0, 2, 5]
    assert all(len(body["ids"][i]) == 32 for i in (0, 2, 5))
    assert [(x["index"], x["field"]) for x in body["refused"]] == [
        (1, "data.id"),
        (3, "eventType"),
        (4, "extra"),
        (6, "sessionId"),
        (7, "userId"),
    ]
    assert body["failed"] == []
    wait_until(lambda: all(answered(sandbox, g) for g in good), 60, "the valid events delivered")
    # Every event refused: 422, and the first refusal named in `error`.
    bad = httpx.post(f"{service.url}/v1/events", json={"events": [batch[1], batch[3]]}, headers=ING)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "data.id" and bad.json()["ids"] == [None, None]
    single = httpx.post(f"{service.url}/v1/events", json=batch[3], headers=ING)
    assert single.status_code == 422 and single.json()["error"]["field"] == "eventType"
    shapes: list[dict[str, object]] = [{"events": "no"}, {"events": [], "more": 1}, {"events": []}]
    for shape in shapes:
        r = httpx.post(f"{service.url}/v1/events", json=shape, headers=ING)
        assert r.status_code == 422 and r.json()["error"]["field"] == "events"


def test_bad_and_oversize_bodies_get_json_errors(live):
    _, service = live
    url = f"{service.url}/v1/events"
    r = httpx.post(url, content=b"{not json", headers=ING)
    assert r.status_code == 400 and r.json()["error"]["field"] == "body"
    deep = b"[" * 100_000 + b"]" * 100_000  # bigger than the limit
    assert httpx.post(url, content=deep, headers=ING).status_code == 413
    nested = b"[" * 20_000 + b"]" * 20_000  # within the limit, deeper than the parser goes
    r = httpx.post(url, content=nested, headers=ING)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    big = {"events": [ev("s" * 500, "i" * 500) for _ in range(40)]}  # ~45 KB... and then some
    big["events"] += big["events"]
    r = httpx.post(url, json=big, headers=ING)
    assert r.status_code == 413 and r.json()["error"]["code"] in ("too_large", "too_many_events")
    many = {"events": [ev("s", "i")] * 51}
    r = httpx.post(url, json=many, headers=ING)
    assert r.status_code == 413 and r.json()["error"] == {
        "code": "too_many_events",
        "message": "at most 50 events",
        "field": "events",
    }

    # A chunked body has no Content-Length: it is cut off as it streams in.
    def chunks():
        yield b'{"events": ['
        for _ in range(2_000):
            yield b'{"sessionId": "s", "eventType": "productView", "data": {"id": "x"}},'
        yield b"{}]}"

    r = httpx.post(url, content=chunks(), headers=ING)
    assert r.status_code == 413
    assert httpx.get(f"{service.url}/nowhere").json()["error"]["code"] == "not_found"
    assert httpx.put(url, headers=ING).json()["error"]["code"] == "method_not_allowed"


def test_rankings_reads_merge_and_wait_for_a_notice(live, sandbox):
    settings, service = live
    url = service.url
    first = ev(f"rd-{settings.tenant}", "p0011", user="u77")
    assert httpx.post(f"{url}/v1/events", json=first, headers=ING).status_code == 202
    wait_until(lambda: answered(sandbox, first) is not None, 60, "first event delivered")
    ranked = answered(sandbox, first)
    assert ranked is not None
    query = {"eventType": "productView", "id": "p0011", "sessionId": first["sessionId"], "userId": "u77"}

    def cached():
        return httpx.get(f"{url}/v1/rankings", params=query, headers=ING).json()["source"] == "cached"

    wait_until(cached, 30, "the ranking cached")
    got = httpx.get(f"{url}/v1/rankings", params=query, headers=ING).json()
    assert got["products"] == ranked and got["age_ms"] >= 0
    native = ["zz", *reversed(ranked[:3]), "yy"]
    merged = httpx.post(f"{url}/v1/rankings", json={**query, "native": native}, headers=ING).json()
    assert merged["products"] == [*ranked[:3], "zz", "yy"]
    # Nothing cached for this shopper: "native", and an empty list without a native list.
    nobody = httpx.get(f"{url}/v1/rankings", params={**query, "userId": "nobody"}, headers=ING).json()
    assert nobody == {"products": [], "source": "native", "age_ms": None}

    # wait_ms: the ranking is not cached yet when the read starts; the worker's
    # notice wakes it long before the bound (5 s).
    later = ev(f"rdw-{settings.tenant}", "p0012")
    assert httpx.post(f"{url}/v1/events", json=later, headers=ING).status_code == 202
    started = time.monotonic()
    waited = httpx.get(
        f"{url}/v1/rankings",
        params={"eventType": "productView", "id": "p0012", "sessionId": later["sessionId"], "wait_ms": 5000},
        headers=ING,
        timeout=10,
    ).json()
    elapsed = time.monotonic() - started
    assert waited["source"] in ("fresh", "cached")  # cached: it landed before the read began
    assert waited["products"] == answered(sandbox, later)
    assert elapsed < 4.0, elapsed
    # A ranking that never comes: the native answer at the bound, not later.
    started = time.monotonic()
    r = httpx.get(
        f"{url}/v1/rankings", params={**query, "userId": "never", "wait_ms": 300}, headers=ING, timeout=10
    )
    assert r.json()["source"] == "native"
    assert 0.3 <= time.monotonic() - started < 2.3
    for bad, field in (
        ({"wait_ms": "-1"}, "wait_ms"),
        ({"wait_ms": "99999"}, "wait_ms"),
        ({"eventType": "x"}, "eventType"),
    ):
        r = httpx.get(f"{url}/v1/rankings", params={**query, **bad}, headers=ING)
        assert r.status_code == 422 and r.json()["error"]["field"] == field
    r = httpx.get(f"{url}/v1/rankings", params={"eventType": "productView", "sessionId": "s"}, headers=ING)
    assert r.status_code == 422 and r.json()["error"]["field"] == "id"
    r = httpx.post(f"{url}/v1/rankings", json={**query, "native": [1]}, headers=ING)
    assert r.status_code == 422 and r.json()["error"]["field"] == "native[0]"


def test_views_publish_and_wait_returns_the_fresh_merged_order(live, sandbox):
    settings, service = live
    event = ev(f"view-{settings.tenant}", "p0013")
    r = httpx.post(
        f"{service.url}/v1/views",
        json={"event": event, "native": CATALOG, "wait_ms": 5000},
        headers=ING,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    ranked = answered(sandbox, event)
    assert ranked is not None
    assert body["source"] == "fresh" and len(body["message_id"]) == 32
    assert body["products"][: len(ranked)] == ranked and sorted(body["products"]) == CATALOG
    r = httpx.post(
        f"{service.url}/v1/views", json={"event": {**event, "data": {}}, "native": []}, headers=ING
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "event.data.id"


def test_cors_allow_list_on_reads_only(live):
    settings, service = live
    url = service.url
    shopper = {"eventType": "productView", "id": "c1", "sessionId": "cors-s"}
    sig = sign_shopper(SIGNING, settings.tenant, "cors-s")
    listed = httpx.get(
        f"{url}/v1/rankings", params={**shopper, "shopper": sig}, headers={**RD, "Origin": ORIGIN}
    )
    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == ORIGIN and "Origin" in listed.headers["vary"]
    evil = httpx.get(
        f"{url}/v1/rankings",
        params={**shopper, "shopper": sig},
        headers={**RD, "Origin": "https://evil.example"},
    )
    assert cors_headers(evil) == {}
    pre = httpx.options(
        f"{url}/v1/rankings",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    assert "GET" in pre.headers["access-control-allow-methods"]
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    pre_evil = httpx.options(
        f"{url}/v1/rankings",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert cors_headers(pre_evil) == {} and pre_evil.status_code == 403
    # Ingest is never open to browsers: no CORS headers, even for a listed origin.
    for path in ("/v1/events", "/v1/views"):
        pre_ingest = httpx.options(
            f"{url}{path}", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
        )
        assert cors_headers(pre_ingest) == {}
    posted = httpx.post(f"{url}/v1/events", json=ev("cors-s"), headers={**ING, "Origin": ORIGIN})
    assert posted.status_code == 202 and cors_headers(posted) == {}
    # An ingest key used from a browser page gets no CORS headers either.
    with_ingest = httpx.get(f"{url}/v1/rankings", params=shopper, headers={**ING, "Origin": ORIGIN})
    assert with_ingest.status_code == 200 and cors_headers(with_ingest) == {}


def test_a_read_key_reads_only_the_signed_shopper(live):
    settings, service = live
    url = f"{service.url}/v1/rankings"
    me = {"eventType": "productView", "id": "s1", "sessionId": "sess-me", "userId": "u-me"}
    good = sign_shopper(SIGNING, settings.tenant, "sess-me", "u-me")
    assert httpx.get(url, params={**me, "shopper": good}, headers=RD).status_code == 200
    cases = {
        "missing": None,
        "invalid": good[:-4] + ("0000" if not good.endswith("0000") else "1111"),
        "expired": sign_shopper(SIGNING, settings.tenant, "sess-me", "u-me", now=time.time() - 7200),
        "malformed": "not-a-token",
    }
    for verdict, token in cases.items():
        params = dict(me) if token is None else {**me, "shopper": token}
        r = httpx.get(url, params=params, headers=RD)
        assert r.status_code == 403, (verdict, r.text)
        assert r.json()["error"]["code"] == f"shopper_signature_{verdict}"
    # Another shopper's valid signature does not open this shopper's ranking.
    theirs = sign_shopper(SIGNING, settings.tenant, "sess-other", "u-other")
    assert httpx.get(url, params={**me, "shopper": theirs}, headers=RD).status_code == 403
    assert httpx.get(url, params={**me, "userId": "u-other", "shopper": good}, headers=RD).status_code == 403
    # Signed with another secret or for another tenant: refused.
    forged = sign_shopper("another-secret-0123456789", settings.tenant, "sess-me", "u-me")
    assert httpx.get(url, params={**me, "shopper": forged}, headers=RD).status_code == 403
    elsewhere = sign_shopper(SIGNING, "other-tenant", "sess-me", "u-me")
    assert httpx.get(url, params={**me, "shopper": elsewhere}, headers=RD).status_code == 403
    # POST form: the signature in the body.
    r = httpx.post(url, json={**me, "native": ["a"], "shopper": good}, headers=RD)
    assert r.status_code == 200 and r.json()["products"] == ["a"]
    # An ingest key (server side) needs no signature.
    assert httpx.get(url, params=me, headers=ING).status_code == 200


def test_tenant_mapping_routes_each_key_to_its_tenant(sandbox, start_service, tmp_path):
    tenants = {"shop-a": {"app_token": TOKEN}, "shop-b": {"app_token": TOKEN}}
    settings = make_settings(BROKERS["redis"], sandbox.url, tenants=tenants)
    broker = redis.Redis.from_url(settings.broker_url)
    key_a, key_b = "key-for-shop-a-0123456789", "key-for-shop-b-0123456789"
    service = start_service(
        settings,
        FASHIONAI_INGEST_KEYS=f"{key_a}@shop-a,{key_b}@shop-b",
        FASHIONAI_READ_KEYS=f"{READ}@shop-a",
        FASHIONAI_SHOPPER_SIGNING_KEY=f"{SIGNING}@shop-a",
    )
    try:
        for key, n in ((key_a, 2), (key_b, 3)):
            r = httpx.post(
                f"{service.url}/v1/events",
                json={"events": [ev(f"t{i}") for i in range(n)]},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert r.status_code == 202
        assert broker.llen(settings.queue_for("shop-a")) == 2
        assert broker.llen(settings.queue_for("shop-b")) == 3
        # The read key of shop-a with a signature for shop-b's shopper: refused.
        other = sign_shopper(SIGNING, "shop-b", "t0")
        r = httpx.get(
            f"{service.url}/v1/rankings",
            params={"eventType": "productView", "id": "p1", "sessionId": "t0", "shopper": other},
            headers=RD,
        )
        assert r.status_code == 403
    finally:
        broker.delete(settings.queue_for("shop-a"), settings.queue_for("shop-b"))
        broker.close()
    # A key without its tenant in a multi-tenant deployment: the service does not start,
    # and says which entry is wrong without printing the key.
    env = service_env(settings, FASHIONAI_INGEST_KEYS=f"{key_a}@shop-a,{key_b}")
    popen, _, log_path = launch(env, str(tmp_path))
    assert popen.wait(30) == 2
    out = Path(log_path).read_text()
    assert "FASHIONAI_INGEST_KEYS: entry 2 needs @TENANT" in out and key_b not in out
    env = service_env(settings, FASHIONAI_INGEST_KEYS=f"{key_a}@shop-zz")
    popen, _, log_path = launch(env, str(tmp_path))
    assert popen.wait(30) == 2 and key_a not in Path(log_path).read_text()


@pytest.fixture
def private_cache(tmp_path):
    proc, url = start_redis(log_dir=str(tmp_path))
    yield proc, url
    proc.stop()


def test_healthz_readyz_and_the_committed_openapi(sandbox, start_service, private_cache):
    proc, cache_url = private_cache
    settings = make_settings(BROKERS["redis"], sandbox.url, redis_url=cache_url)
    service = start_service(settings)  # default limits: the committed description is for these
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{service.url}/readyz").json() == {"status": "ready", "broker": "ok", "cache": "ok"}
    served = httpx.get(f"{service.url}/openapi.json").json()
    committed = (ROOT / "docs" / "openapi" / "service.json").read_text()
    assert render(served) == committed, "regenerate: python -m fashionai_pipeline.producers.service.openapi"
    proc.stop()
    r = httpx.get(f"{service.url}/readyz", timeout=10)
    assert r.status_code == 503 and r.json() == {"status": "unready", "broker": "ok", "cache": "unavailable"}
    assert httpx.get(f"{service.url}/healthz").status_code == 200  # up, though not ready
    # A read with the cache down is the fallback, not an error.
    r = httpx.post(
        f"{service.url}/v1/rankings",
        json={"eventType": "productView", "id": "x", "sessionId": "s", "native": ["n1", "n2"]},
        headers=ING,
        timeout=10,
    )
    assert r.status_code == 200 and r.json() == {
        "products": ["n1", "n2"],
        "source": "fallback",
        "age_ms": None,
    }


def test_schemathesis_against_the_served_description(sandbox, start_service, private_cache, tmp_path):
    _, cache_url = private_cache
    settings = make_settings(BROKERS["redis"], sandbox.url, redis_url=cache_url)
    service = start_service(settings, FASHIONAI_SERVE_MAX_WAIT_MS="50")
    broker = redis.Redis.from_url(settings.broker_url)
    try:
        argv = [
            os.path.join(os.path.dirname(sys.executable), "schemathesis"),
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            f"{service.url}/openapi.json",
            "-H",
            f"Authorization: Bearer {INGEST}",
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--request-timeout",
            "10",
            "--checks",
            "all",
        ]
        # Its own working directory: schemathesis keeps a cache of found failures there.
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    finally:
        broker.delete(settings.queue_for(settings.tenant))
        broker.close()
    assert "Traceback" not in service.output()


def test_serve_without_keys_refuses_to_start(sandbox, tmp_path):
    settings = make_settings(BROKERS["redis"], sandbox.url)
    popen, _, log_path = launch(service_env(settings, FASHIONAI_INGEST_KEYS=""), str(tmp_path))
    assert popen.wait(30) == 2
    assert "FASHIONAI_INGEST_KEYS" in Path(log_path).read_text()


def test_a_broker_that_is_down_is_a_503_naming_each_event_not_published(sandbox, start_service, tmp_path):
    proc, broker_url = start_redis(log_dir=str(tmp_path))
    try:
        settings = make_settings(broker_url, sandbox.url)
        service = start_service(settings)
        assert httpx.post(f"{service.url}/v1/events", json=ev("up"), headers=ING).status_code == 202
        proc.stop()
        batch = {"events": [ev("down-1"), {"sessionId": "x"}, ev("down-2")]}
        r = httpx.post(f"{service.url}/v1/events", json=batch, headers=ING, timeout=10)
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["accepted"] == 0 and body["ids"] == [None, None, None]
        assert body["failed"] == [
            {"index": 0, "code": "broker_unavailable"},
            {"index": 2, "code": "broker_unavailable"},
        ]
        assert [x["index"] for x in body["refused"]] == [1]
        single = httpx.post(f"{service.url}/v1/events", json=ev("down-3"), headers=ING, timeout=10)
        assert single.status_code == 503 and single.json()["error"]["code"] == "broker_unavailable"
        view = httpx.post(
            f"{service.url}/v1/views", json={"event": ev("down-4"), "native": ["a"]}, headers=ING, timeout=10
        )
        assert view.status_code == 503 and view.json()["error"]["code"] == "broker_unavailable"
        ready = httpx.get(f"{service.url}/readyz", timeout=10).json()
        assert ready["broker"] == "unavailable"
    finally:
        proc.stop()

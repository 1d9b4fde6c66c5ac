"""`fashionai-pipeline serve` against hostile or sloppy clients and settings (real processes, loopback).

Keys that are the Fashion.AI token or listed twice, body encodings and types, slow and unfinished
requests, HEAD, strict integers, repeated query parameters, ambiguous shopper signatures, and the
broker dropping a page view.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from fashionai_pipeline.producers.service.signing import sign_shopper, verify_shopper
from fashionai_pipeline.worker.local import free_port
from tests.conftest import BROKERS, TOKEN, make_settings
from tests.service.conftest import INGEST, READ, SIGNING, launch, service_env

pytestmark = pytest.mark.integration

ING = {"Authorization": f"Bearer {INGEST}"}
RD = {"Authorization": f"Bearer {READ}"}
EVENT = {"sessionId": "hostile-s", "eventType": "productView", "data": {"id": "p1"}}
READ_BODY = {"eventType": "productView", "id": "p1", "sessionId": "hostile-s", "native": ["a"]}
VIEW_BODY = {"event": EVENT, "native": ["a"], "wait_ms": 0}
POSTS = {"/v1/events": EVENT, "/v1/rankings": READ_BODY, "/v1/views": VIEW_BODY}


@pytest.fixture
def service(sandbox, start_service):
    settings = make_settings(BROKERS["redis"], sandbox.url)
    return settings, start_service(settings, FASHIONAI_SERVE_MAX_BODY="65536")


def refused_at_start(settings, tmp_path, **extra: str) -> str:
    """The output of a service that must refuse to start (exit status 2)."""
    popen, _, log_path = launch(service_env(settings, **extra), str(tmp_path))
    assert popen.wait(30) == 2
    return Path(log_path).read_text()


def raw(url: str, data: bytes, *, then: bytes = b"", pause: float = 0.05, wait: float = 30) -> bytes:
    """Send `data` on a fresh connection, then `then` after `pause`; what comes back until close."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait) as sock:
        sock.sendall(data)
        if then:
            time.sleep(pause)
            sock.sendall(then)
        got = b""
        while True:
            chunk = sock.recv(65_536)
            if not chunk:
                return got
            got += chunk


def json_of(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


# -- 1, 4: keys ---------------------------------------------------------------------------


def test_the_fashionai_token_is_refused_at_start_as_any_key(sandbox, tmp_path):
    settings = make_settings(BROKERS["redis"], sandbox.url)
    out = refused_at_start(settings, tmp_path, FASHIONAI_INGEST_KEYS=f"{INGEST},{TOKEN}")
    assert "FASHIONAI_INGEST_KEYS: entry 2 is a Fashion.AI app token" in out and TOKEN not in out
    out = refused_at_start(settings, tmp_path, FASHIONAI_READ_KEYS=TOKEN)
    assert "FASHIONAI_READ_KEYS: entry 1 is a Fashion.AI app token" in out and TOKEN not in out
    # Multi-tenant: any tenant's token, under any tenant.
    token_a, token_b = "TokenA-0123456789abcdefgh", "TokenB-0123456789abcdefgh"
    tenants = {"shop-a": {"app_token": token_a}, "shop-b": {"app_token": token_b}}
    multi = make_settings(BROKERS["redis"], sandbox.url, tenants=tenants)
    for keys in (f"{token_a}@shop-a", f"{INGEST}@shop-a,{token_a}@shop-b", f"{token_b}@shop-a"):
        out = refused_at_start(
            multi,
            tmp_path,
            FASHIONAI_INGEST_KEYS=keys,
            FASHIONAI_READ_KEYS="",
            FASHIONAI_SHOPPER_SIGNING_KEY=f"{SIGNING}@shop-a",
        )
        assert "is a Fashion.AI app token" in out and token_a not in out and token_b not in out


def test_a_key_listed_twice_or_as_both_kinds_is_refused_at_start(sandbox, tmp_path):
    tenants = {"shop-a": {"app_token": TOKEN}, "shop-b": {"app_token": TOKEN}}
    settings = make_settings(BROKERS["redis"], sandbox.url, tenants=tenants)
    key = "same-key-for-two-shops-0123"
    common = {"FASHIONAI_READ_KEYS": "", "FASHIONAI_SHOPPER_SIGNING_KEY": f"{SIGNING}@shop-a"}
    out = refused_at_start(settings, tmp_path, FASHIONAI_INGEST_KEYS=f"{key}@shop-a,{key}@shop-b", **common)
    assert "FASHIONAI_INGEST_KEYS: entry 2 repeats the key of entry 1" in out and key not in out
    out = refused_at_start(
        settings,
        tmp_path,
        FASHIONAI_INGEST_KEYS=f"{INGEST}@shop-a,{key}@shop-b",
        FASHIONAI_READ_KEYS=f"{key}@shop-b",
        FASHIONAI_SHOPPER_SIGNING_KEY=f"{SIGNING}@shop-b",
    )
    assert "FASHIONAI_READ_KEYS: entry 1 is also FASHIONAI_INGEST_KEYS entry 2" in out and key not in out


# -- 2, 3, 9: body encodings and types ---------------------------------------------------


def test_gzip_bodies_are_decoded_within_the_bound_and_broken_ones_are_400(service):
    _, svc = service
    for path, body in POSTS.items():
        r = httpx.post(
            svc.url + path,
            content=gzip.compress(json.dumps(body).encode()),
            headers={**ING, "Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
        assert r.status_code in (200, 202), (path, r.text)
        for bad in (b"abcd", gzip.compress(b"{}")[:-6]):
            r = httpx.post(svc.url + path, content=bad, headers={**ING, "Content-Encoding": "gzip"})
            assert r.status_code == 400, (path, r.text)
            assert r.json()["error"]["code"] == "invalid_body" and r.json()["error"]["field"] == "body"
    # A small body that inflates past FASHIONAI_SERVE_MAX_BODY: 413, not a full inflate.
    bomb = gzip.compress(b" " * 10_000_000)
    assert len(bomb) < 65_536
    r = httpx.post(svc.url + "/v1/events", content=bomb, headers={**ING, "Content-Encoding": "gzip"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert "Traceback" not in svc.output()


def test_any_other_encoding_is_415_before_the_body_is_read(service):
    _, svc = service
    for coding in ("deflate", "br", "zstd", "bogus", "gzip, gzip", "compress"):
        for path in POSTS:
            r = httpx.post(
                svc.url + path, content=b"abcd", headers={**ING, "Content-Encoding": coding}, timeout=10
            )
            assert r.status_code == 415, (coding, path, r.text)
            assert r.json()["error"] == {
                "code": "unsupported_encoding",
                "message": "a body may be sent as Content-Encoding: identity or gzip, nothing else",
                "field": "Content-Encoding",
            }
    # The probe's hang: the headers, then the body a moment later, on a raw socket.
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {INGEST}\r\n"
        "Content-Encoding: deflate\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
    ).encode()
    status, body = json_of(raw(svc.url, head, then=b"abcd"))
    assert status == 415 and body["error"]["code"] == "unsupported_encoding"
    # identity is the absence of an encoding.
    r = httpx.post(svc.url + "/v1/events", json=EVENT, headers={**ING, "Content-Encoding": "identity"})
    assert r.status_code == 202


def test_a_body_declared_as_another_type_is_415_naming_the_expected_one(service):
    _, svc = service
    for path, body in POSTS.items():
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            r = httpx.post(svc.url + path, content=json.dumps(body), headers={**ING, "Content-Type": kind})
            assert r.status_code == 415, (path, kind, r.text)
            assert r.json()["error"]["code"] == "unsupported_media_type"
            assert r.json()["error"]["field"] == "Content-Type"
            assert "application/json" in r.json()["error"]["message"]
        # application/json with parameters, and no Content-Type at all: JSON.
        for headers in ({"Content-Type": "application/json; charset=utf-8"}, {}):
            r = httpx.post(svc.url + path, content=json.dumps(body), headers={**ING, **headers})
            assert r.status_code in (200, 202), (path, headers, r.text)


# -- 6: slow and unfinished requests -----------------------------------------------------


def test_slow_bodies_and_unfinished_headers_are_cut_off(sandbox, start_service):
    settings = make_settings(BROKERS["redis"], sandbox.url)
    svc = start_service(settings, FASHIONAI_SERVE_BODY_TIMEOUT="1", FASHIONAI_SERVE_IDLE_TIMEOUT="2")
    # A body shorter than its Content-Length: 408 as JSON, and the connection closes.
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {INGEST}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    started = time.monotonic()
    status, body = json_of(raw(svc.url, head + b'{"sessionId"'))
    assert status == 408 and body["error"] == {
        "code": "body_timeout",
        "message": "the body did not arrive in full within 1 s",
        "field": "body",
    }
    assert time.monotonic() - started < 20  # generous: the bound is 1 s (+ a close)
    # Headers that never end, and a connection that never sends a request: closed.
    for opening in (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n", b"GET /healthz HT", b""):
        started = time.monotonic()
        assert raw(svc.url, opening) == b""
        assert time.monotonic() - started < 25  # generous: the bound is 2 s
    # An idle keep-alive connection too: answered, then closed once idle for the bound.
    started = time.monotonic()
    answer = raw(svc.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status":"ok"}')
    assert time.monotonic() - started < 25
    assert "Traceback" not in svc.output()


# -- 5: HEAD ------------------------------------------------------------------------------


def test_head_is_answered_wherever_get_is(service):
    _, svc = service
    query = {"eventType": "productView", "id": "p1", "sessionId": "s-head"}
    for path, params in (("/healthz", {}), ("/readyz", {}), ("/openapi.json", {}), ("/v1/rankings", query),
                         ("/metrics", {})):  # fmt: skip
        got = httpx.get(svc.url + path, params=params, headers=ING)
        head = httpx.head(svc.url + path, params=params, headers=ING)
        assert head.status_code == got.status_code == 200, (path, head.text)
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"]
    # The same checks as GET: no key, no answer.
    assert httpx.head(svc.url + "/v1/rankings", params=query).status_code == 401
    assert "HEAD" in httpx.put(svc.url + "/healthz").headers["allow"]


# -- 10, 11: strict integers, repeated parameters ----------------------------------------


def test_integers_are_integers_and_a_parameter_is_given_once(service):
    _, svc = service
    for extra, field in (
        ({"wait_ms": "10"}, "wait_ms"),
        ({"wait_ms": True}, "wait_ms"),
        ({"wait_ms": 1.5}, "wait_ms"),
        ({"page_size": "3"}, "page_size"),
        ({"page_size": True}, "page_size"),
        ({"page_size": 2.5}, "page_size"),
    ):
        for path, body in (("/v1/rankings", READ_BODY), ("/v1/views", VIEW_BODY)):
            r = httpx.post(svc.url + path, json={**body, **extra}, headers=ING)
            assert r.status_code == 422 and r.json()["error"]["field"] == field, (path, extra, r.text)
    assert (
        httpx.post(svc.url + "/v1/rankings", json={**READ_BODY, "wait_ms": 10}, headers=ING).status_code
        == 200
    )
    query = {"eventType": "productView", "id": "p1", "sessionId": "s-int"}
    url = svc.url + "/v1/rankings"
    assert httpx.get(url, params={**query, "wait_ms": "10", "page_size": "2"}, headers=ING).status_code == 200
    for name, value in (("wait_ms", "\u0661\u0660"), ("page_size", "\u0663"), ("wait_ms", "1.0")):
        r = httpx.get(url, params={**query, name: value}, headers=ING)
        assert r.status_code == 422 and r.json()["error"]["field"] == name, (name, value, r.text)
    # The probe's id=p0009&id=p0010: refused, naming the parameter.
    r = httpx.get(url + "?eventType=productView&sessionId=s&id=p0009&id=p0010", headers=ING)
    assert r.status_code == 400 and r.json()["error"] == {
        "code": "duplicate_parameter",
        "message": "given more than once",
        "field": "id",
    }


# -- 8, 12: the shopper signature ---------------------------------------------------------


def test_the_signed_fields_cannot_be_shifted_across_their_separator(service):
    settings, svc = service
    tenant = settings.tenant
    with pytest.raises(ValueError, match="control characters"):
        sign_shopper(SIGNING, tenant, "s1\nu1", "")
    # The probe's forgery: signed for sessionId "s1\nu1" and no userId, sent as s1 / "u1\n".
    expires = int(time.time()) + 600
    message = f"fashionai-shopper:v1\n{tenant}\ns1\nu1\n\n{expires}".encode()
    forged = f"{expires}.{hmac.new(SIGNING.encode(), message, hashlib.sha256).hexdigest()}"
    assert verify_shopper((SIGNING.encode(),), forged, tenant, "s1\nu1", "") == "malformed"
    for session, user in (("s1", "u1\n"), ("s1\r", "u1"), ("s1\x00", None)):
        params = {"eventType": "productView", "id": "p1", "sessionId": session, "shopper": forged}
        if user is not None:
            params["userId"] = user
        r = httpx.get(svc.url + "/v1/rankings", params=params, headers=RD)
        assert r.status_code in (403, 422), r.text
        if r.status_code == 403:
            assert r.json()["error"]["code"] == "shopper_signature_malformed"


def test_a_token_is_ascii_digits_and_lowercase_hex(service):
    settings, svc = service
    good = sign_shopper(SIGNING, settings.tenant, "s-tok")
    expires, mac = good.split(".")
    arabic = "".join(chr(0x0660 + int(d)) for d in expires)
    query = {"eventType": "productView", "id": "p1", "sessionId": "s-tok"}
    url = svc.url + "/v1/rankings"
    assert httpx.get(url, params={**query, "shopper": good}, headers=RD).status_code == 200
    for token in (f"{expires}.{mac.upper()}", f"{arabic}.{mac}", f"{expires}.{mac[:-1]}\u0660", f"+{good}"):
        r = httpx.get(url, params={**query, "shopper": token}, headers=RD)
        assert r.status_code == 403 and r.json()["error"]["code"] == "shopper_signature_malformed", token


# -- 12: messages -------------------------------------------------------------------------


def test_refusals_name_the_right_thing(service):
    _, svc = service
    r = httpx.get(svc.url + "/metrics", headers=RD)
    assert r.status_code == 403 and "publish" not in r.json()["error"]["message"]
    r = httpx.post(svc.url + "/v1/events", json={"events": [None, EVENT, 3, "x"]}, headers=ING)
    assert r.status_code == 207, r.text
    assert r.json()["refused"] == [
        {"index": i, "field": f"events[{i}]", "message": "must be an event object"} for i in (0, 2, 3)
    ]
    r = httpx.post(svc.url + "/v1/events", json=[1], headers=ING)
    assert r.status_code == 422 and r.json()["error"]["field"] == "body"
    assert "list" not in r.text and "NoneType" not in r.text
    r = httpx.post(svc.url + "/v1/views", json={"event": "x", "native": []}, headers=ING)
    assert r.status_code == 422 and r.json()["error"]["field"] == "event"
    assert "str" not in r.json()["error"]["message"]


# -- 13: a page view the broker does not take ---------------------------------------------


def test_a_dropped_page_view_is_a_503(sandbox, start_service):
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: every publish fails
    settings = make_settings(dead, sandbox.url, on_broker_down="drop", publish_timeout=0.2)
    svc = start_service(settings)
    r = httpx.post(svc.url + "/v1/views", json={**VIEW_BODY, "wait_ms": 100}, headers=ING, timeout=10)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "broker_unavailable"
    r = httpx.post(svc.url + "/v1/events", json=EVENT, headers=ING, timeout=10)
    assert r.status_code == 503 and r.json()["failed"] == [{"index": 0, "code": "dropped"}]
    assert TOKEN not in svc.output()

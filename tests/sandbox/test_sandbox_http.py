"""The recommendation endpoint over real HTTP on loopback: answers, auth, refusals, log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from fashionai_pipeline.sandbox import SandboxServer
from fashionai_pipeline.sandbox.demo_catalog import demo_catalog
from fashionai_pipeline.sandbox.looks import substitutes

MakeEvent = Callable[..., dict[str, object]]
Post = Callable[..., httpx.Response]
CATALOG = demo_catalog()


def _category(product_id: str) -> str:
    product = CATALOG.get(product_id)
    assert product is not None, product_id
    return product.category


@pytest.mark.parametrize("user", [None, "90"])
@pytest.mark.parametrize(
    ("event_type", "item_id"),
    [
        ("productView", "p0010"),
        ("categoryView", "skirts"),
        ("shopTheLook", "p0020"),
        ("customShelf", ""),
    ],
)
def test_each_event_type_answers_a_list_of_product_ids(
    post: Post, make_event: MakeEvent, event_type: str, item_id: str, user: str | None
) -> None:
    for pid in ("p0001", "p0002"):  # two earlier views: every type has enough data
        assert post(make_event("productView", pid, "s1", user)).status_code == 200
    response = post(make_event(event_type, item_id, "s1", user))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    products = response.json()["products"]
    assert list(response.json()) == ["products"]
    assert 0 < len(products) <= 24  # max_products
    assert all(isinstance(p, str) and p in CATALOG.index for p in products)


def test_product_view_excludes_the_viewed_product(post: Post, make_event: MakeEvent) -> None:
    products = post(make_event("productView", "p0123")).json()["products"]
    assert "p0123" not in products
    viewed = CATALOG.get("p0123")
    assert viewed is not None
    for p in products:  # similar: same or substitutable category, at least two shared attributes
        other = CATALOG.get(p)
        assert other is not None
        assert other.category == viewed.category or other.category in substitutes(viewed.category)
        shared = [a for a in ("silhouette", "pattern", "fabric", "style", "occasion", "colour", "season")
                  if viewed.attribute(a) == other.attribute(a)]  # fmt: skip
        assert len(shared) >= 2, (p, shared)


def test_custom_shelf_is_empty_until_two_views(post: Post, make_event: MakeEvent) -> None:
    shelf = make_event("customShelf", "", "fresh")
    assert post(shelf).json() == {"products": []}  # a brand-new session
    assert post(make_event("productView", "p0050", "fresh")).status_code == 200
    # one view, and a customShelf request carries no signal: still not enough
    assert post(shelf).json() == {"products": []}
    assert post(make_event("productView", "p0051", "fresh")).status_code == 200
    assert post(shelf).json()["products"] != []
    assert post(make_event("customShelf", "", "another")).json() == {"products": []}


def test_unknown_ids_answer_200_with_an_empty_list(post: Post, make_event: MakeEvent) -> None:
    for pid in ("p0001", "p0002"):
        post(make_event("productView", pid, "u"))
    for event_type, item in (("productView", "sku-x"), ("shopTheLook", "sku-x"), ("categoryView", "Pants")):
        response = post(make_event(event_type, item, "u"))
        assert (response.status_code, response.json()) == (200, {"products": []})


def test_a_users_history_follows_them_into_new_sessions(post: Post, make_event: MakeEvent) -> None:
    florals = [p.id for p in CATALOG.products if p.category == "dresses" and p.pattern == "floral"][:3]
    blacks = [p.id for p in CATALOG.products if p.category == "dresses" and p.colour == "black"][:3]
    for alice, bob in zip(florals, blacks, strict=True):
        post(make_event("productView", alice, "sa", "alice"))
        post(make_event("productView", bob, "sb", "bob"))
    # brand-new sessions, yet not cold: each user's history follows them across sessions
    first = post(make_event("categoryView", "dresses", "s-new-1", "alice")).json()["products"]
    bob = post(make_event("categoryView", "dresses", "s-new-2", "bob")).json()["products"]
    anonymous = post(make_event("categoryView", "dresses", "s-new-3")).json()["products"]
    assert first and bob and anonymous == []
    assert first != bob


@pytest.mark.parametrize("sent", [None, "wrong-Zq9-token", ""])
def test_missing_or_wrong_token_is_401_without_echo(
    post: Post,
    server: SandboxServer,
    client: httpx.Client,
    token: str,
    sent: str | None,
) -> None:
    body = {"sessionId": "s", "eventType": "productView", "data": {"id": "p0001"}}
    response = post(body, token=sent)
    assert response.status_code == 401
    assert response.json() == {"error": "invalid or missing X-FashionAI-APP-Token"}
    log_text = client.get(f"{server.base_url}/_sandbox/requests").text
    config_text = client.get(f"{server.base_url}/_sandbox/config").text
    for secret in filter(None, (token, sent)):
        assert secret not in response.text
        assert secret not in log_text
        assert secret not in config_text
    assert server.requests()[-1]["headers"] == {
        "content-type": "application/json",
        "token_ok": False,
    }


def test_right_token_never_reaches_the_log(
    post: Post, make_event: MakeEvent, server: SandboxServer, token: str
) -> None:
    assert post(make_event("productView", "p0001")).status_code == 200
    assert token not in json.dumps(server.requests())
    assert token not in repr(server.config)


def _body(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "userId": "90",
        "sessionId": "s",
        "eventType": "productView",
        "data": {"id": "p0001"},
    }
    for key, value in changes.items():
        if value is KeyError:
            del body[key]
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_body(sessionId=KeyError), "sessionId: required"),
        (_body(sessionId=""), "sessionId: must be a non-empty string"),
        (_body(sessionId=123), "sessionId: must be a non-empty string"),
        (_body(userId=None), "userId: must be a non-empty string, not null"),
        (
            _body(eventType="pageView"),
            "eventType: must be one of productView, categoryView, shopTheLook, customShelf",
        ),
        (_body(data={"id": ""}), "data.id: must be a non-empty string for productView"),
        (
            _body(eventType="customShelf", data={"id": "p0001"}),
            'data.id: must be "" for customShelf',
        ),
        (_body(timestamp=1), "timestamp: unknown field"),
        (_body(data={"id": "p0001", "qty": 1}), "data.qty: unknown field"),
        (_body(data=KeyError), "data: required"),
    ],
)
def test_contract_breaks_are_400_naming_the_field(post: Post, body: object, reason: str) -> None:
    response = post(body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(reason)


def test_invalid_json_is_400_and_logged_as_raw_text(post: Post, server: SandboxServer) -> None:
    response = post(content=b'{"sessionId": "s",')
    assert response.status_code == 400
    assert response.json() == {"error": "body: not valid JSON"}
    assert server.requests()[-1]["body"] == '{"sessionId": "s",'


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_wrong_content_type_is_415(post: Post, make_event: MakeEvent, content_type: str) -> None:
    response = post(make_event("productView", "p0001"), headers={"Content-Type": content_type})
    assert response.status_code == 415
    assert response.json()["error"].startswith("Content-Type:")


def test_json_with_utf8_charset_is_accepted(post: Post, make_event: MakeEvent) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert post(make_event("productView", "p0001"), headers=headers).status_code == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_are_405(client: httpx.Client, server: SandboxServer, method: str) -> None:
    response = client.request(method, server.url)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST, OPTIONS"
    assert server.requests()[-1]["status"] == 405


def test_request_log_records_what_was_sent_and_answered(
    post: Post, make_event: MakeEvent, server: SandboxServer, client: httpx.Client
) -> None:
    before = time.time()
    ok = post(make_event("shopTheLook", "p0300", "s9", "u1"))
    refused = post(make_event("shopTheLook", "", "s9"))
    after = time.time()
    listing = client.get(f"{server.base_url}/_sandbox/requests").json()
    assert listing["count"] == 2
    first, second = listing["requests"]
    assert before <= first["t"] <= second["t"] <= after
    assert first["status"] == 200
    assert first["body"] == make_event("shopTheLook", "p0300", "s9", "u1")
    assert first["headers"] == {"content-type": "application/json", "token_ok": True}
    assert first["products"] == ok.json()["products"]
    assert second["status"] == refused.status_code == 400
    assert "products" not in second

    since = client.get(f"{server.base_url}/_sandbox/requests", params={"since": 1}).json()
    assert since["count"] == 2
    assert [entry["index"] for entry in since["requests"]] == [1]
    assert client.get(f"{server.base_url}/_sandbox/requests?since=-1").status_code == 400

    assert client.delete(f"{server.base_url}/_sandbox/requests").status_code == 200
    assert client.get(f"{server.base_url}/_sandbox/requests").json() == {"count": 0, "requests": []}


def test_request_log_is_bounded_by_log_limit(
    post: Post, make_event: MakeEvent, server: SandboxServer
) -> None:
    server.configure(log_limit=3)
    for n in range(5):
        post(make_event("productView", f"p000{n + 1}"))
    kept = server.requests()
    assert [entry["index"] for entry in kept] == [2, 3, 4]
    assert kept[-1]["body"] == make_event("productView", "p0005")


def test_health(client: httpx.Client, server: SandboxServer) -> None:
    response = client.get(f"{server.base_url}/_sandbox/health")
    assert (response.status_code, response.json()) == (200, {"ok": True})


def test_config_patch_applies_at_runtime(
    post: Post, make_event: MakeEvent, client: httpx.Client, server: SandboxServer, token: str
) -> None:
    response = client.patch(f"{server.base_url}/_sandbox/config", json={"token": "rotated"})
    assert response.status_code == 200
    assert response.json()["token"] == "<redacted>"
    assert post(make_event("productView", "p0001")).status_code == 401
    assert post(make_event("productView", "p0001"), token="rotated").status_code == 200


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"rate_429": 0.5, "no_such_knob": 1}, "no_such_knob"),
        ({"rate_429": 2}, "rate_429"),
        ({"latency_ms": "fast"}, "latency_ms"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_config_patch_refuses_bad_knobs_and_changes_nothing(
    client: httpx.Client, server: SandboxServer, changes: dict[str, object], named: str
) -> None:
    before = client.get(f"{server.base_url}/_sandbox/config").json()
    response = client.patch(f"{server.base_url}/_sandbox/config", json=changes)
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{named}:")
    assert client.get(f"{server.base_url}/_sandbox/config").json() == before


def test_clearing_sessions_forgets_history(
    post: Post, make_event: MakeEvent, client: httpx.Client, server: SandboxServer
) -> None:
    for pid in ("p0001", "p0002"):
        post(make_event("productView", pid, "h"))
    assert post(make_event("customShelf", "", "h")).json()["products"]
    assert client.delete(f"{server.base_url}/_sandbox/sessions").json() == {
        "ok": True,
        "cleared": 1,
    }
    assert post(make_event("customShelf", "", "h")).json() == {"products": []}


def test_refused_ids_and_oversized_bodies(post: Post, make_event: MakeEvent, server: SandboxServer) -> None:
    server.configure(refuse_ids=["gone-1"])
    refused = post(make_event("productView", "gone-1"))
    assert (refused.status_code, refused.json()) == (
        400,
        {"error": "data.id: 'gone-1' is unknown to the catalog"},
    )
    huge = post(content=b'{"sessionId": "' + b"x" * 70_000 + b'"}')
    assert huge.status_code == 413 and huge.json()["error"].startswith("body:")
    assert [entry["status"] for entry in server.requests()] == [400, 413]

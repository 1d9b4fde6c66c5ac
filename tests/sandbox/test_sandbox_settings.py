"""Recommendation settings over HTTP and the CLI: each filter does what it says, for its own type only."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fashionai_pipeline.producers.recsettings import size_run
from fashionai_pipeline.sandbox import SandboxConfig, SandboxServer
from fashionai_pipeline.sandbox.catalog import Product
from fashionai_pipeline.sandbox.config import TokenEntry
from fashionai_pipeline.sandbox.demo_catalog import demo_catalog
from fashionai_pipeline.sandbox.server import TOKEN_HEADER

MakeEvent = Callable[..., dict[str, object]]
Post = Callable[..., httpx.Response]
CATALOG = demo_catalog()
REPO = Path(__file__).resolve().parents[2]
# one request per type, for a session with two earlier views (so every type answers)
PROBES = {
    "product": ("productView", "p0009"),
    "category": ("categoryView", "bags"),
    "shopTheLook": ("shopTheLook", "p0009"),
}


def _p(pid: str) -> Product:
    product = CATALOG.get(pid)
    assert product is not None
    return product


@pytest.fixture
def ranked(post: Post, make_event: MakeEvent, client: httpx.Client, server: SandboxServer, token: str):
    """``ranked(rec_type) -> ids`` for that type's probe, through the explain route (records nothing)."""
    for pid in ("p0011", "p0020"):
        assert post(make_event("productView", pid, "s")).status_code == 200

    def rank(rec_type: str) -> list[str]:
        event_type, item = PROBES[rec_type]
        why = client.post(
            f"{server.base_url}/_sandbox/explain",
            json=make_event(event_type, item, "s"),
            headers={TOKEN_HEADER: token},
        )
        assert why.status_code == 200, why.text
        return [p["id"] for p in why.json()["products"]]

    return rank


def _save(
    client: httpx.Client, server: SandboxServer, rec_type: str, settings: object, **params: str
) -> httpx.Response:
    return client.put(f"{server.base_url}/_sandbox/settings/{rec_type}", json=settings, params=params)


def _discounted(p: Product) -> bool:
    return p.discount > 0


FILTERS = [
    ("product", {"discount": "onlyWith"}, _discounted),
    ("product", {"discount": "onlyWithout"}, lambda p: not _discounted(p)),
    ("product", {"lowStock": {"enabled": True, "limit": 15}}, lambda p: p.units > 15),
    ("category", {"priceRange": {"mode": "above10k"}}, lambda p: p.sale_cents > 1_000_000),
    (
        "category",
        {"priceRange": {"mode": "custom", "min": 200, "max": 400.5}},
        lambda p: 20000 <= p.sale_cents <= 40050,
    ),
    (
        "shopTheLook",
        {"priceRange": {"mode": "custom", "min": 0, "max": 300}},
        lambda p: p.sale_cents <= 30000,
    ),
    (
        "shopTheLook",
        {"discount": "onlyWith", "lowStock": {"enabled": True, "limit": 5}},
        lambda p: _discounted(p) and p.units > 5,
    ),
]


@pytest.mark.parametrize(("rec_type", "settings", "holds"), FILTERS)
def test_each_filter_changes_only_its_own_type_and_clear_restores_it(
    ranked, client: httpx.Client, server: SandboxServer, rec_type: str, settings: dict, holds
) -> None:
    before = {t: ranked(t) for t in PROBES}
    assert all(before.values())
    saved = _save(client, server, rec_type, settings)
    assert saved.status_code == 200, saved.text
    after = {t: ranked(t) for t in PROBES}
    assert after[rec_type], "the filter left nothing to show"
    assert all(holds(_p(pid)) for pid in after[rec_type])
    assert after[rec_type] != before[rec_type]
    assert {t: after[t] for t in PROBES if t != rec_type} == {t: before[t] for t in PROBES if t != rec_type}
    cleared = client.delete(f"{server.base_url}/_sandbox/settings/{rec_type}")
    assert cleared.json()["settings"] == {
        "fullSizeRun": False,
        "discount": "all",
        "priceRange": {"mode": "all", "min": None, "max": None},
        "lowStock": {"enabled": False, "limit": 10},
    }
    assert {t: ranked(t) for t in PROBES} == before


def test_full_size_run_puts_complete_size_runs_first(
    ranked, client: httpx.Client, server: SandboxServer
) -> None:
    before = ranked("product")
    others = {t: ranked(t) for t in ("category", "shopTheLook")}
    assert _save(client, server, "product", {"fullSizeRun": True}).status_code == 200
    after = ranked("product")
    assert {t: ranked(t) for t in ("category", "shopTheLook")} == others
    runs = [size_run(dict(_p(pid).stock)) for pid in after]
    assert runs == sorted(runs, reverse=True)
    assert runs[0] == 1.0
    assert after != before
    assert [size_run(dict(_p(pid).stock)) for pid in before] != runs


def test_settings_apply_on_the_api_route_too(
    post: Post, make_event: MakeEvent, client: httpx.Client, server: SandboxServer
) -> None:
    assert _save(client, server, "product", {"discount": "onlyWithout"}).status_code == 200
    products = post(make_event("productView", "p0009", "fresh")).json()["products"]
    assert products and all(_p(pid).discount == 0 for pid in products)
    assert server.requests()[-1]["products"] == products


def test_read_all_types_and_refusals_name_the_field(client: httpx.Client, server: SandboxServer) -> None:
    base = f"{server.base_url}/_sandbox/settings"
    assert _save(client, server, "category", {"fullSizeRun": True}).status_code == 200
    every = client.get(base).json()
    assert every["storefront"] == "default"
    assert every["settings"]["category"]["fullSizeRun"] is True
    assert every["settings"]["product"]["fullSizeRun"] is False
    bad = _save(client, server, "product", {"priceRange": {"mode": "custom", "min": 5}})
    assert (bad.status_code, bad.json()["error"]) == (400, "priceRange: custom needs both min and max")
    assert _save(client, server, "shelf", {}).status_code == 404
    assert client.get(base, params={"storefront": "nobody"}).status_code == 404
    unknown_token = client.get(base, headers={TOKEN_HEADER: "not-a-token-123"})
    assert unknown_token.status_code == 404 and "not-a-token-123" not in unknown_token.text
    assert (
        client.get(f"{base}/product").json()["settings"]["discount"] == "all"
    )  # refused save changed nothing


def test_each_storefront_has_its_own_settings(make_event: MakeEvent, client: httpx.Client) -> None:
    shop_b = TokenEntry("shop-b", "tok-shop-b-42", ())
    with SandboxServer(SandboxConfig(token="tok-default-1", tokens=(shop_b,))) as server:
        url, base = server.url, server.base_url
        put = client.put(
            f"{base}/_sandbox/settings/product",
            json={"discount": "onlyWith"},
            headers={TOKEN_HEADER: "tok-shop-b-42"},
        )
        assert put.json()["storefront"] == "shop-b"
        body = make_event("productView", "p0009", "s")
        as_b = client.post(url, json=body, headers={TOKEN_HEADER: "tok-shop-b-42"}).json()["products"]
        as_default = client.post(url, json=body, headers={TOKEN_HEADER: "tok-default-1"}).json()["products"]
        assert all(_p(pid).discount > 0 for pid in as_b)
        assert not all(_p(pid).discount > 0 for pid in as_default)
        assert (
            client.get(f"{base}/_sandbox/settings/product", params={"storefront": "shop-b"}).json()[
                "settings"
            ]["discount"]
            == "onlyWith"
        )
        # rotating shop-b's token keeps its settings: they belong to the storefront
        client.patch(
            f"{base}/_sandbox/config", json={"tokens": [{"name": "shop-b", "token": "tok-rotated-7"}]}
        )
        again = client.post(url, json=body, headers={TOKEN_HEADER: "tok-rotated-7"}).json()["products"]
        assert again and all(_p(pid).discount > 0 for pid in again)


def test_reset_clears_histories_settings_and_the_log(
    post: Post, make_event: MakeEvent, client: httpx.Client, server: SandboxServer
) -> None:
    for pid in ("p0001", "p0002"):
        post(make_event("productView", pid, "h", "u1"))
    assert _save(client, server, "shopTheLook", {"discount": "onlyWith"}).status_code == 200
    answer = client.post(f"{server.base_url}/_sandbox/reset").json()
    assert answer == {"ok": True, "cleared": {"sessions": 1, "users": 1, "settings": 1, "requests": 2}}
    assert (
        client.get(f"{server.base_url}/_sandbox/settings/shopTheLook").json()["settings"]["discount"] == "all"
    )
    assert post(make_event("customShelf", "", "h", "u1")).json() == {"products": []}
    assert [entry["status"] for entry in server.requests()] == [200]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fashionai_pipeline.sandbox", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_reads_saves_and_clears_one_type(client: httpx.Client, server: SandboxServer) -> None:
    url = ("--url", server.base_url)
    saved = _cli("settings", "save", "--type", "category", "--discount", "onlyWith", "--price-min", "100",
                 "--price-max", "500", "--low-stock", "3", "--full-size-run", *url)  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    assert json.loads(saved.stdout)["settings"] == {
        "fullSizeRun": True,
        "discount": "onlyWith",
        "priceRange": {"mode": "custom", "min": 100.0, "max": 500.0},
        "lowStock": {"enabled": True, "limit": 3},
    }
    shown = _cli("settings", "show", *url)
    assert json.loads(shown.stdout)["settings"]["category"]["discount"] == "onlyWith"
    assert json.loads(shown.stdout)["settings"]["product"]["discount"] == "all"
    refused = _cli("settings", "save", "--type", "product", "--price-min", "9", *url)
    assert refused.returncode == 1 and "priceRange: custom needs both min and max" in refused.stderr
    cleared = _cli("settings", "clear", "--type", "category", *url)
    assert cleared.returncode == 0
    assert client.get(f"{server.base_url}/_sandbox/settings/category").json()["settings"]["discount"] == "all"
    nobody = _cli("settings", "show", "--url", "http://127.0.0.1:9")
    assert nobody.returncode == 1 and "no sandbox answers" in nobody.stderr

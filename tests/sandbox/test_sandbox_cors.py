"""Browser calls: blocked unless the domain is authorised for the token, as upstream."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from fashionai_pipeline.sandbox import SandboxConfig, SandboxServer
from fashionai_pipeline.sandbox.config import ConfigError, TokenEntry
from fashionai_pipeline.sandbox.cors import origin_allowed
from fashionai_pipeline.sandbox.server import TOKEN_HEADER
from tests.sandbox.test_sandbox_process import sandbox_process

BODY = {"sessionId": "s", "eventType": "productView", "data": {"id": "p0009"}}
SHOP = "https://www.shop-a.com.br"
OTHER = "https://shop-b.example"


def _cors(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def _preflight(client: httpx.Client, url: str, origin: str) -> httpx.Response:
    return client.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-fashionai-app-token",
        },
    )


@pytest.fixture
def shops(client: httpx.Client):
    shop_b = TokenEntry("shop-b", "tok-shop-b", (OTHER,))
    with SandboxServer(SandboxConfig(token="tok-a", authorized_domains=(SHOP,), tokens=(shop_b,))) as server:
        yield server


def test_an_unauthorised_origin_gets_no_cors_headers(client: httpx.Client, shops: SandboxServer) -> None:
    preflight = _preflight(client, shops.url, "https://evil.example")
    assert preflight.status_code == 403 and _cors(preflight) == {}
    simple = client.post(
        shops.url, json=BODY, headers={TOKEN_HEADER: "tok-a", "Origin": "https://evil.example"}
    )
    assert simple.status_code == 403 and _cors(simple) == {}
    assert simple.json()["error"].startswith("Origin:")
    # refused, so nothing was recorded: the session stays unknown
    assert shops.state.engine.history("s").signals == 0
    for origin in ("null", "file://", "https://www.shop-a.com.br.evil.example", "http://www.shop-a.com.br"):
        assert (
            client.post(shops.url, json=BODY, headers={TOKEN_HEADER: "tok-a", "Origin": origin}).status_code
            == 403
        )


def test_an_authorised_origin_passes_with_the_right_headers(
    client: httpx.Client, shops: SandboxServer
) -> None:
    preflight = _preflight(client, shops.url, SHOP)
    assert preflight.status_code == 204
    assert _cors(preflight) == {
        "access-control-allow-origin": SHOP,
        "access-control-allow-methods": "POST",
        "access-control-allow-headers": "Content-Type, X-FashionAI-APP-Token",
        "access-control-max-age": "600",
    }
    assert preflight.headers["vary"] == "Origin"
    answer = client.post(shops.url, json=BODY, headers={TOKEN_HEADER: "tok-a", "Origin": SHOP})
    assert answer.status_code == 200 and answer.json()["products"]
    assert answer.headers["access-control-allow-origin"] == SHOP
    assert answer.headers["vary"] == "Origin"
    # an error answer to an authorised origin is readable by the page too
    bad = client.post(shops.url, json={"sessionId": "s"}, headers={TOKEN_HEADER: "tok-a", "Origin": SHOP})
    assert bad.status_code == 400 and bad.headers["access-control-allow-origin"] == SHOP


def test_each_token_has_its_own_domains(client: httpx.Client, shops: SandboxServer) -> None:
    # a preflight carries no token: shop-b's domain is authorised by some storefront, so it passes
    assert _preflight(client, shops.url, OTHER).status_code == 204
    as_b = client.post(shops.url, json=BODY, headers={TOKEN_HEADER: "tok-shop-b", "Origin": OTHER})
    assert as_b.status_code == 200 and as_b.headers["access-control-allow-origin"] == OTHER
    # ... but the actual call is checked against its own token's domains
    as_a = client.post(shops.url, json=BODY, headers={TOKEN_HEADER: "tok-a", "Origin": OTHER})
    assert as_a.status_code == 403 and _cors(as_a) == {}
    # a wrong token has no storefront: an origin some storefront authorised may read its 401
    wrong_token = client.post(shops.url, json=BODY, headers={TOKEN_HEADER: "nope", "Origin": SHOP})
    assert wrong_token.status_code == 401 and wrong_token.headers["access-control-allow-origin"] == SHOP
    evil = client.post(shops.url, json=BODY, headers={TOKEN_HEADER: "nope", "Origin": "https://evil.example"})
    assert evil.status_code == 401 and _cors(evil) == {}


def test_server_to_server_calls_without_origin_pass(client: httpx.Client, shops: SandboxServer) -> None:
    for token in ("tok-a", "tok-shop-b"):
        answer = client.post(shops.url, json=BODY, headers={TOKEN_HEADER: token})
        assert answer.status_code == 200 and _cors(answer) == {}
    assert client.post(shops.url, json=BODY).status_code == 401  # the token is still checked
    plain = client.options(shops.url)  # OPTIONS without Origin is not a preflight
    assert plain.status_code == 204 and plain.headers["allow"] == "POST, OPTIONS" and _cors(plain) == {}


def test_no_domain_is_authorised_by_default(client: httpx.Client, server: SandboxServer, token: str) -> None:
    assert _preflight(client, server.url, "http://localhost:3000").status_code == 403
    answer = client.post(
        server.url, json=BODY, headers={TOKEN_HEADER: token, "Origin": "http://localhost:3000"}
    )
    assert answer.status_code == 403 and _cors(answer) == {}
    assert server.requests()[-1]["status"] == 403


@pytest.mark.parametrize(
    ("origin", "domain", "allowed"),
    [
        ("https://shop.example", "shop.example", True),
        ("http://shop.example:8080", "shop.example", True),  # a bare host: any scheme and port
        ("https://shop.example", "shop.example:443", True),
        ("https://shop.example:8443", "shop.example:443", False),
        ("https://shop.example", "https://shop.example:443", True),  # default port may be left out
        ("http://shop.example", "https://shop.example", False),  # a full origin: exact scheme
        ("https://SHOP.example", "shop.example", True),
        ("https://www.shop.example", "shop.example", False),  # no implicit subdomains
        ("https://shop.example/path", "shop.example", False),
        ("null", "shop.example", False),
        ("https://user@shop.example", "shop.example", False),
    ],
)
def test_origin_matching(origin: str, domain: str, allowed: bool) -> None:
    assert origin_allowed(origin, [domain]) is allowed


def test_bad_domains_and_duplicate_tokens_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^authorized_domains: 'https://x.example/path' is not a domain"):
        SandboxConfig(authorized_domains=("https://x.example/path",))
    with pytest.raises(ConfigError, match=r"^tokens: a storefront's token equals the default token"):
        SandboxConfig(token="same-1", tokens=(TokenEntry("b", "same-1"),))
    config = SandboxConfig(tokens=(TokenEntry("b", "secret-b-77", ("b.example",)),))
    assert "secret-b-77" not in repr(config) and "secret-b-77" not in json.dumps(config.public())
    with pytest.raises(ConfigError, match=r"^tokens\[0\]\.name:"):
        config.update({"tokens": [{"name": "default", "token": "x"}]})


def test_cli_flag_and_config_file_authorise_domains(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.json"
    config.write_text(
        json.dumps({"tokens": [{"name": "shop-b", "token": "tok-file-b", "domains": ["shop-b.example"]}]})
    )
    flags = ("--token", "tok-cli", "--authorize-domain", "localhost:3000", "--authorize-domain",
             "https://www.shop-a.com.br", "--config", str(config))  # fmt: skip
    with sandbox_process(*flags) as (_, port), httpx.Client(timeout=10) as client:
        url = f"http://127.0.0.1:{port}/api/v1/products/protected/recommendation"
        for origin, token in (
            ("http://localhost:3000", "tok-cli"),
            (SHOP, "tok-cli"),
            ("https://shop-b.example", "tok-file-b"),
        ):
            assert _preflight(client, url, origin).status_code == 204
            answer = client.post(url, json=BODY, headers={TOKEN_HEADER: token, "Origin": origin})
            assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin
        refused = client.post(
            url, json=BODY, headers={TOKEN_HEADER: "tok-cli", "Origin": "https://shop-b.example"}
        )
        assert refused.status_code == 403
        shown = client.get(f"http://127.0.0.1:{port}/_sandbox/config").json()
        assert shown["authorized_domains"] == ["localhost:3000", "https://www.shop-a.com.br"]
        assert shown["tokens"] == [{"name": "shop-b", "token": "<redacted>", "domains": ["shop-b.example"]}]

"""The example shops (examples/django, examples/flask, examples/fastapi) under their real servers.

gunicorn with --preload and three workers for Django and Flask, uvicorn for FastAPI, on a
free loopback port; the real Redis broker and cache, a real worker and the sandbox. What a
shopper's browser sees is checked against what the pipeline holds: the events on the queue
and, once a worker has run, the ranking cached for that shopper (never a fixed list, so the
catalog's ids can change).
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.kombu_redis import message_body
from fashionai_pipeline.producers.message import decode
from fashionai_pipeline.producers.reader import RankingReader, merge
from tests.conftest import BROKERS, delivered_bodies, make_settings, wait_until
from tests.examples.shops import EXAMPLES, load_storefront, login, rendered, running_shop

pytestmark = pytest.mark.integration

FRAMEWORKS = ["django", "flask", "fastapi"]
COOKIE = "fashionai_sid"


def _queued(settings) -> list[dict]:
    """The event bodies waiting on the test's queue, oldest first."""
    client = redis.Redis.from_url(settings.broker_url)
    try:
        frames = client.lrange(settings.queue, 0, -1)
    finally:
        client.close()
    return [decode(message_body(json.loads(f))).event.body() for f in reversed(frames)]


def _received(settings) -> int:
    client = redis.Redis.from_url(settings.state_store_url())  # counters live in the state store
    try:
        return int(client.hget(keys.stats(settings.tenant), "received") or 0)
    finally:
        client.close()


def _event(event_type: str, item_id: str, session_id: str, user_id: str | None = None) -> dict:
    body: dict = {"sessionId": session_id, "eventType": event_type, "data": {"id": item_id}}
    return body if user_id is None else {"userId": user_id, **body}


def _django_user(env_db: str) -> str:
    """Create the Django shop's database and a user 'ana'; returns her pk (the Fashion.AI user id)."""
    env = {"SHOP_DB": env_db, "SHOP_SECRET_KEY": "x", "PATH": "/usr/bin:/bin"}
    folder = EXAMPLES / "django"
    run = {"cwd": folder, "env": env, "capture_output": True, "text": True, "timeout": 120, "check": True}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], **run)  # type: ignore[call-overload]
    code = (
        "from django.contrib.auth.models import User\n"
        "print(User.objects.create_user('ana', password='ana-password').pk)"
    )
    out = subprocess.run([sys.executable, "manage.py", "shell", "-v0", "-c", code], **run)  # type: ignore[call-overload]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_pages_publish_their_events_then_render_the_ranked_order(
    framework, sandbox, workers, tmp_path, request
):
    store = load_storefront()
    catalog = store.Catalog.load()
    size = store.PAGE_SIZE
    settings = make_settings(BROKERS["redis"], sandbox.url)
    extra_env = {}
    user_id = "90"  # the Flask and FastAPI demo account "ana"
    if framework == "django":
        extra_env["SHOP_DB"] = str(tmp_path / "shop.sqlite3")
        user_id = _django_user(extra_env["SHOP_DB"])

    product = next(iter(catalog.products))
    category = next(iter(catalog.categories))
    look_piece = list(catalog.products)[len(catalog.products) // 2]
    pages = [
        (f"/products/{product}", "productView", product, catalog.similar(product)),
        (f"/categories/{category}", "categoryView", category, catalog.in_category(category)),
        (f"/looks/{look_piece}", "shopTheLook", look_piece, catalog.look(look_piece)),
        ("/shelf", "customShelf", "", catalog.shelf()),
    ]
    reader = RankingReader(settings)
    request.addfinalizer(reader.close)

    with (
        running_shop(framework, settings, tmp_path, extra_env) as shop,
        httpx.Client(base_url=shop.url, timeout=30) as anon,
        httpx.Client(base_url=shop.url, timeout=30) as member,
    ):
        # 1. No worker yet: each page publishes its event and renders the native order.
        first = anon.get(pages[0][0])
        assert first.status_code == 200, shop.output()[-2000:]
        assert COOKIE in first.cookies
        session = anon.cookies[COOKIE]
        assert rendered(first.text) == pages[0][3][:size]
        for path, _, _, native in pages[1:]:
            page = anon.get(path)
            assert page.status_code == 200
            assert COOKIE not in page.cookies  # the cookie is minted once, then read back
            assert rendered(page.text) == native[:size]

        login(member, framework, "ana", "ana-password")
        member_session = member.cookies[COOKIE]
        assert member_session != session
        assert member.get(pages[0][0]).status_code == 200

        expected = [_event(t, i, session) for _, t, i, _ in pages]
        expected.append(_event("productView", product, member_session, user_id))
        assert _queued(settings) == expected

        # 2. A worker delivers them; the rankings land in the cache for each shopper.
        workers(settings)
        wait_until(lambda: len(delivered_bodies(sandbox)) >= len(expected), 60, "the events delivered")

        def cached(event_type, item_id, sid, uid=None):
            return reader.get(event_type, item_id, sid, uid)

        wait_until(
            lambda: (
                all(cached(t, i, session) for _, t, i, _ in pages)
                and cached("productView", product, member_session, user_id)
            ),
            30,
            "every ranking cached",
        )

        # 3. A later request renders the ranked order: the cached ranking merged with the
        # page's native list. The request publishes again and the worker may replace the
        # ranking meanwhile (a custom shelf follows the session's history), so the page
        # must match the cache as it was just before or just after the request.
        def check(client, path, event_type, item_id, native, sid, uid=None):
            before = cached(event_type, item_id, sid, uid)
            html = client.get(path).text
            after = cached(event_type, item_id, sid, uid)
            choices = [merge(r.products, native)[:size] for r in (before, after) if r is not None]
            assert rendered(html) in choices, (path, rendered(html), choices)
            return before

        for path, event_type, item_id, native in pages:
            ranking = check(anon, path, event_type, item_id, native, session)
            if event_type in ("productView", "categoryView"):
                # Not vacuous: the shop sells what the sandbox ranks (examples/storefront/make_catalog.py).
                assert set(ranking.products) & set(native), "catalog.json and the sandbox share no ids"
                assert rendered(anon.get(path).text) != native[:size]
        check(member, pages[0][0], "productView", product, pages[0][3], member_session, user_id)
        assert f'id="user">{user_id}<' in member.get("/").text

        # 4. Many shoppers at once, spread over the server's workers: every page view is published.
        def visit(n: int) -> int:
            with httpx.Client(base_url=shop.url, timeout=30) as browser:
                pid = list(catalog.products)[n % len(catalog.products)]
                return browser.get(f"/products/{pid}").status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(visit, range(24)))
        assert statuses == [200] * 24
        # Page views so far: 5 in step 1, 4 + 2 + 1 in step 3, 24 here; the index page publishes none.
        views = len(expected) + len(pages) + 2 + 1 + 24
        # Counted as the worker received them: identical events in one batch share an upstream call.
        wait_until(lambda: _received(settings) >= views, 60, "every page view received by the worker")
        assert _received(settings) == views
        assert _queued(settings) == []
        assert "Traceback" not in shop.output()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_page_renders_natively_when_the_broker_and_cache_are_down(framework, tmp_path):
    """The pipeline never breaks a page: nothing listens on the broker or cache port."""
    store = load_storefront()
    catalog = store.Catalog.load()
    settings = make_settings(
        "redis://127.0.0.1:1/0", "http://127.0.0.1:9/unused", redis_url="redis://127.0.0.1:1/1"
    )
    extra_env = {"SHOP_DB": str(tmp_path / "shop.sqlite3")} if framework == "django" else {}
    category = next(iter(catalog.categories))
    with running_shop(framework, settings, tmp_path, extra_env) as shop:
        page = httpx.get(f"{shop.url}/categories/{category}", timeout=30)
        assert page.status_code == 200
        assert rendered(page.text) == catalog.in_category(category)[: store.PAGE_SIZE]
        assert "page view not published" in shop.output()
        # A cookie that is not one of ours (here: far too long) is replaced, never sent upstream.
        hostile = httpx.get(f"{shop.url}/shelf", cookies={COOKIE: "x" * 600}, timeout=30)
        assert hostile.status_code == 200
        fresh = hostile.cookies.get(COOKIE)
        assert fresh is not None and fresh != "x" * 600 and len(fresh) == 32

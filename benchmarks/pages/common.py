"""What the page apps share: the catalog page, the template, each mode's parts (the DIY peer's
Celery app among them)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import jinja2

PRODUCTS = [f"p{n:04d}" for n in range(1, 201)]  # the page's native ordering
# Where the benchmark's pages read and publish (benchmarks.page_server sets them); the raw and
# DIY modes read them here, without the project's Settings.
CACHE_URL = os.environ.get("FASHIONAI_REDIS_URL", "redis://127.0.0.1:6379/1")
QUEUE = os.environ.get("FASHIONAI_QUEUE", "fashionai.events")
TENANT = os.environ.get("FASHIONAI_TENANT", "default")
CATALOG = {pid: {"id": pid, "name": f"Product {pid}", "price": 79.9 + int(pid[1:]) % 97} for pid in PRODUCTS}

_TEMPLATE = jinja2.Environment(autoescape=True).from_string(
    """<!doctype html><html><head><title>{{ title }}</title></head><body>
<h1>{{ title }}</h1><ul class="shelf">
{% for p in products %}<li class="card" data-id="{{ p.id }}"><a href="/product/{{ p.id }}">{{ p.name }}</a>
<span class="price">R$ {{ "%.2f"|format(p.price) }}</span><span class="sizes">{{ sizes }}</span></li>
{% endfor %}</ul></body></html>"""
)
_SIZES = "PP P M G GG"


def render(title: str, order: list[str]) -> str:
    """The product page: ~1 ms of CPU for 200 products on the benchmark machine."""
    return _TEMPLATE.render(title=title, products=[CATALOG[pid] for pid in order], sizes=_SIZES)


def mode() -> str:
    value = os.environ.get("PAGE_MODE", "none")
    if value not in ("none", "raw", "project", "diy"):
        raise SystemExit(f"PAGE_MODE: must be none, raw, project or diy, not {value!r}")
    return value


@dataclass(frozen=True)
class Parts:
    """What a page of PAGE_MODE personalises with; all None for `none`."""

    views: Any = None  # project: PageViews or AsyncPageViews
    shopper: Any = None  # project: its Shopper class
    raw: Any = None  # raw: benchmarks.pages.raw's Raw or AsyncRaw
    deliver: Any = None  # diy: the Celery task
    cache: Any = None  # diy: a redis.Redis


def parts(asyncio: bool) -> Parts:
    """The parts of this process's mode, for an asyncio app or a threaded one. Only the
    `project` mode imports this project: a page without personalisation would not load its
    modules (docs/PERFORMANCE.md measured what they add to the heap)."""
    value = mode()
    if value == "project":
        # The project's page call: publish the view and read its ranking (one round trip when
        # the broker is the cache's Redis and no other publish is in flight).
        from fashionai_pipeline.producers.integrations.common import AsyncPageViews, PageViews, Shopper

        return Parts(views=AsyncPageViews() if asyncio else PageViews(), shopper=Shopper)
    if value == "raw":
        from benchmarks.pages.raw import AsyncRaw, Raw

        return Parts(raw=AsyncRaw(CACHE_URL, QUEUE) if asyncio else Raw(CACHE_URL, QUEUE))
    if value == "diy":
        import redis

        return Parts(deliver=diy_app(), cache=redis.Redis.from_url(CACHE_URL))
    return Parts()


def sync_page(p: Parts, session: str, product: str) -> str:
    """The product page of a threaded server (and the DIY page, whose libraries block)."""
    order = PRODUCTS
    if p.views is not None:
        order = p.views.personalize("product", product, p.shopper(session), PRODUCTS)
    elif p.raw is not None:
        order = p.raw.order(ranking_key(product, session), session, product, PRODUCTS)
    elif p.deliver is not None:
        body = {"sessionId": session, "eventType": "productView", "data": {"id": product}}
        p.deliver.apply_async(args=[body])
        order = plain_merge(p.cache.get(ranking_key(product, session)), PRODUCTS)
    return render(f"Product {product}", order)


async def async_page(p: Parts, session: str, product: str) -> str:
    """The product page of an asyncio server (not for `diy`: its page is `sync_page`, in a thread)."""
    order = PRODUCTS
    if p.views is not None:
        order = await p.views.personalize("product", product, p.shopper(session), PRODUCTS)
    elif p.raw is not None:
        order = await p.raw.order(ranking_key(product, session), session, product, PRODUCTS)
    return render(f"Product {product}", order)


def ranking_key(product: str, session: str) -> str:
    """The cached ranking's key for an anonymous shopper (docs/ARCHITECTURE.md's key formats)."""
    return f"fashionai:{TENANT}:rank:productView:{product}:s:{session}"


def plain_merge(raw: bytes | None, native: list[str]) -> list[str]:
    """The raw and DIY pages' merge: the ranked ids that are on the page, in their order, then
    the rest of the page in its own. A few lines a user would write, with sets: the same
    lines with `pid in native` on lists cost 126 µs per page here instead of 14 µs, so the
    floor and the peer would have carried a cost neither needs (docs/PERFORMANCE.md)."""
    if raw is None:
        return native
    ranked = json.loads(raw)[1:]
    if not ranked:
        return native
    on_page, seen = set(native), set()
    head = []
    for pid in ranked:
        if pid in on_page and pid not in seen:
            seen.add(pid)
            head.append(pid)
    return head + [pid for pid in native if pid not in seen]


def diy_app() -> Any:
    """A Celery app with one task per event, as the Celery docs would have a user write it."""
    from celery import Celery

    app = Celery("diy", broker=os.environ["FASHIONAI_BROKER_URL"])
    app.conf.task_default_queue = os.environ["DIY_QUEUE"]

    @app.task(name="diy.deliver")  # type: ignore[untyped-decorator]
    def deliver(body: dict[str, Any]) -> None:  # never run: the benchmark measures the page
        pass

    return deliver

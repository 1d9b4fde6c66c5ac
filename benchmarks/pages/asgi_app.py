"""The product page on Starlette, for uvicorn (`uvicorn benchmarks.pages.asgi_app:app`).

Only the `project` mode imports this project: a page without personalisation would not load
its modules (docs/PERFORMANCE.md measured what they add to the heap)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from benchmarks.pages.common import (
    CACHE_URL,
    PRODUCTS,
    QUEUE,
    diy_app,
    mode,
    plain_merge,
    ranking_key,
    render,
)

MODE = mode()
views: Any = None
if MODE == "project":
    from fashionai_pipeline.producers.integrations.common import AsyncPageViews, Shopper

    # The project's page call: publish the view and read its ranking (one round trip when the
    # broker is the cache's Redis and no other publish is in flight).
    views = AsyncPageViews()
raw: Any = None
if MODE == "raw":
    from benchmarks.pages.raw import AsyncRaw

    raw = AsyncRaw(CACHE_URL, QUEUE)
deliver = cache = None
if MODE == "diy":
    import redis

    deliver, cache = diy_app(), redis.Redis.from_url(CACHE_URL)


async def page(request: Request) -> HTMLResponse:
    session, product = request.query_params["s"], request.query_params["p"]
    order = PRODUCTS
    if views is not None:
        order = await views.personalize("product", product, Shopper(session), PRODUCTS)
    elif raw is not None:
        order = await raw.order(ranking_key(product, session), session, product, PRODUCTS)
    return HTMLResponse(render(f"Product {product}", order))


def diy_page(request: Request) -> HTMLResponse:
    # A sync endpoint (Starlette runs it in its thread pool): both libraries block.
    assert deliver is not None and cache is not None
    session, product = request.query_params["s"], request.query_params["p"]
    body = {"sessionId": session, "eventType": "productView", "data": {"id": product}}
    deliver.apply_async(args=[body])
    order = plain_merge(cache.get(ranking_key(product, session)), PRODUCTS)  # type: ignore[arg-type]
    return HTMLResponse(render(f"Product {product}", order))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    if views is not None:
        await views.aclose()
    if raw is not None:
        await raw.aclose()


app = Starlette(routes=[Route("/product", diy_page if MODE == "diy" else page)], lifespan=lifespan)

"""The product page on Starlette, for uvicorn (`uvicorn benchmarks.pages.asgi_app:app`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from benchmarks.pages.common import PRODUCTS, diy_app, mode, plain_merge, render
from benchmarks.pages.raw import AsyncRaw
from fashionai_pipeline.producers import Settings
from fashionai_pipeline.producers.integrations.common import AsyncPageViews, Shopper

MODE = mode()
settings = Settings()
# The project's page call: publish the view and read its ranking (one round trip when the
# broker is the cache's Redis and no other publish is in flight).
views = AsyncPageViews(settings) if MODE == "project" else None
deliver = diy_app() if MODE == "diy" else None
cache = redis.Redis.from_url(settings.redis_url) if MODE == "diy" else None
raw = AsyncRaw(settings.redis_url, settings.queue) if MODE == "raw" else None


async def page(request: Request) -> HTMLResponse:
    session, product = request.query_params["s"], request.query_params["p"]
    order = PRODUCTS
    if views is not None:
        order = await views.personalize("product", product, Shopper(session), PRODUCTS)
    elif raw is not None:
        key = f"fashionai:{settings.tenant}:rank:productView:{product}:s:{session}"
        order = await raw.order(key, session, product, PRODUCTS)
    return HTMLResponse(render(f"Product {product}", order))


def diy_page(request: Request) -> HTMLResponse:
    # A sync endpoint (Starlette runs it in its thread pool): both libraries block.
    assert deliver is not None and cache is not None
    session, product = request.query_params["s"], request.query_params["p"]
    body = {"sessionId": session, "eventType": "productView", "data": {"id": product}}
    deliver.apply_async(args=[body])
    key = f"fashionai:{settings.tenant}:rank:productView:{product}:s:{session}"
    return HTMLResponse(render(f"Product {product}", plain_merge(cache.get(key), PRODUCTS)))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    if views is not None:
        await views.aclose()
    if raw is not None:
        await raw.aclose()


app = Starlette(routes=[Route("/product", diy_page if MODE == "diy" else page)], lifespan=lifespan)

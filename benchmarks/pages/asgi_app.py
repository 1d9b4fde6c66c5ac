"""The product page on Starlette, for uvicorn (`uvicorn benchmarks.pages.asgi_app:app`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from benchmarks.pages.common import PRODUCTS, parts, plain_merge, ranking_key, render

PARTS = parts(asyncio=True)
views, shopper, raw, deliver, cache = PARTS.views, PARTS.shopper, PARTS.raw, PARTS.deliver, PARTS.cache


async def page(request: Request) -> HTMLResponse:
    session, product = request.query_params["s"], request.query_params["p"]
    order = PRODUCTS
    if views is not None:
        order = await views.personalize("product", product, shopper(session), PRODUCTS)
    elif raw is not None:
        order = await raw.order(ranking_key(product, session), session, product, PRODUCTS)
    return HTMLResponse(render(f"Product {product}", order))


def diy_page(request: Request) -> HTMLResponse:
    # A sync endpoint (Starlette runs it in its thread pool): both libraries block.
    assert deliver is not None and cache is not None
    session, product = request.query_params["s"], request.query_params["p"]
    body = {"sessionId": session, "eventType": "productView", "data": {"id": product}}
    deliver.apply_async(args=[body])
    order = plain_merge(cache.get(ranking_key(product, session)), PRODUCTS)
    return HTMLResponse(render(f"Product {product}", order))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    if views is not None:
        await views.aclose()
    if raw is not None:
        await raw.aclose()


app = Starlette(routes=[Route("/product", diy_page if deliver is not None else page)], lifespan=lifespan)

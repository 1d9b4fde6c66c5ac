"""The product page on Starlette, for uvicorn (`uvicorn benchmarks.pages.asgi_app:app`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from benchmarks.pages.common import async_page, parts, sync_page

PARTS = parts(asyncio=True)


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(await async_page(PARTS, request.query_params["s"], request.query_params["p"]))


def diy_page(request: Request) -> HTMLResponse:
    # A sync endpoint (Starlette runs it in its thread pool): both libraries block.
    return HTMLResponse(sync_page(PARTS, request.query_params["s"], request.query_params["p"]))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    if PARTS.views is not None:
        await PARTS.views.aclose()
    if PARTS.raw is not None:
        await PARTS.raw.aclose()


route = Route("/product", diy_page if PARTS.deliver is not None else page)
app = Starlette(routes=[route], lifespan=lifespan)

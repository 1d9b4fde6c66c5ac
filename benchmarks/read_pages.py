"""Product pages that time their own ranking reads, for `python -m benchmarks.read_bound`.

The page of `benchmarks.pages` (200 native products through the Jinja2 template), with this
project's publish + read, on Starlette (`benchmarks.read_pages:asgi`, for uvicorn) and on
Flask (`benchmarks.read_pages:wsgi`, for gunicorn gthread). Around each read it takes
`perf_counter_ns` before and after: the wall time the caller waits, which is what the
reader's bound counts (a thread waiting for the GIL, or a coroutine waiting for a busy
event loop, is waiting all the same). `GET /_samples` answers the samples (ns), the
sources served since the last call, and the reader's read outcomes so far, as JSON.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

from flask import Flask, request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from benchmarks.pages.common import PRODUCTS, render
from fashionai_pipeline.producers import (
    AsyncPublisher,
    AsyncRankingReader,
    Publisher,
    RankingReader,
    Settings,
)

_lock = threading.Lock()
_samples: list[int] = []
_sources: Counter[str] = Counter()


def _record(ns: int, source: str) -> None:
    _samples.append(ns)  # list.append is atomic under the GIL
    _sources[source] += 1


def _drain(reader: Any) -> dict[str, Any]:
    with _lock:
        reads = reader.stats.snapshot()["reads"] if reader is not None else {}
        out = {"ns": list(_samples), "sources": dict(_sources), "reads": reads}
        _samples.clear()
        _sources.clear()
    return out


# -- Starlette (uvicorn) ---------------------------------------------------------------

_async: dict[str, Any] = {}


async def _asgi_page(request: Request) -> HTMLResponse:
    if not _async:
        settings = Settings()
        _async.update(publisher=AsyncPublisher(settings), reader=AsyncRankingReader(settings))
    session, product = request.query_params["s"], request.query_params["p"]
    await _async["publisher"].product_view(session, product)
    t0 = time.perf_counter_ns()
    served = await _async["reader"].serve("productView", product, session, PRODUCTS)
    _record(time.perf_counter_ns() - t0, served.source)
    return HTMLResponse(render(f"Product {product}", served.products))


async def _asgi_samples(request: Request) -> JSONResponse:
    return JSONResponse(_drain(_async.get("reader")))


asgi = Starlette(routes=[Route("/product", _asgi_page), Route("/_samples", _asgi_samples)])


# -- Flask (gunicorn gthread) --------------------------------------------------------------

wsgi = Flask(__name__)
_sync: dict[str, Any] = {}


@wsgi.get("/product")
def _wsgi_page() -> str:
    if not _sync:
        with _lock:
            if not _sync:
                settings = Settings()
                _sync.update(publisher=Publisher(settings), reader=RankingReader(settings))
    session, product = request.args["s"], request.args["p"]
    _sync["publisher"].product_view(session, product)
    t0 = time.perf_counter_ns()
    served = _sync["reader"].serve("productView", product, session, PRODUCTS)
    _record(time.perf_counter_ns() - t0, served.source)
    return render(f"Product {product}", served.products)


@wsgi.get("/_samples")
def _wsgi_samples() -> tuple[str, int, dict[str, str]]:
    return json.dumps(_drain(_sync.get("reader"))), 200, {"content-type": "application/json"}

"""The product page on Flask, for gunicorn gthread (`gunicorn benchmarks.pages.wsgi_app:app`).

Only the `project` mode imports this project (benchmarks.pages.asgi_app says why)."""

from __future__ import annotations

from typing import Any

from flask import Flask, request

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
    from fashionai_pipeline.producers.integrations.common import PageViews, Shopper

    # The project's page call: publish the view and read its ranking (one round trip when the
    # broker is the cache's Redis, as here).
    views = PageViews()
raw: Any = None
if MODE == "raw":
    from benchmarks.pages.raw import Raw

    raw = Raw(CACHE_URL, QUEUE)
deliver = cache = None
if MODE == "diy":
    import redis

    deliver, cache = diy_app(), redis.Redis.from_url(CACHE_URL)

app = Flask(__name__)


@app.get("/product")
def page() -> str:
    session, product = request.args["s"], request.args["p"]
    order = PRODUCTS
    if views is not None:
        order = views.personalize("product", product, Shopper(session), PRODUCTS)
    elif raw is not None:
        order = raw.order(ranking_key(product, session), session, product, PRODUCTS)
    elif deliver is not None and cache is not None:
        body = {"sessionId": session, "eventType": "productView", "data": {"id": product}}
        deliver.apply_async(args=[body])
        order = plain_merge(cache.get(ranking_key(product, session)), PRODUCTS)  # type: ignore[arg-type]
    return render(f"Product {product}", order)

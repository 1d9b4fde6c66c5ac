"""The product page on Flask, for gunicorn gthread (`gunicorn benchmarks.pages.wsgi_app:app`)."""

from __future__ import annotations

from flask import Flask, request

from benchmarks.pages.common import PRODUCTS, parts, plain_merge, ranking_key, render

PARTS = parts(asyncio=False)
views, shopper, raw, deliver, cache = PARTS.views, PARTS.shopper, PARTS.raw, PARTS.deliver, PARTS.cache

app = Flask(__name__)


@app.get("/product")
def page() -> str:
    session, product = request.args["s"], request.args["p"]
    order = PRODUCTS
    if views is not None:
        order = views.personalize("product", product, shopper(session), PRODUCTS)
    elif raw is not None:
        order = raw.order(ranking_key(product, session), session, product, PRODUCTS)
    elif deliver is not None and cache is not None:
        body = {"sessionId": session, "eventType": "productView", "data": {"id": product}}
        deliver.apply_async(args=[body])
        order = plain_merge(cache.get(ranking_key(product, session)), PRODUCTS)
    return render(f"Product {product}", order)

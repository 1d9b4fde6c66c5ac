"""The product page on Flask, for gunicorn gthread (`gunicorn benchmarks.pages.wsgi_app:app`)."""

from __future__ import annotations

import redis
from flask import Flask, request

from benchmarks.pages.common import PRODUCTS, diy_app, mode, plain_merge, render
from benchmarks.pages.raw import Raw
from fashionai_pipeline.producers import Settings
from fashionai_pipeline.producers.integrations.common import PageViews, Shopper

MODE = mode()
settings = Settings()
# The project's page call: publish the view and read its ranking (one round trip when the
# broker is the cache's Redis, as here).
views = PageViews(settings) if MODE == "project" else None
deliver = diy_app() if MODE == "diy" else None
cache = redis.Redis.from_url(settings.redis_url) if MODE == "diy" else None
raw = Raw(settings.redis_url, settings.queue) if MODE == "raw" else None

app = Flask(__name__)


@app.get("/product")
def page() -> str:
    session, product = request.args["s"], request.args["p"]
    order = PRODUCTS
    if views is not None:
        order = views.personalize("product", product, Shopper(session), PRODUCTS)
    elif raw is not None:
        key = f"fashionai:{settings.tenant}:rank:productView:{product}:s:{session}"
        order = raw.order(key, session, product, PRODUCTS)
    elif deliver is not None and cache is not None:
        body = {"sessionId": session, "eventType": "productView", "data": {"id": product}}
        deliver.apply_async(args=[body])
        key = f"fashionai:{settings.tenant}:rank:productView:{product}:s:{session}"
        order = plain_merge(cache.get(key), PRODUCTS)  # type: ignore[arg-type]
    return render(f"Product {product}", order)

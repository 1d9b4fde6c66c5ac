"""The product page on Flask, for gunicorn gthread (`gunicorn benchmarks.pages.wsgi_app:app`)."""

from __future__ import annotations

import redis
from flask import Flask, request

from benchmarks.pages.common import PRODUCTS, diy_app, mode, plain_merge, render
from fashionai_pipeline.producers import Publisher, RankingReader, Settings

MODE = mode()
settings = Settings()
publisher = Publisher(settings) if MODE == "project" else None
reader = RankingReader(settings) if MODE == "project" else None
deliver = diy_app() if MODE == "diy" else None
cache = redis.Redis.from_url(settings.redis_url) if MODE == "diy" else None

app = Flask(__name__)


@app.get("/product")
def page() -> str:
    session, product = request.args["s"], request.args["p"]
    order = PRODUCTS
    if publisher is not None and reader is not None:
        publisher.product_view(session, product)
        order = reader.order("productView", product, session, PRODUCTS)
    elif deliver is not None and cache is not None:
        body = {"sessionId": session, "eventType": "productView", "data": {"id": product}}
        deliver.apply_async(args=[body])
        key = f"fashionai:{settings.tenant}:rank:productView:{product}:s:{session}"
        order = plain_merge(cache.get(key), PRODUCTS)  # type: ignore[arg-type]
    return render(f"Product {product}", order)

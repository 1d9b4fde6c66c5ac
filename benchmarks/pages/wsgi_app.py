"""The product page on Flask, for gunicorn gthread (`gunicorn benchmarks.pages.wsgi_app:app`)."""

from __future__ import annotations

from flask import Flask, request

from benchmarks.pages.common import parts, sync_page

PARTS = parts(asyncio=False)

app = Flask(__name__)


@app.get("/product")
def page() -> str:
    return sync_page(PARTS, request.args["s"], request.args["p"])

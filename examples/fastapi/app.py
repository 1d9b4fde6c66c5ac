"""The example shop on FastAPI, with fashionai-pipeline's ASGI middleware and dependency.

Run it (Redis and a worker as in the README; the sandbox for Fashion.AI):

    cd examples/fastapi
    SHOP_SECRET_KEY=change-me uvicorn app:app --host 127.0.0.1 --port 8000

Every page goes through one call, `await page.personalize(kind, id, native)`,
with `page` from the `fashionai.page` dependency: it publishes the page's event
(product → productView with the product id, category → categoryView with the
category id, shop the look → shopTheLook with the main piece's id, shelf →
customShelf with "") on the asyncio publisher and returns the page's native
ordering in the shopper's ranked order. The session id is the middleware's own
cookie; the user id is the one this demo's sign-in keeps in Starlette's signed
session (SessionMiddleware).
"""

from __future__ import annotations

import hmac
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

# The example data shared by the three example shops (examples/storefront).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from storefront import TEMPLATES, Catalog, Product

from fashionai_pipeline.producers.integrations.fastapi import FashionAI, FashionAIMiddleware, Page

# Demo accounts: username -> (password, the user id sent to Fashion.AI). A real shop
# has its own authentication; pass its id getter as `user_id`.
DEMO_USERS = {"ana": ("ana-password", "90"), "bruno": ("bruno-password", "91")}

catalog = Catalog.load()
templates = Jinja2Templates(directory=str(TEMPLATES))
fashionai = FashionAI(user_id=lambda request: request.session.get("user_id"))

app = FastAPI(title="Example shop", lifespan=fashionai.lifespan)
app.add_middleware(FashionAIMiddleware, cookie=fashionai.cookie)
# Added last, so it runs first: the user id above reads the signed session.
app.add_middleware(SessionMiddleware, secret_key=os.environ.get("SHOP_SECRET_KEY") or secrets.token_hex(32))

PageView = Annotated[Page, Depends(fashionai.page)]


def render(
    request: Request, title: str, event_type: str, ordered: list[str], main: Product | None = None
) -> HTMLResponse:
    context = {
        "framework": "FastAPI",
        "title": title,
        "event_type": event_type,
        "products": catalog.page(ordered),
        "main": main,
        "user_id": request.session.get("user_id"),
    }
    return templates.TemplateResponse(request, "products.html", context)


def found(value):
    if value is None:
        raise HTTPException(404)
    return value


@app.get("/", response_class=HTMLResponse)
async def index(request: Request) -> HTMLResponse:
    context = {
        "framework": "FastAPI",
        "title": "Example shop",
        "categories": catalog.categories.values(),
        "user_id": request.session.get("user_id"),
    }
    return templates.TemplateResponse(request, "index.html", context)


@app.get("/products/{product_id}", response_class=HTMLResponse)
async def product(request: Request, product_id: str, page: PageView) -> HTMLResponse:
    item = found(catalog.products.get(product_id))
    ordered = await page.personalize("product", product_id, catalog.similar(product_id))
    return render(request, item.name, "productView", ordered, main=item)


@app.get("/categories/{category_id}", response_class=HTMLResponse)
async def category(request: Request, category_id: str, page: PageView) -> HTMLResponse:
    item = found(catalog.categories.get(category_id))
    ordered = await page.personalize("category", category_id, catalog.in_category(category_id))
    return render(request, item.name, "categoryView", ordered)


@app.get("/looks/{product_id}", response_class=HTMLResponse)
async def look(request: Request, product_id: str, page: PageView) -> HTMLResponse:
    item = found(catalog.products.get(product_id))
    ordered = await page.personalize("look", product_id, catalog.look(product_id))
    return render(request, f"Complete the look: {item.name}", "shopTheLook", ordered, main=item)


@app.get("/shelf", response_class=HTMLResponse)
async def shelf(request: Request, page: PageView) -> HTMLResponse:
    ordered = await page.personalize("shelf", "", catalog.shelf())
    return render(request, "Picked for you", "customShelf", ordered)


@app.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    context = {"framework": "FastAPI", "title": "Sign in", "user_id": None}
    return templates.TemplateResponse(request, "login.html", context)


@app.post("/login")
async def login(request: Request) -> RedirectResponse:
    # A urlencoded form, parsed here so the example needs no python-multipart.
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
    account = DEMO_USERS.get(form.get("username", ""))
    if account is None or not hmac.compare_digest(account[0], form.get("password", "")):
        raise HTTPException(403)
    request.session["user_id"] = account[1]
    return RedirectResponse("/", status_code=303)


@app.post("/logout")
async def logout(request: Request) -> RedirectResponse:
    request.session.pop("user_id", None)
    return RedirectResponse("/", status_code=303)

"""The example shop on Flask, with fashionai-pipeline's Flask extension.

Run it (Redis and a worker as in the README; the sandbox for Fashion.AI):

    cd examples/flask
    SHOP_SECRET_KEY=change-me gunicorn --preload -w 3 -b 127.0.0.1:8000 app:app

Every page goes through one call, `fashionai.personalize(kind, id, native)`: it
publishes the page's event (product → productView with the product id, category
→ categoryView with the category id, shop the look → shopTheLook with the main
piece's id, shelf → customShelf with "") and returns the page's native ordering
in the shopper's ranked order. The session id is the extension's own cookie; the
user id is the one this demo's sign-in keeps in Flask's signed session.
"""

from __future__ import annotations

import hmac
import os
import secrets
import sys
from pathlib import Path

from flask import Flask, abort, redirect, render_template, request, session
from werkzeug.wrappers import Response

# The example data shared by the three example shops (examples/storefront).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from storefront import TEMPLATES, Catalog

from fashionai_pipeline.producers.integrations.flask import FashionAI

# Demo accounts: username -> (password, the user id sent to Fashion.AI). A real shop
# has Flask-Login or its own accounts; pass its id getter as `user_id`.
DEMO_USERS = {"ana": ("ana-password", "90"), "bruno": ("bruno-password", "91")}

app = Flask(__name__, template_folder=str(TEMPLATES))
# Sessions are signed with this key: every worker must share it (gunicorn --preload
# builds the app once, so the random fallback is shared; set it in production).
app.secret_key = os.environ.get("SHOP_SECRET_KEY") or secrets.token_hex(32)
catalog = Catalog.load()
fashionai = FashionAI(app, user_id=lambda: session.get("user_id"))


def render(title: str, event_type: str, ordered: list[str], main=None) -> str:
    return render_template(
        "products.html",
        framework="Flask",
        title=title,
        event_type=event_type,
        products=catalog.page(ordered),
        main=main,
        user_id=session.get("user_id"),
    )


@app.get("/")
def index() -> str:
    return render_template(
        "index.html",
        framework="Flask",
        title="Example shop",
        categories=catalog.categories.values(),
        user_id=session.get("user_id"),
    )


@app.get("/products/<product_id>")
def product(product_id: str) -> str:
    item = catalog.products.get(product_id) or abort(404)
    ordered = fashionai.personalize("product", product_id, catalog.similar(product_id))
    return render(item.name, "productView", ordered, main=item)


@app.get("/categories/<category_id>")
def category(category_id: str) -> str:
    item = catalog.categories.get(category_id) or abort(404)
    ordered = fashionai.personalize("category", category_id, catalog.in_category(category_id))
    return render(item.name, "categoryView", ordered)


@app.get("/looks/<product_id>")
def look(product_id: str) -> str:
    item = catalog.products.get(product_id) or abort(404)
    ordered = fashionai.personalize("look", product_id, catalog.look(product_id))
    return render(f"Complete the look: {item.name}", "shopTheLook", ordered, main=item)


@app.get("/shelf")
def shelf() -> str:
    ordered = fashionai.personalize("shelf", "", catalog.shelf())
    return render("Picked for you", "customShelf", ordered)


@app.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    if request.method == "GET":
        return render_template("login.html", framework="Flask", title="Sign in", user_id=None)
    account = DEMO_USERS.get(request.form.get("username", ""))
    if account is None or not hmac.compare_digest(account[0], request.form.get("password", "")):
        abort(403)
    session["user_id"] = account[1]
    return redirect("/", code=303)


@app.post("/logout")
def logout() -> Response:
    session.pop("user_id", None)
    return redirect("/", code=303)

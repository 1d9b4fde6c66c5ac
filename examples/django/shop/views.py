"""The example shop's pages on Django.

Every page goes through one call, `personalize(request, kind, id, native)`: it
publishes the page's event (product → productView with the product id, category
→ categoryView with the category id, shop the look → shopTheLook with the main
piece's id, shelf → customShelf with "") and returns the page's native ordering
in the shopper's ranked order. The session id is the integration's own cookie
(FashionAIMiddleware); the user id is Django's authenticated user's pk.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from storefront import Catalog, Product

from fashionai_pipeline.producers.integrations.django import personalize

catalog = Catalog.load()


def _page(
    request: HttpRequest, title: str, event_type: str, ordered: list[str], main: Product | None = None
) -> HttpResponse:
    context = {
        "framework": "Django",
        "title": title,
        "event_type": event_type,
        "products": catalog.page(ordered),
        "main": main,
        "user_id": _user_id(request),
    }
    return render(request, "products.html", context)


def _user_id(request: HttpRequest) -> str | None:
    return str(request.user.pk) if request.user.is_authenticated else None


def _found(value):
    if value is None:
        raise Http404
    return value


def index(request: HttpRequest) -> HttpResponse:
    context = {
        "framework": "Django",
        "title": "Example shop",
        "categories": catalog.categories.values(),
        "user_id": _user_id(request),
    }
    return render(request, "index.html", context)


def product(request: HttpRequest, product_id: str) -> HttpResponse:
    item = _found(catalog.products.get(product_id))
    ordered = personalize(request, "product", product_id, catalog.similar(product_id))
    return _page(request, item.name, "productView", ordered, main=item)


def category(request: HttpRequest, category_id: str) -> HttpResponse:
    item = _found(catalog.categories.get(category_id))
    ordered = personalize(request, "category", category_id, catalog.in_category(category_id))
    return _page(request, item.name, "categoryView", ordered)


def look(request: HttpRequest, product_id: str) -> HttpResponse:
    item = _found(catalog.products.get(product_id))
    ordered = personalize(request, "look", product_id, catalog.look(product_id))
    return _page(request, f"Complete the look: {item.name}", "shopTheLook", ordered, main=item)


def shelf(request: HttpRequest) -> HttpResponse:
    ordered = personalize(request, "shelf", "", catalog.shelf())
    return _page(request, "Picked for you", "customShelf", ordered)

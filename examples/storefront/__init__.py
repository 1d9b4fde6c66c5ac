"""The example shops' own data: products, categories and each page's native ordering.

Shared by examples/django, examples/flask and examples/fastapi, which differ
only in the framework around it. A real shop has this in its database; here it is
one JSON file, `catalog.json` (or the file named by STOREFRONT_CATALOG), so its
ids can be swapped in one place (make_catalog.py writes it from the sandbox's
catalog: the shop sells exactly what Fashion.AI ranks).

The native ordering of every page is the catalog file's order (the shop's own
merchandising order); personalisation reorders it, never adds to it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

PAGE_SIZE = 24  # products a page renders, after ordering
TEMPLATES = Path(__file__).with_name("templates")


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    category: str


@dataclass(frozen=True, slots=True)
class Category:
    id: str
    name: str


class Catalog:
    """Read-only after load; safe to share between threads and forked workers."""

    def __init__(self, categories: list[Category], products: list[Product]) -> None:
        self.categories = {c.id: c for c in categories}
        self.products = {p.id: p for p in products}
        self._by_category: dict[str, list[str]] = {c.id: [] for c in categories}
        for p in products:
            self._by_category.setdefault(p.category, []).append(p.id)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Catalog:
        path = path or os.environ.get("STOREFRONT_CATALOG") or Path(__file__).with_name("catalog.json")
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            [Category(c["id"], c["name"]) for c in data["categories"]],
            [Product(p["id"], p["name"], p["category"]) for p in data["products"]],
        )

    def similar(self, product_id: str) -> list[str]:
        """Product page: the other products of its category (Fashion.AI ranks 'similar')."""
        category = self.products[product_id].category
        return [pid for pid in self._by_category[category] if pid != product_id]

    def in_category(self, category_id: str) -> list[str]:
        """Category page: every product of the category."""
        return list(self._by_category[category_id])

    def look(self, product_id: str) -> list[str]:
        """Shop the look: pieces of the other categories, to complete the main piece."""
        own = self.products[product_id].category
        return [p.id for p in self.products.values() if p.category != own]

    def shelf(self) -> list[str]:
        """Custom shelf: the whole catalog (the shop's bestseller order)."""
        return list(self.products)

    def page(self, ordered: list[str]) -> list[Product]:
        """The first PAGE_SIZE products of an ordering, as products to render."""
        return [self.products[pid] for pid in ordered[:PAGE_SIZE]]

"""Write examples/storefront/catalog.json: the example shops' products and categories.

A storefront's catalog is what Fashion.AI ranks over, so the examples sell
exactly the sandbox's catalog (the ids it ranks); only names are made up here.
Rerun it when the sandbox's catalog changes:

    .venv/bin/python examples/storefront/make_catalog.py
"""

from __future__ import annotations

import json
from pathlib import Path

from fashionai_pipeline.sandbox.ranking import RankingEngine

NAMES = [  # (category, one product of it)
    ("Dresses", "dress"), ("Shirts", "shirt"), ("Trousers", "trousers"), ("Skirts", "skirt"),
    ("Jackets", "jacket"), ("Knitwear", "jumper"), ("Shoes", "shoes"), ("Bags", "bag"),
    ("Jewellery", "necklace"), ("Scarves", "scarf"), ("Belts", "belt"), ("Hats", "hat"),
]  # fmt: skip
STYLES = ["Linen", "Silk", "Denim", "Wool", "Cotton", "Leather", "Velvet", "Satin", "Tweed", "Cashmere"]


def build() -> dict[str, object]:
    catalog = RankingEngine().catalog
    categories = [
        {"id": cid, "name": NAMES[i][0] if i < len(NAMES) else f"Category {cid}"}
        for i, cid in enumerate(catalog.category_ids)
    ]
    names = {cid: NAMES[i][1] if i < len(NAMES) else "piece" for i, cid in enumerate(catalog.category_ids)}
    products = [
        {
            "id": pid,
            "name": f"{STYLES[n % len(STYLES)]} {names[catalog.product_category[pid]]} {pid}",
            "category": catalog.product_category[pid],
        }
        for n, pid in enumerate(catalog.product_ids)
    ]
    return {"categories": categories, "products": products}


if __name__ == "__main__":
    out = Path(__file__).with_name("catalog.json")
    data = build()
    # One product per line: small diffs when ids change.
    lines = [json.dumps(p, ensure_ascii=False) for p in data["products"]]  # type: ignore[attr-defined]
    text = (
        '{"categories": '
        + json.dumps(data["categories"], ensure_ascii=False)
        + ',\n "products": [\n  '
        + ",\n  ".join(lines)
        + "\n]}\n"
    )
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({len(lines)} products)")

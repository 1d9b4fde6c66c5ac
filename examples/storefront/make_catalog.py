"""Write examples/storefront/catalog.json: the example shops' products and categories.

A storefront's catalog is what Fashion.AI ranks over, so the examples sell
exactly the sandbox's demo catalog: its ids, names and categories.
Rerun it when the sandbox's catalog changes:

    .venv/bin/python examples/storefront/make_catalog.py
"""

from __future__ import annotations

import json
from pathlib import Path

from fashionai_pipeline.sandbox.ranking import RankingEngine


def build() -> dict[str, object]:
    catalog = RankingEngine().catalog
    categories = [{"id": cid, "name": cid.replace("-", " ").title()} for cid in catalog.categories]
    products = [{"id": p.id, "name": p.name, "category": p.category} for p in catalog.products]
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

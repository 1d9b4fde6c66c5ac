"""Why a ranking is what it is: the body of ``POST /_sandbox/explain``.

It ranks exactly as the recommendation route would for the same request at
that moment (same engine call, same settings) but records nothing, then says
for each product which attributes, history and settings put it there:

- ``coldStart``: the type's threshold and the signal events the shopper has;
- ``history``: the session's and user's signal counts, their recent products
  and categories (newest last) and the profile's strongest features;
- ``settings``: the type's settings that were applied (``null`` for customShelf);
- per product: its score and the parts of it — ``similarity`` (productView:
  the shared attributes and whether the category is the same or a
  substitute), ``look`` (shopTheLook: the slot and the compatibility reasons),
  ``popularity`` (categoryView, customShelf), and ``history`` (the profile
  features it matched and their weights, times ``HISTORY_WEIGHT``), plus
  ``sizeRun`` when Full Size Run ordered the list.
"""

from __future__ import annotations

from typing import Any

from fashionai_pipeline.producers.recsettings import rec_type_for
from fashionai_pipeline.sandbox.catalog import Product
from fashionai_pipeline.sandbox.contract import Event
from fashionai_pipeline.sandbox.filters import coverages
from fashionai_pipeline.sandbox.history import History
from fashionai_pipeline.sandbox.looks import compatibility, look_slots, shared_attributes
from fashionai_pipeline.sandbox.ranking import HISTORY_WEIGHT, RankingEngine, Scored, shopper_profile
from fashionai_pipeline.sandbox.storefronts import Storefront

_TOP_FEATURES = 10


def explain(engine: RankingEngine, event: Event, store: Storefront) -> dict[str, Any]:
    """The explanation of ``event``'s ranking for ``store`` (pure: records nothing)."""
    cat = engine.catalog
    session, user = engine.evidence(event)
    scored = engine.scored(event, store.filters)
    rec_type = rec_type_for(event.event_type)
    type_filter = store.filters.get(rec_type) if rec_type is not None else None
    profile = shopper_profile(len(cat.feature_names), session, user)
    need = engine.threshold(event.event_type)
    have = max(session.signals, user.signals)
    main = cat.get(event.item_id) if event.event_type in {"productView", "shopTheLook"} else None
    slots = look_slots(main.category, cat.categories) if main is not None else ()
    size_runs = coverages(cat) if type_filter is not None and type_filter.full_size_run else None
    products = []
    for rank, item in enumerate(scored, 1):
        product = cat.products[item.item]
        entry: dict[str, Any] = {
            "rank": rank,
            **_card(product),
            "score": round(item.score, 4),
            "because": _because(engine, event, main, slots, item, profile),
        }
        if size_runs is not None:
            entry["because"]["sizeRun"] = round(size_runs[item.item], 4)
        products.append(entry)
    return {
        "eventType": event.event_type,
        "id": event.item_id,
        "storefront": store.name,
        "known": _known(engine, event),
        "coldStart": {"need": need, "have": have, "enough": have >= need},
        "history": {
            "session": _history(engine, session),
            "user": _history(engine, user) if event.user_id is not None else None,
            "profile": _strongest(engine, profile),
        },
        "settingsType": rec_type,
        "settings": store.settings.of(rec_type).model_dump(mode="json") if rec_type is not None else None,
        "maxProducts": engine.config.max_products,
        "historyWeight": HISTORY_WEIGHT,
        "products": products,
    }


def _card(product: Product) -> dict[str, Any]:
    return {
        "id": product.id,
        "name": product.name,
        "category": product.category,
        "price": product.price_cents / 100,
        "salePrice": product.sale_cents / 100,
    }


def _known(engine: RankingEngine, event: Event) -> bool:
    if event.event_type == "customShelf":
        return True
    if event.event_type == "categoryView":
        return event.item_id in engine.catalog.members
    return event.item_id in engine.catalog.index


def _because(
    engine: RankingEngine,
    event: Event,
    main: Product | None,
    slots: tuple[tuple[str, ...], ...],
    item: Scored,
    profile: list[float] | None,
) -> dict[str, Any]:
    cat = engine.catalog
    product = cat.products[item.item]
    because: dict[str, Any] = {}
    if event.event_type == "productView" and main is not None:
        shared = shared_attributes(main, product)
        because["similarity"] = {
            "score": item.base,
            "category": "same" if product.category == main.category else "substitute",
            "shared": {name: main.attribute(name) for name in shared},
        }
    elif event.event_type == "shopTheLook" and main is not None:
        fit = compatibility(main, product)
        because["look"] = {
            "slot": list(slots[item.slot]) if 0 <= item.slot < len(slots) else [],
            "score": item.base,
            "reasons": fit[1] if fit is not None else [],
        }
    else:
        because["popularity"] = round(item.base, 4)
    if profile is not None:
        matched = {
            cat.feature_names[f]: round(profile[f], 4) for f in cat.features[item.item] if profile[f] > 0
        }
        because["history"] = {"score": round(HISTORY_WEIGHT * item.affinity, 4), "matched": matched}
    return because


def _history(engine: RankingEngine, history: History) -> dict[str, Any]:
    cat = engine.catalog
    recent: list[dict[str, str]] = []
    for code in history.recent:
        if code >= 0:
            recent.append({"product": cat.products[code].id, "name": cat.products[code].name})
        else:
            recent.append({"category": cat.categories[-code - 1]})
    return {"signals": history.signals, "recent": recent}


def _strongest(engine: RankingEngine, profile: list[float] | None) -> dict[str, float]:
    if profile is None:
        return {}
    names = engine.catalog.feature_names
    top = sorted((f for f, w in enumerate(profile) if w > 0), key=lambda f: (-profile[f], names[f]))
    return {names[f]: round(profile[f], 4) for f in top[:_TOP_FEATURES]}

"""Local checks before rendering: stock (the API reference, docs/UPSTREAM.md: "stock validation
should be done locally before rendering"), and the per-type recommendation settings as a safety
net. Sans-I/O.

**Stock.** The caller gives a stock check, one of:

- a callable `check(ids) -> the available ones among ids` (any iterable; for the asyncio
  reader it may be a coroutine function);
- `RedisStock(key, "set")`: a Redis SET of the ids in stock (`SMISMEMBER`, Redis >= 6.2);
- `RedisStock(key, "hash")`: a Redis HASH of units in stock per id (`HMGET`); more than 0
  units is available, and an id the hash does not hold has none.

The Redis structures live in the storefront's own Redis (`FASHIONAI_STOREFRONT_REDIS_URL`),
never in the ranking cache, which may evict. Unavailable products are removed; with a page
size, `PageFill` walks the page's order (the ranked ids the page has, then the rest of the
native ordering) in chunks and stops once the page is full, so a removed product's place is
taken by the next one in that order and the page keeps its size.

**Facts and the settings safety net.** Fashion.AI applies the storefront's recommendation
settings (producers.recsettings) to its rankings; a ranking cached before a settings change,
or a crowd ranking, may not fit them. With `FASHIONAI_LOCAL_FILTERS` (or `filters=`) and a
facts source, the ranked products are checked again against the settings of the page's type
(productView: "product", categoryView: "category", shopTheLook: "shopTheLook"; customShelf
has none) with `recsettings.apply`: discount, price range (custom, or above R$ 10,000.00),
low stock, and the full-size-run ordering. Only the ranked part is filtered: the native
ordering is the storefront's own choice. A facts source is:

- a callable `facts(ids) -> {id: ProductFacts}` (ids it does not know are left out);
- `RedisFacts(key)`: a Redis HASH, field = product id, value = JSON
  `{"price": "129.90", "discounted": false, "stock": {"P": 2, "M": 0}}` (`price`: what the
  shopper pays, a number or a decimal string; `stock`: units per size, 0s included).

A product without facts is kept (and counted): the check is a safety net over Fashion.AI's
own filters, not a second catalog. A stock check or facts source that fails (raises, or its
Redis does not answer within the read bound) removes nothing: the page renders with what
the storefront listed, and the failure is counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

from fashionai_pipeline.producers.recsettings import (
    ProductFacts,
    RecommendationSettings,
    TypeSettings,
    apply,
    rec_type_for,
)

StockCallable = Callable[[Sequence[str]], Iterable[str] | Awaitable[Iterable[str]]]
FactsCallable = Callable[[Sequence[str]], Mapping[str, ProductFacts] | Awaitable[Mapping[str, ProductFacts]]]


STOCK_KINDS: Final = ("set", "hash")  # RedisStock's kinds (module doc)


@dataclass(frozen=True, slots=True)
class RedisStock:
    """A stock structure in the storefront's Redis: a SET of ids in stock, or a HASH of units."""

    key: str
    kind: Literal["set", "hash"] = "set"

    def __post_init__(self) -> None:
        if self.kind not in STOCK_KINDS:  # else any other word would be read as a hash
            raise ValueError(f"kind: must be one of {', '.join(map(repr, STOCK_KINDS))}, not {self.kind!r}")

    def command(self, ids: Sequence[str]) -> tuple[str, ...]:
        return ("SMISMEMBER" if self.kind == "set" else "HMGET", self.key, *ids)

    def available(self, ids: Sequence[str], reply: Any) -> set[str]:
        """The ids the reply says are in stock. Raises ValueError for a reply of another shape."""
        if not isinstance(reply, list) or len(reply) != len(ids):
            raise ValueError("stock reply does not match the ids asked")
        if self.kind == "set":
            return {pid for pid, flag in zip(ids, reply, strict=True) if flag}
        return {pid for pid, units in zip(ids, reply, strict=True) if units is not None and _units(units) > 0}


@dataclass(frozen=True, slots=True)
class RedisFacts:
    """Product facts in the storefront's Redis: a HASH of id -> JSON facts (module doc)."""

    key: str

    def command(self, ids: Sequence[str]) -> tuple[str, ...]:
        return ("HMGET", self.key, *ids)

    def decode(self, ids: Sequence[str], reply: Any) -> dict[str, ProductFacts]:
        """The facts found; a missing or malformed value is left out (the product is kept unchecked)."""
        if not isinstance(reply, list) or len(reply) != len(ids):
            raise ValueError("facts reply does not match the ids asked")
        out: dict[str, ProductFacts] = {}
        for pid, raw in zip(ids, reply, strict=True):
            if raw is None:
                continue
            try:
                out[pid] = facts_from_json(json.loads(raw))
            except (ValueError, TypeError):
                continue
        return out


StockCheck = StockCallable | RedisStock
FactsSource = FactsCallable | RedisFacts


_PRICE: Final = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")


def _units(raw: Any) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0  # a count that is not a number is no stock we can vouch for


def facts_from_json(obj: object) -> ProductFacts:
    """ProductFacts from decoded JSON (module doc). Raises ValueError naming the field."""
    if not isinstance(obj, dict):
        raise ValueError("facts: must be an object")
    unknown = set(obj) - {"price", "discounted", "stock"}
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: unknown field")
    price, discounted, stock = obj.get("price"), obj.get("discounted", False), obj.get("stock", {})
    if isinstance(price, str) and not _PRICE.fullmatch(price):
        raise ValueError("price: a decimal string has digits and at most 2 decimals")
    if isinstance(price, bool) or not isinstance(price, int | float | str):
        raise ValueError("price: must be a number or a decimal string")
    try:
        amount = Decimal(str(price))
    except InvalidOperation:
        raise ValueError("price: must be a number or a decimal string") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError("price: must be a finite amount >= 0")
    if not isinstance(discounted, bool):
        raise ValueError("discounted: must be true or false")
    if not isinstance(stock, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in stock.items()
    ):
        raise ValueError("stock: must map each size to a whole number of units")
    return ProductFacts(price=amount, discounted=discounted, stock=stock)


def counts_check(counts: Mapping[str, int]) -> StockCallable:
    """A stock check from a map of units per id (the HTTP service's `stock`): > 0 is available,
    an id not in the map has none."""

    def check(ids: Sequence[str]) -> list[str]:
        return [pid for pid in ids if counts.get(pid, 0) > 0]

    return check


def facts_map(facts: Mapping[str, ProductFacts]) -> FactsCallable:
    """A facts source from a map (the HTTP service's `facts`)."""

    def lookup(ids: Sequence[str]) -> dict[str, ProductFacts]:
        return {pid: facts[pid] for pid in ids if pid in facts}

    return lookup


def settings_for(
    filters: RecommendationSettings | TypeSettings | None, event_type: str
) -> TypeSettings | None:
    """The settings that apply to a page of `event_type`, or None when nothing would change."""
    if filters is None:
        return None
    if isinstance(filters, RecommendationSettings):
        rec_type = rec_type_for(event_type)
        if rec_type is None:
            return None
        filters = filters.of(rec_type)
    if filters.filters_nothing and not filters.fullSizeRun:
        return None
    return filters


def filter_ranked(
    settings: TypeSettings, ranked: Sequence[str], facts: Mapping[str, ProductFacts]
) -> tuple[list[str], int, int]:
    """(kept in order, how many the settings dropped, how many had no facts). Pure.

    A product without facts is kept where it stands; the full-size-run re-ordering moves
    only the products with facts (the others keep their places).
    """
    known = [pid for pid in ranked if pid in facts]
    kept_known = apply(settings, known, facts.__getitem__)
    dropped = len(known) - len(kept_known)
    if len(known) == len(ranked):
        return kept_known, dropped, 0
    slots = iter(kept_known)
    out: list[str] = []
    skip = set(known) - set(kept_known)
    for pid in ranked:
        if pid not in facts:
            out.append(pid)
        elif pid not in skip:
            out.append(next(slots))
    return out, dropped, len(ranked) - len(known)


class PageFill:
    """Walks a page's order in chunks, keeping the available ids, until `size` are kept. Pure.

    `size` None: every id is checked (one chunk), nothing is backfilled.
    """

    def __init__(self, order: Sequence[str], size: int | None) -> None:
        self.order = order
        self.size = len(order) if size is None else size
        self.page: list[str] = []
        self.removed = 0
        self._at = 0
        self._chunk = len(order) if size is None else size + size // 2 + 4

    @property
    def done(self) -> bool:
        return len(self.page) >= self.size or self._at >= len(self.order)

    def next_chunk(self) -> list[str]:
        """The next ids to ask about: as many as the page still needs, with some slack."""
        chunk = list(self.order[self._at : self._at + self._chunk])
        self._at += len(chunk)
        self._chunk *= 2  # several removals: ask more at once the next time
        return chunk

    def take(self, chunk: Sequence[str], available: Container[str]) -> None:
        """Keep the available ids of `chunk` (asked with `next_chunk`) until the page is full."""
        for pid in chunk:
            if len(self.page) >= self.size:
                return
            if pid in available:
                self.page.append(pid)
            else:
                self.removed += 1

    def unchecked(self, chunk: Sequence[str]) -> None:
        """The check failed: fill from `chunk` and the rest unchecked (remove nothing)."""
        rest = [*chunk, *self.order[self._at :]]
        self._at = len(self.order)
        self.page.extend(rest[: max(0, self.size - len(self.page))])

    def result(self) -> list[str]:
        return self.page[: self.size]

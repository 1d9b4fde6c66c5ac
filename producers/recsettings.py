"""Fashion.AI's recommendation settings: one schema for the sandbox and the storefront.

Fashion.AI's settings panel (docs/UPSTREAM.md, "Recommendation settings") holds
filters for three recommendation types, each saved on its own: **Product**
(answers to productView), **Category** (categoryView) and **Shop the Look**
(shopTheLook). customShelf has no tab in the panel, so no settings apply to it
(:func:`rec_type_for` answers ``None``). The sandbox applies these settings to
its rankings; the storefront side may apply the same ones to its own product
data as a local safety net. Both import this module, which needs nothing but
pydantic and the standard library.

One type's settings, as JSON (every field optional; a missing one takes the
value shown, which is also what "Clear" restores)::

    {"fullSizeRun": false,
     "discount": "all",                       # "all" | "onlyWith" | "onlyWithout"
     "priceRange": {"mode": "all"},           # | {"mode": "custom", "min": 100, "max": 500}
                                              # | {"mode": "above10k"}
     "lowStock": {"enabled": false, "limit": 10}}

What each filter does to one product (:func:`admits`, :func:`apply`):

- **discount**: ``onlyWith`` keeps products with an active discount,
  ``onlyWithout`` only full-price ones.
- **priceRange**: compares the price the shopper pays (after discount).
  ``custom`` keeps ``min <= price <= max`` (both inclusive, in R$, two decimals
  at most); ``above10k`` keeps ``price > 10000.00``.
- **lowStock**: when enabled, drops a product whose units in stock, summed over
  its sizes, are ``<= limit`` (the panel's example: 10 drops 10 or fewer).
- **fullSizeRun**: filters nothing; it re-orders, stably, by how complete a
  product's size run is (:func:`size_run`: the share of the sizes it is made in
  that have at least one unit). Products with every size in stock come first,
  then those missing one size, and so on; the original (relevance) order
  decides within a group. That is this project's reading of the panel's
  "prioritise products that complement the current stock size grid": a product
  a shopper of any size can buy helps keep size availability balanced.

Validation is strict (no ``"true"`` for ``true``, no ``1`` for a boolean,
unknown fields refused); :func:`parse_type_settings` turns pydantic's errors
into one :class:`SettingsError` whose message starts with the field's dotted
path (``priceRange.min: ...``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, model_validator

__all__ = [
    "ABOVE_10K",
    "EVENT_REC_TYPES",
    "REC_TYPES",
    "LowStock",
    "PriceRange",
    "ProductFacts",
    "RecType",
    "RecommendationSettings",
    "SettingsError",
    "TypeSettings",
    "admits",
    "apply",
    "parse_type_settings",
    "rec_type_for",
    "size_run",
]

RecType = Literal["product", "category", "shopTheLook"]
REC_TYPES: Final[tuple[RecType, ...]] = get_args(RecType)
#: The settings tab whose filters apply to each event type's answer.
EVENT_REC_TYPES: Final[Mapping[str, RecType]] = {
    "productView": "product",
    "categoryView": "category",
    "shopTheLook": "shopTheLook",
}
#: "Above 10 thousand": strictly more than R$ 10,000.00.
ABOVE_10K: Final = Decimal("10000.00")

Discount = Literal["all", "onlyWith", "onlyWithout"]
PriceMode = Literal["all", "custom", "above10k"]

T = TypeVar("T")


def rec_type_for(event_type: str) -> RecType | None:
    """The settings type for ``event_type``; ``None`` for customShelf or an unknown type."""
    return EVENT_REC_TYPES.get(event_type)


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class PriceRange(_Strict):
    """``mode`` all / custom (``min``..``max``, inclusive) / above10k (price > R$ 10,000.00)."""

    mode: PriceMode = "all"
    # R$ with centavos at most; a JSON number or decimal string (never a bool)
    min: Decimal | None = Field(
        default=None, ge=0, max_digits=14, decimal_places=2, allow_inf_nan=False, strict=False
    )
    max: Decimal | None = Field(
        default=None, ge=0, max_digits=14, decimal_places=2, allow_inf_nan=False, strict=False
    )

    @field_serializer("min", "max", when_used="json-unless-none")
    def _as_number(self, value: Decimal) -> float:
        # JSON readers expect a price as a number; two decimals survive a float exactly enough
        return float(value)

    @model_validator(mode="after")
    def _bounds_fit_the_mode(self) -> PriceRange:
        if self.mode == "custom":
            if self.min is None or self.max is None:
                raise ValueError("custom needs both min and max")
            if self.min > self.max:
                raise ValueError(f"min {self.min} is above max {self.max}")
        elif self.min is not None or self.max is not None:
            raise ValueError(f"min and max are only for mode custom, not {self.mode}")
        return self


class LowStock(_Strict):
    """When ``enabled``, products with ``limit`` units or fewer (all sizes) are left out."""

    enabled: bool = False
    limit: int = Field(default=10, ge=0, le=1_000_000)


class TypeSettings(_Strict):
    """The filters of one recommendation type; the defaults are the cleared state."""

    fullSizeRun: bool = False
    discount: Discount = "all"
    priceRange: PriceRange = PriceRange()
    lowStock: LowStock = LowStock()

    @property
    def filters_nothing(self) -> bool:
        """True when every product passes (ordering aside): no filter is active."""
        return self.discount == "all" and self.priceRange.mode == "all" and not self.lowStock.enabled

    @property
    def is_cleared(self) -> bool:
        """True when these are the defaults ("Clear" in the panel)."""
        return self == _CLEARED


_CLEARED: Final = TypeSettings()


class RecommendationSettings(_Strict):
    """One storefront's settings: the three types, each saved and cleared on its own."""

    product: TypeSettings = TypeSettings()
    category: TypeSettings = TypeSettings()
    shopTheLook: TypeSettings = TypeSettings()

    def of(self, rec_type: RecType) -> TypeSettings:
        """The settings of ``rec_type``."""
        settings: TypeSettings = getattr(self, rec_type)
        return settings

    def saved(self, rec_type: RecType, settings: TypeSettings) -> RecommendationSettings:
        """A copy with ``rec_type`` replaced by ``settings``; the other types untouched."""
        return self.model_copy(update={rec_type: settings})

    def cleared(self, rec_type: RecType) -> RecommendationSettings:
        """A copy with ``rec_type`` back to the defaults; the other types untouched."""
        return self.saved(rec_type, _CLEARED)


class SettingsError(ValueError):
    """Settings broke the schema; the message starts with the field's dotted path."""


def parse_type_settings(data: object) -> TypeSettings:
    """Validate one type's settings from JSON text/bytes or an already-decoded dict.

    Raises :class:`SettingsError` naming the first offending field (``body`` for
    something that is not a JSON object). Pure.
    """
    try:
        if isinstance(data, str | bytes | bytearray):
            return TypeSettings.model_validate_json(data)
        if not isinstance(data, dict):
            raise SettingsError("body: must be a JSON object of settings")
        # JSON round-trip semantics for dicts too: money as numbers or strings
        return TypeSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        message = first["msg"].removeprefix("Value error, ")
        raise SettingsError(f"{where}: {message}") from None


@dataclass(frozen=True, slots=True)
class ProductFacts:
    """What the filters need to know about one product.

    ``price``: what the shopper pays now, in R$ (after any discount).
    ``discounted``: whether an active discount applies.
    ``stock``: units in stock per size the product is made in (a one-size
    product has one entry); sizes with 0 units belong in it too, since they
    are what make a size run incomplete.
    """

    price: Decimal
    discounted: bool
    stock: Mapping[str, int]


def size_run(stock: Mapping[str, int]) -> float:
    """Share of the sizes in ``stock`` with at least one unit: 1.0 is a full size run.

    0.0 for a product with no sizes at all. Pure.
    """
    if not stock:
        return 0.0
    return sum(1 for units in stock.values() if units > 0) / len(stock)


def admits(settings: TypeSettings, facts: ProductFacts) -> bool:
    """Whether one product passes ``settings``' filters (discount, price, low stock). Pure.

    ``fullSizeRun`` never excludes; it orders (see :func:`apply`).
    """
    if settings.discount == "onlyWith" and not facts.discounted:
        return False
    if settings.discount == "onlyWithout" and facts.discounted:
        return False
    price_range = settings.priceRange
    if price_range.mode == "above10k" and not facts.price > ABOVE_10K:
        return False
    if price_range.mode == "custom":
        assert price_range.min is not None and price_range.max is not None  # the validator saw to it
        if not price_range.min <= facts.price <= price_range.max:
            return False
    return not (settings.lowStock.enabled and sum(facts.stock.values()) <= settings.lowStock.limit)


def apply(settings: TypeSettings, items: Iterable[T], facts: Callable[[T], ProductFacts]) -> list[T]:
    """Filter ``items`` (best first) by ``settings`` and, with fullSizeRun, re-order them.

    ``facts(item)`` describes each item. Returns a new list; the relevance order
    of ``items`` is kept except for the stable Full Size Run re-ordering. Pure.
    """
    kept = [(item, facts(item)) for item in items]
    kept = [(item, f) for item, f in kept if admits(settings, f)]
    if settings.fullSizeRun:
        kept.sort(key=lambda pair: -size_run(pair[1].stock))
    return [item for item, _ in kept]

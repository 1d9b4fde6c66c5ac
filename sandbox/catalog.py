"""The sandbox's product catalog: what its rankings are made of.

A :class:`Catalog` is immutable once built and shared by every request. It is
either the demo catalog (:func:`fashionai_pipeline.sandbox.demo_catalog.demo_catalog`,
generated the same in every process) or a user's file loaded with
:func:`load_catalog`.

A user catalog is JSON Lines (``.jsonl``, one object per line) or CSV
(``.csv``, a header row). Fields of one product:

==============  ========  ==========================================================
field           required  rule
==============  ========  ==========================================================
id              yes       non-empty string, unique in the file
name            yes       non-empty string
category        yes       non-empty string: the id a categoryView sends
price           yes       list price in R$, >= 0, at most two decimals
discount        no        active discount in percent, 0 <= d < 100 (default 0: none)
stock           yes       units per size: JSON object ``{"P": 3, "M": 0}``; in CSV
                          ``P:3|M:0``; integers >= 0, at least one size
silhouette,     no        strings (default ""): the attributes similarity, looks
pattern,                  and history work with; an empty one never matches
fabric, style,
occasion,
colour, season
==============  ========  ==========================================================

A bad row refuses the whole file with :class:`CatalogError`, whose message
lists each bad row as ``line N: field: problem`` (up to 20 of them).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final

#: The attributes a product is described by, in the order features are numbered.
ATTRIBUTES: Final = ("silhouette", "pattern", "fabric", "style", "occasion", "colour", "season")
_REQUIRED: Final = ("id", "name", "category", "price", "stock")
_FIELDS: Final = (*_REQUIRED, "discount", *ATTRIBUTES)
_MAX_ERRORS: Final = 20


class CatalogError(ValueError):
    """A catalog file was refused; the message names each bad line and field."""


@dataclass(frozen=True, slots=True)
class Product:
    """One product. Money is in centavos (exact); ``stock`` is ((size, units), ...)."""

    id: str
    name: str
    category: str
    price_cents: int
    discount: Decimal
    stock: tuple[tuple[str, int], ...]
    silhouette: str = ""
    pattern: str = ""
    fabric: str = ""
    style: str = ""
    occasion: str = ""
    colour: str = ""
    season: str = ""

    @property
    def sale_cents(self) -> int:
        """What the shopper pays, in centavos: the list price less the discount, rounded."""
        if not self.discount:
            return self.price_cents
        return int((self.price_cents * (100 - self.discount) / 100).to_integral_value())

    @property
    def units(self) -> int:
        """Units in stock over every size."""
        return sum(units for _, units in self.stock)

    def attribute(self, name: str) -> str:
        """The value of one of :data:`ATTRIBUTES`."""
        value: str = getattr(self, name)
        return value

    def public(self) -> dict[str, object]:
        """The product as JSON: prices in R$ as numbers with two decimals."""
        shown: dict[str, object] = {
            "id": self.id,
            "name": self.name,
            "category": self.category,
            "price": self.price_cents / 100,
            "salePrice": self.sale_cents / 100,
            "discount": float(self.discount),
            "stock": dict(self.stock),
        }
        shown.update({name: self.attribute(name) for name in ATTRIBUTES})
        return shown


class Catalog:
    """Products by index, with the lookups the ranking engine needs.

    ``products[i]`` is product number ``i``; ``index[id]`` finds it;
    ``members[category]`` lists its products' indexes (catalog order);
    ``features[i]`` numbers its category and attribute values so a session's
    profile can be indexed by them (``feature_names[f]`` says ``"pattern:
    floral"``). Building costs O(products); nothing is computed per pair here.
    """

    def __init__(self, products: Iterable[Product]) -> None:
        self.products: tuple[Product, ...] = tuple(products)
        if not self.products:
            raise CatalogError("a catalog needs at least one product")
        self.index: dict[str, int] = {}
        members: dict[str, list[int]] = {}
        for i, product in enumerate(self.products):
            if product.id in self.index:
                raise CatalogError(f"product {product.id!r}: duplicate id")
            self.index[product.id] = i
            members.setdefault(product.category, []).append(i)
        self.members: dict[str, tuple[int, ...]] = {c: tuple(m) for c, m in sorted(members.items())}
        self.categories: tuple[str, ...] = tuple(self.members)
        numbering: dict[str, int] = {}
        self.features: tuple[tuple[int, ...], ...] = tuple(
            tuple(
                numbering.setdefault(f"{name}:{value}", len(numbering))
                for name, value in (("category", p.category), *((a, p.attribute(a)) for a in ATTRIBUTES))
                if value
            )
            for p in self.products
        )
        self.feature_names: tuple[str, ...] = tuple(numbering)
        # the attribute values by position (ATTRIBUTES order), -1 where empty: for fast pair tests
        self.attribute_ids: tuple[tuple[int, ...], ...] = tuple(
            tuple(numbering[f"{a}:{p.attribute(a)}"] if p.attribute(a) else -1 for a in ATTRIBUTES)
            for p in self.products
        )
        self.category_feature: dict[str, int] = {c: numbering[f"category:{c}"] for c in self.categories}
        self.in_stock: bytes = bytes(1 if p.units > 0 else 0 for p in self.products)

    def __len__(self) -> int:
        return len(self.products)

    def get(self, product_id: str) -> Product | None:
        """The product with ``product_id``, or ``None``."""
        i = self.index.get(product_id)
        return None if i is None else self.products[i]

    def summary(self) -> dict[str, object]:
        """Counts per category, for ``GET /_sandbox/catalog``."""
        return {
            "products": len(self.products),
            "categories": {c: len(m) for c, m in self.members.items()},
        }


# -- loading a user's file ------------------------------------------------------------


def load_catalog(path: str | Path) -> Catalog:
    """Read a ``.jsonl`` or ``.csv`` catalog file; raises :class:`CatalogError` or ``OSError``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in {".jsonl", ".csv"}:
        raise CatalogError(f"{path.name}: the file must end in .jsonl or .csv")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path.name}: not UTF-8 text (byte {exc.start})") from None
    return parse_catalog(text, "csv" if suffix == ".csv" else "jsonl")


def parse_catalog(text: str, fmt: str) -> Catalog:
    """Parse catalog ``text`` in ``fmt`` (``"jsonl"`` or ``"csv"``); raises :class:`CatalogError`."""
    rows = _jsonl_rows(text) if fmt == "jsonl" else _csv_rows(text)
    products: list[Product] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        try:
            if isinstance(row, str):
                raise _RowError(row)
            product = _product(row, csv_text=fmt == "csv")
            if product.id in seen:
                raise _RowError(f"id: duplicate of line {seen[product.id]}")
            seen[product.id] = line
            products.append(product)
        except _RowError as exc:
            errors.append(f"line {line}: {exc}")
            if len(errors) >= _MAX_ERRORS:
                errors.append("(stopped after 20 bad rows)")
                break
    if errors:
        raise CatalogError("catalog refused:\n  " + "\n  ".join(errors))
    if not products:
        raise CatalogError("catalog refused: no products in the file")
    return Catalog(products)


class _RowError(ValueError):
    pass


def _jsonl_rows(text: str) -> Iterator[tuple[int, Mapping[str, object] | str]]:
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            yield line, "body: not valid JSON"
            continue
        except RecursionError:
            yield line, "body: not valid JSON (nested too deeply)"
            continue
        yield line, obj if isinstance(obj, dict) else "body: must be a JSON object"


def _csv_rows(text: str) -> Iterator[tuple[int, Mapping[str, object] | str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    unknown = [name for name in header if name not in _FIELDS]
    missing = [name for name in _REQUIRED if name not in header]
    if unknown or missing:
        problem = f"unknown column {unknown[0]!r}" if unknown else f"{missing[0]}: required column"
        yield 1, f"header: {problem}"
        return
    for row in reader:
        if None in row:  # more cells than columns
            yield reader.line_num, "row: more cells than the header has columns"
            continue
        yield reader.line_num, {k: v for k, v in row.items() if v not in (None, "")}


def _product(row: Mapping[str, object], *, csv_text: bool) -> Product:
    for name in row:
        if name not in _FIELDS:
            raise _RowError(f"{name}: unknown field (allowed: {', '.join(_FIELDS)})")
    for name in _REQUIRED:
        if name not in row:
            raise _RowError(f"{name}: required")
    text = {
        name: _text(row, name, required=name in _REQUIRED) for name in ("id", "name", "category", *ATTRIBUTES)
    }
    price = _money(row["price"], "price", csv_text)
    discount = _money(row.get("discount", 0), "discount", csv_text)
    if discount >= 100:
        raise _RowError("discount: must be below 100 (percent)")
    return Product(
        id=text["id"],
        name=text["name"],
        category=text["category"],
        price_cents=int(price * 100),
        discount=discount,
        stock=_stock(row["stock"], csv_text),
        **{name: text[name] for name in ATTRIBUTES},
    )


def _text(row: Mapping[str, object], name: str, *, required: bool) -> str:
    given = row.get(name, "")
    if not isinstance(given, str):
        raise _RowError(f"{name}: must be a string")
    value = given.strip()
    if required and not value:
        raise _RowError(f"{name}: must be a non-empty string")
    return value


def _money(value: object, name: str, csv_text: bool) -> Decimal:
    if csv_text and isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise _RowError(f"{name}: must be a number") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise _RowError(f"{name}: must be a number")
    else:
        number = Decimal(str(value))
    if not number.is_finite() or number < 0:
        raise _RowError(f"{name}: must be a finite number >= 0")
    if number != number.quantize(Decimal("0.01")):
        raise _RowError(f"{name}: at most two decimals")
    if number > 10**9:
        raise _RowError(f"{name}: too large")
    return number


def _stock(value: object, csv_text: bool) -> tuple[tuple[str, int], ...]:
    if csv_text and isinstance(value, str):
        pairs: list[tuple[str, object]] = []
        for part in value.split("|"):
            size, sep, text = part.partition(":")
            if not sep:
                raise _RowError(f"stock: {part!r} is not SIZE:UNITS (e.g. P:3|M:0)")
            try:
                pairs.append((size.strip(), int(text)))
            except ValueError:
                raise _RowError(f"stock.{size.strip()}: must be an integer >= 0") from None
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        raise _RowError("stock: must be an object of size -> units")
    if not pairs:
        raise _RowError("stock: needs at least one size")
    sizes: list[tuple[str, int]] = []
    for size, count in pairs:
        units: object = count
        if not size:
            raise _RowError("stock: a size name is empty")
        if isinstance(units, bool) or not isinstance(units, int) or units < 0:
            raise _RowError(f"stock.{size}: must be an integer >= 0")
        if any(size == known for known, _ in sizes):
            raise _RowError(f"stock.{size}: given twice")
        sizes.append((size, units))
    return tuple(sizes)

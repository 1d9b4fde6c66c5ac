"""One storefront's recommendation settings, compiled against the catalog.

Settings change rarely and rankings are asked for thousands of times a second,
so saving a type's settings evaluates the shared predicate
(:func:`fashionai_pipeline.producers.recsettings.admits`) once per catalog
product into a mask; a ranking then costs one byte lookup per candidate. The
meaning stays the shared module's: the mask is exactly ``admits`` and the
Full Size Run order is exactly :func:`~fashionai_pipeline.producers.recsettings.size_run`.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, TypeVar

from fashionai_pipeline.producers.recsettings import ProductFacts, TypeSettings, admits, size_run
from fashionai_pipeline.sandbox.catalog import Catalog, Product

C = TypeVar("C", bound=tuple[Any, ...])


def facts(product: Product) -> ProductFacts:
    """What the settings look at for one catalog product (the price the shopper pays)."""
    return ProductFacts(
        price=Decimal(product.sale_cents) / 100,
        discounted=product.discount > 0,
        stock=dict(product.stock),
    )


class TypeFilter:
    """One type's settings as a mask over the catalog plus the size-run order."""

    def __init__(self, settings: TypeSettings, catalog: Catalog, coverage: tuple[float, ...]) -> None:
        self.settings = settings
        self.mask: bytes | None = (
            None
            if settings.filters_nothing
            else bytes(1 if admits(settings, facts(p)) else 0 for p in catalog.products)
        )
        self.full_size_run = settings.fullSizeRun
        self._coverage = coverage

    def admits(self, index: int) -> bool:
        """Whether catalog product ``index`` passes the filters."""
        return self.mask is None or bool(self.mask[index])

    def first(self, ranked: Iterable[C], count: int) -> list[C]:
        """``order(list(ranked))[:count]``, reading ``ranked`` only as far as it must.

        Full runs come first, so once ``count`` of them are seen nothing after
        them can enter; the partial runs wait in buckets by coverage.
        """
        coverage = self._coverage
        full: list[C] = []
        partial: dict[float, list[C]] = {}
        for item in ranked:
            share = coverage[item[2]]
            if share == 1.0:
                full.append(item)
                if len(full) >= count:
                    return full
            else:
                partial.setdefault(share, []).append(item)
        for share in sorted(partial, reverse=True):
            full.extend(partial[share])
            if len(full) >= count:
                break
        return full[:count]

    def order(self, ranked: list[C]) -> list[C]:
        """With Full Size Run, ``ranked`` (candidates, index at position 2) stably re-ordered
        by size-run coverage, fullest first; else ``ranked`` itself."""
        if not self.full_size_run:
            return ranked
        coverage = self._coverage
        return sorted(ranked, key=lambda item: -coverage[item[2]])


def coverages(catalog: Catalog) -> tuple[float, ...]:
    """Every product's size-run coverage, in catalog order."""
    return tuple(size_run(dict(p.stock)) for p in catalog.products)

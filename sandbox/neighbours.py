"""Per-product lists the rankings start from: similar products, looks, best sellers.

Computed once per product, the first time it is asked for (or all at once by
:meth:`Neighbours.warm`), then reused by every request. They are kept packed as
``bytes`` (int arrays' raw bytes): bytes are invisible to the garbage collector,
arrays are not, and a long-running sandbox ends up holding one of each per product.

- :meth:`Neighbours.similar`: every product similar to one, by
  :func:`~fashionai_pipeline.sandbox.looks.similarity`, best first; counted
  through per-category buckets of each attribute value rather than pair by pair.
- :meth:`Neighbours.look`: per slot of a product's look, the ``LOOK_DEPTH`` best
  in-stock products by :func:`~fashionai_pipeline.sandbox.looks.compatibility`,
  whose parts are looked up per candidate value.
- ``best_sellers``: each category's products by ``popularity`` (a stable
  stand-in for sales figures in [0, 1), from each id's digest).
"""

from __future__ import annotations

from array import array
from hashlib import blake2b
from typing import Final

from fashionai_pipeline.sandbox.catalog import ATTRIBUTES, Catalog
from fashionai_pipeline.sandbox.looks import (
    MIN_SHARED,
    SAME_CATEGORY,
    SIMILARITY_WEIGHTS,
    bold,
    colours_go,
    look_slots,
    occasion_part,
    style_part,
    substitutes,
)

LOOK_DEPTH: Final = 20  # best-going products kept per look slot
_WEIGHTS: Final = tuple(SIMILARITY_WEIGHTS[name] for name in ATTRIBUTES)  # by attribute position


class Neighbours:
    """The memoised lists of one catalog. Event-loop thread only (they fill lazily)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        cat = catalog
        self.popularity: tuple[float, ...] = tuple(
            int.from_bytes(blake2b(p.id.encode("utf-8", "surrogatepass"), digest_size=4).digest()) / 2**32
            for p in cat.products
        )
        self.best_sellers: dict[str, tuple[int, ...]] = {
            c: tuple(sorted(members, key=lambda i: -self.popularity[i])) for c, members in cat.members.items()
        }
        self.best_seller_pops: dict[str, tuple[float, ...]] = {
            c: tuple(self.popularity[i] for i in members) for c, members in self.best_sellers.items()
        }
        self._similar: dict[int, tuple[bytes, bytes]] = {}
        self._looks: dict[int, tuple[tuple[bytes, bytes], ...]] = {}
        self._bucket_cache: dict[str, list[dict[int, tuple[int, ...]]]] = {}
        self._look_keys = tuple(
            (p.style, p.occasion, p.colour, p.season, bold(p.pattern)) for p in cat.products
        )
        self._values = {
            name: {p.attribute(name) for p in cat.products} for name in ("style", "occasion", "colour")
        }

    def similar(self, index: int) -> tuple[array[int], array[int]]:
        """Product ``index``'s similar products (indexes) and their similarity, best first.

        Same scores as :func:`~fashionai_pipeline.sandbox.looks.similarity`, counted
        through per-category buckets of each attribute value instead of pair by pair.
        """
        known = self._similar.get(index)
        if known is not None:
            return _unpack(known)
        cat = self.catalog
        category = cat.products[index].category
        mine = cat.attribute_ids[index]
        weight: dict[int, int] = {}
        shared: dict[int, int] = {}
        bonus: dict[int, int] = {}
        for other in (category, *substitutes(category)):
            buckets = self._buckets(other)
            if buckets is None:
                continue
            extra = SAME_CATEGORY if other == category else 0
            for position, value in enumerate(mine):
                if value < 0:
                    continue
                w = _WEIGHTS[position]
                for j in buckets[position].get(value, ()):
                    weight[j] = weight.get(j, 0) + w
                    shared[j] = shared.get(j, 0) + 1
                    bonus[j] = extra
        pop = self.popularity
        found = sorted(
            ((weight[j] + bonus[j], pop[j], j) for j, n in shared.items() if n >= MIN_SHARED and j != index),
            key=lambda t: (-t[0], -t[1]),
        )
        packed = _pack([j for _, _, j in found], [s for s, _, _ in found])
        self._similar[index] = packed
        return _unpack(packed)

    def _buckets(self, category: str) -> list[dict[int, tuple[int, ...]]] | None:
        known = self._bucket_cache.get(category)
        if known is None:
            members = self.catalog.members.get(category)
            if members is None:
                return None
            ids = self.catalog.attribute_ids
            known = []
            for position in range(len(_WEIGHTS)):
                bucket: dict[int, list[int]] = {}
                for j in members:
                    bucket.setdefault(ids[j][position], []).append(j)
                known.append({value: tuple(js) for value, js in bucket.items()})
            self._bucket_cache[category] = known
        return known

    def look(self, index: int) -> tuple[tuple[array[int], array[int]], ...]:
        """Per look slot: in-stock products that go with ``index`` and their compatibility.

        Same scores as :func:`~fashionai_pipeline.sandbox.looks.compatibility`.
        """
        known = self._looks.get(index)
        if known is not None:
            return tuple(_unpack(slot) for slot in known)
        cat = self.catalog
        main = cat.products[index]
        pop = self.popularity
        slots = []
        # compatibility() unrolled: its parts looked up per candidate value, computed once per main
        styles = {v: style_part(main.style, v) for v in self._values["style"]}
        occasions = {v: occasion_part(main.occasion, v) for v in self._values["occasion"]}
        colours = {v: 2 if colours_go(main.colour, v) else 0 for v in self._values["colour"]}
        clash = {"summer": "winter", "winter": "summer"}.get(main.season)
        same_season = main.season
        printed = bold(main.pattern)
        looks = self._look_keys
        for slot in look_slots(main.category, cat.categories):
            found: list[tuple[int, float, int]] = []
            for category in slot:
                for j in cat.members[category]:
                    style, occasion, colour, season, pattern = looks[j]
                    base = styles[style] + occasions[occasion]
                    if not base or season == clash or not cat.in_stock[j]:
                        continue
                    score = base + colours[colour] + (1 if season and season == same_season else 0)
                    found.append((score - 1 if printed and pattern else score, pop[j], j))
            found.sort(key=lambda t: (-t[0], -t[1]))
            del found[LOOK_DEPTH:]
            slots.append(_pack([j for _, _, j in found], [s for s, _, _ in found]))
        packed = tuple(slots)
        self._looks[index] = packed
        return tuple(_unpack(slot) for slot in packed)

    def warm(self) -> None:
        """Compute every product's similar and look lists now (start-up, benchmarks)."""
        for index in range(len(self.catalog)):
            self.similar(index)
            self.look(index)


def _pack(members: list[int], scores: list[int]) -> tuple[bytes, bytes]:
    return array("i", members).tobytes(), array("i", scores).tobytes()


def _unpack(packed: tuple[bytes, bytes]) -> tuple[array[int], array[int]]:
    members, scores = array("i"), array("i")
    members.frombytes(packed[0])
    scores.frombytes(packed[1])
    return members, scores

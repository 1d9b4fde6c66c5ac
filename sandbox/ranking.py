"""A deterministic stand-in for Fashion.AI's ranking over a synthetic catalog.

The real API's rankings are opaque; the sandbox only needs answers that are
plausible (related products, never the viewed one), stable (the same request
gives the same list in any process — hashlib, never ``hash()``, which is salted
per process) and cheap (it runs on the request path at thousands of req/s).

A ranking is a function of (eventType, data.id, the personal key) where the
personal key is ``userId`` when given, else ``sessionId`` — logged-in users
get the same list across sessions. customShelf also depends on the session's
history, which :meth:`RankingEngine.record` keeps in memory, bounded and LRU.

Ordering "by a stable per-user score" is one blake2b digest per request (the
seed) mixed with a precomputed 64-bit hash per product: one xor and one
multiply per candidate instead of a digest per candidate.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from hashlib import blake2b
from typing import Final

from fashionai_pipeline.sandbox.contract import Event, EventType

_MASK: Final = (1 << 64) - 1
_GOLDEN: Final = 0x9E3779B97F4A7C15  # odd, so multiplying permutes the 64-bit space


def digest64(*parts: str) -> int:
    """A 64-bit hash of ``parts``, identical in every process and Python version."""
    # surrogatepass: JSON may carry lone surrogates ("\ud800") and they must hash, not crash
    joined = "\x1f".join(parts).encode("utf-8", "surrogatepass")
    return int.from_bytes(blake2b(joined, digest_size=8).digest(), "big")


def _score(item_hash: int, seed: int) -> int:
    return ((item_hash ^ seed) * _GOLDEN) & _MASK


@dataclass(frozen=True, slots=True)
class Catalog:
    """Products and their categories; immutable once built.

    ``members[c]`` lists ``(hash, product_id)`` for category ``c``, in id order.
    """

    product_category: dict[str, str]
    members: dict[str, list[tuple[int, str]]]
    product_ids: list[str]
    category_ids: list[str]
    category_hash: dict[str, int]

    @classmethod
    def synthetic(cls, n_products: int = 500, n_categories: int = 12) -> Catalog:
        """``p0001``.. spread over ``c01``.. by hash (uneven, like a real catalog).

        Every category gets at least one product: the first ``n_categories``
        products are placed round-robin before hashing takes over.
        """
        if n_products < n_categories or n_categories < 1:
            raise ValueError("need n_categories >= 1 and n_products >= n_categories")
        width = max(4, len(str(n_products)))
        categories = [f"c{i:02d}" for i in range(1, n_categories + 1)]
        product_category: dict[str, str] = {}
        for i in range(1, n_products + 1):
            pid = f"p{i:0{width}d}"
            index = i - 1 if i <= n_categories else digest64("category", pid) % n_categories
            product_category[pid] = categories[index]
        return cls.from_mapping(product_category)

    @classmethod
    def from_mapping(cls, product_category: dict[str, str]) -> Catalog:
        """Build from an explicit product id -> category id mapping (non-empty)."""
        if not product_category:
            raise ValueError("a catalog needs at least one product")
        members: dict[str, list[tuple[int, str]]] = {}
        for pid in sorted(product_category):
            members.setdefault(product_category[pid], []).append((digest64("product", pid), pid))
        category_ids = sorted(members)
        return cls(
            product_category=dict(product_category),
            members=members,
            product_ids=sorted(product_category),
            category_ids=category_ids,
            category_hash={c: digest64("cat", c) for c in category_ids},
        )

    def product(self, item_id: str) -> str:
        """``item_id`` if it is in the catalog, else a catalog product chosen by its hash."""
        if item_id in self.product_category:
            return item_id
        return self.product_ids[digest64("unknown-product", item_id) % len(self.product_ids)]

    def category(self, item_id: str) -> str:
        """``item_id`` if it is a category, else a category chosen by its hash."""
        if item_id in self.members:
            return item_id
        return self.category_ids[digest64("unknown-category", item_id) % len(self.category_ids)]


class RankingEngine:
    """Answers recommendation events and remembers each session's history.

    Not thread-safe: the server calls it from its event loop thread only.
    ``rank`` is pure with respect to the history; ``record`` mutates it.
    """

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        limit: int = 12,
        max_sessions: int = 100_000,
        history_per_session: int = 50,
        shelf_min_history: int = 2,
    ) -> None:
        self.catalog = catalog if catalog is not None else Catalog.synthetic()
        self.limit = limit
        self.max_sessions = max_sessions
        self.history_per_session = history_per_session
        self.shelf_min_history = shelf_min_history
        self._sessions: OrderedDict[str, tuple[tuple[EventType, str], ...]] = OrderedDict()

    def rank(self, event: Event) -> list[str]:
        """Up to ``limit`` product ids for ``event``; deterministic, never raises."""
        personal = "u:" + event.user_id if event.user_id is not None else "s:" + event.session_id
        seed = digest64(event.event_type, event.item_id, personal)
        if event.event_type == "productView":
            return self._similar(self.catalog.product(event.item_id), seed)
        if event.event_type == "shopTheLook":
            return self._complete_the_look(self.catalog.product(event.item_id), seed)
        if event.event_type == "categoryView":
            return self._ordered(self.catalog.category(event.item_id), seed, set())
        return self._shelf(self.history(event.session_id), seed)

    def record(self, event: Event) -> None:
        """Append ``event`` to its session's history (evicting the least recent session)."""
        # Histories are tuples of strings, which the garbage collector leaves alone:
        # a deque per session made full collections slow once there were many.
        step = ((event.event_type, event.item_id),)
        history = self._sessions.get(event.session_id)
        if history is None:
            self._sessions[event.session_id] = step
            if len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(event.session_id)
            self._sessions[event.session_id] = (history + step)[-self.history_per_session :]

    def history(self, session_id: str) -> tuple[tuple[EventType, str], ...]:
        """The session's recorded (eventType, data.id) pairs, oldest first."""
        return self._sessions.get(session_id, ())

    def session_count(self) -> int:
        """How many sessions have a history right now."""
        return len(self._sessions)

    def clear(self) -> None:
        """Forget every session's history."""
        self._sessions.clear()

    def _ordered(self, category: str, seed: int, exclude: set[str]) -> list[str]:
        # _score inlined: this line is most of the engine's cost per request
        ranked = sorted([(((h ^ seed) * _GOLDEN) & _MASK, pid) for h, pid in self.catalog.members[category]])
        return [pid for _, pid in ranked if pid not in exclude][: self.limit]

    def _categories_by(self, seed: int) -> list[str]:
        scored = sorted([(_score(h, seed), c) for c, h in self.catalog.category_hash.items()])
        return [c for _, c in scored]

    def _fill(self, chosen: list[str], seed: int, exclude: set[str]) -> list[str]:
        # Only for catalogs too small for the main rule; the synthetic one never needs it.
        if len(chosen) >= self.limit:
            return chosen
        for category in self._categories_by(seed):
            if len(chosen) >= self.limit:
                break
            taken = exclude | set(chosen)
            chosen.extend(self._ordered(category, seed, taken)[: self.limit - len(chosen)])
        return chosen

    def _similar(self, product: str, seed: int) -> list[str]:
        category = self.catalog.product_category[product]
        return self._fill(self._ordered(category, seed, {product}), seed, {product})

    def _complete_the_look(self, product: str, seed: int) -> list[str]:
        # One piece per other category per round, so the look spans as many
        # categories as the limit allows before doubling up on any of them.
        own = self.catalog.product_category[product]
        others = [c for c in self._categories_by(seed) if c != own]
        starts = {c: _score(self.catalog.category_hash[c], seed) for c in others}
        chosen: list[str] = []
        for round_ in range(self.limit):
            added = False
            for category in others:
                members = self.catalog.members[category]
                if round_ < len(members) and len(chosen) < self.limit:
                    chosen.append(members[(starts[category] + round_) % len(members)][1])
                    added = True
            if not added or len(chosen) >= self.limit:
                break
        return self._fill(chosen, seed, {product})

    def _shelf(self, history: tuple[tuple[EventType, str], ...], seed: int) -> list[str]:
        if len(history) < self.shelf_min_history:
            return []  # the seed's "AI lacks data" case: the storefront falls back
        weights: dict[str, float] = {}
        seen: set[str] = set()
        for age, (event_type, item_id) in enumerate(reversed(history)):
            if event_type == "customShelf":
                continue
            if event_type == "categoryView":
                category = self.catalog.category(item_id)
            else:
                product = self.catalog.product(item_id)
                seen.add(product)
                category = self.catalog.product_category[product]
            weights[category] = weights.get(category, 0.0) + 0.8**age  # recent counts more
        if not weights:  # only customShelf calls so far: nothing to lean on but the seed
            return self._fill([], seed, seen)
        favourites = sorted(weights, key=lambda c: (-weights[c], c))[:3]
        lists = [self._ordered(c, seed, seen) for c in favourites]
        chosen: list[str] = []
        for position in range(self.limit):
            for ranked in lists:
                if position < len(ranked) and len(chosen) < self.limit:
                    chosen.append(ranked[position])
        return self._fill(chosen, seed, seen)

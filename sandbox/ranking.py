"""The sandbox's recommendation engine: explainable rankings over a fashion catalog.

Each answer is a function of the catalog, the request, the histories recorded
so far and the storefront's settings — nothing random, so the same sequence of
requests from a fresh start gives the same answers in any process.

Per event type (the score of a product is the sum of the named parts; ties go
to the better-selling product, ``popularity`` in [0, 1)):

- **productView**: the viewed product's *similar* products (same or
  substitutable category sharing at least two attributes,
  :func:`~fashionai_pipeline.sandbox.looks.similarity`), never the product
  itself. Score = similarity + ``HISTORY_WEIGHT`` x history affinity; history
  re-ranks the ``RERANK`` most similar ones.
- **categoryView**: every product of the category. Score = ``HISTORY_WEIGHT``
  x affinity + popularity.
- **shopTheLook**: per slot of the main piece's look
  (:func:`~fashionai_pipeline.sandbox.looks.look_slots`), the in-stock
  products that go with it (:func:`~fashionai_pipeline.sandbox.looks.compatibility`),
  scored compatibility + ``HISTORY_WEIGHT`` x affinity, then taken one slot at
  a time (best shoes, best bag, ..., second-best shoes, ...), so the look spans
  its slots. Never the main piece's category, never an out-of-stock product.
- **customShelf**: the products similar to the session's (and user's) recent
  products plus the best sellers of its recent categories, minus what it has
  already seen, scored ``HISTORY_WEIGHT`` x affinity + popularity.

*History affinity* of a product is the sum, over its category and attribute
values, of the share of the shopper's recency-weighted attention that value got
(:mod:`fashionai_pipeline.sandbox.history`): a session that looked at three
floral summer dresses has ``pattern:floral``, ``season:summer`` and
``category:dresses`` near 1. With a user id, the user's profile (kept across
sessions) and the session's are averaged.

*Cold start*: a type answers ``[]`` while the shopper has fewer signal events
than ``SandboxConfig.min_history_<type>`` (the API's "not enough data yet", docs/UPSTREAM.md),
and an unknown product or category id answers ``[]`` (the API lacks data about
it). Then the settings of the type (:mod:`fashionai_pipeline.producers.recsettings`)
filter and order the list, and it is cut to ``SandboxConfig.max_products``.

Similar and complementary lists are computed once per product, the first time
it is asked for (or all at once by :meth:`RankingEngine.warm`), then reused.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final, NamedTuple

from fashionai_pipeline.producers.recsettings import RecType, rec_type_for
from fashionai_pipeline.sandbox.catalog import Catalog
from fashionai_pipeline.sandbox.config import SandboxConfig
from fashionai_pipeline.sandbox.contract import Event
from fashionai_pipeline.sandbox.demo_catalog import demo_catalog
from fashionai_pipeline.sandbox.filters import TypeFilter
from fashionai_pipeline.sandbox.history import EMPTY, History, HistoryStore
from fashionai_pipeline.sandbox.neighbours import Neighbours

HISTORY_WEIGHT: Final = 4.0
_FEATURES: Final = 8  # category + the seven attributes
RERANK: Final = 64  # most-similar products a history may re-rank for a productView
SHELF_SOURCES: Final = 4  # recent products and categories a shelf draws from
SHELF_PER_SOURCE: Final = 20
# (-score, position, index): plain tuples sort in C, best first; the parts of a score are
# worked out again only for an explanation (scored()), never on the request path
_Candidate = tuple[float, int, int]


class Scored(NamedTuple):
    """One ranked product: its catalog position ``item`` and the parts of its score."""

    item: int
    score: float
    base: float  # similarity, compatibility or popularity: the part history does not move
    affinity: float
    slot: int = -1  # shopTheLook: which slot of the look


class RankingEngine:
    """Answers recommendation events and keeps session and user histories.

    ``config`` is read live for ``max_products`` and the ``min_history_*``
    thresholds. Not thread-safe: the server calls it from its event loop only.
    ``rank`` never changes state (beyond memoised per-product lists); ``record``
    does.
    """

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        config: SandboxConfig | None = None,
        max_sessions: int = 100_000,
        max_users: int = 100_000,
    ) -> None:
        self.catalog = catalog if catalog is not None else demo_catalog()
        self.config = config if config is not None else SandboxConfig()
        self.sessions = HistoryStore(max_sessions)
        self.users = HistoryStore(max_users)
        cat = self.catalog
        self.lists = Neighbours(cat)
        self.popularity = self.lists.popularity
        self._category_number = {c: k for k, c in enumerate(cat.categories)}
        # every product's features padded to one width with a slot the profile keeps at 0,
        # so a score is eight plain indexings (the request path's inner loop)
        self._width = len(cat.feature_names) + 1
        zero = self._width - 1
        self._padded: tuple[tuple[int, ...], ...] = tuple(
            (*f, *(zero,) * (_FEATURES - len(f))) for f in cat.features
        )

    # -- state ---------------------------------------------------------------------

    def record(self, event: Event) -> None:
        """Add ``event`` to its session's (and user's) history, if it carries a signal."""
        code, features = self._signal(event)
        if features is None:
            return
        self.sessions.record(event.session_id, features, code)
        if event.user_id is not None:
            self.users.record(event.user_id, features, code)

    def _signal(self, event: Event) -> tuple[int, tuple[int, ...] | None]:
        if event.event_type == "categoryView":
            number = self._category_number.get(event.item_id)
            if number is None:
                return 0, None
            return -(number + 1), (self.catalog.category_feature[event.item_id],)
        if event.event_type == "customShelf":
            return 0, None
        index = self.catalog.index.get(event.item_id)
        if index is None:
            return 0, None
        return index, self.catalog.features[index]

    def evidence(self, event: Event) -> tuple[History, History]:
        """The session's and (with a user id) the user's history."""
        user = self.users.get(event.user_id) if event.user_id is not None else EMPTY
        return self.sessions.get(event.session_id), user

    def session_count(self) -> int:
        """How many sessions have a history."""
        return len(self.sessions)

    def history(self, session_id: str) -> History:
        """The session's history (empty when it has none)."""
        return self.sessions.get(session_id)

    def clear(self) -> int:
        """Forget every session's and user's history; returns the sessions forgotten."""
        self.users.clear()
        return self.sessions.clear()

    # -- ranking -------------------------------------------------------------------

    def threshold(self, event_type: str) -> int:
        """Signal events a shopper needs before ``event_type`` answers a non-empty list."""
        cfg = self.config
        return {
            "productView": cfg.min_history_product_view,
            "categoryView": cfg.min_history_category_view,
            "shopTheLook": cfg.min_history_shop_the_look,
            "customShelf": cfg.min_history_custom_shelf,
        }[event_type]

    def rank(self, event: Event, filters: Mapping[RecType, TypeFilter] | None = None) -> list[str]:
        """Product ids for ``event``, best first; deterministic, never raises."""
        products = self.catalog.products
        return [products[c[2]].id for c in self._ranked(event, filters)]

    def scored(self, event: Event, filters: Mapping[RecType, TypeFilter] | None = None) -> list[Scored]:
        """:meth:`rank` with each product's score parts (for explanations)."""
        ranked = self._ranked(event, filters)
        bases: dict[int, tuple[float, int]] = {}
        index = self.catalog.index.get(event.item_id)
        if event.event_type == "productView" and index is not None:
            bases = {i: (s, -1) for i, s in zip(*self.similar(index), strict=True)}
        elif event.event_type == "shopTheLook" and index is not None:
            for slot, (members, scores) in enumerate(self.look(index)):
                bases.update((i, (s, slot)) for i, s in zip(members, scores, strict=True))
        pop = self.popularity
        out = []
        for negative, _, i in ranked:
            base, slot = bases.get(i, (pop[i], -1))
            out.append(Scored(i, -negative, base, (-negative - base) / HISTORY_WEIGHT, slot))
        return out

    def _ranked(self, event: Event, filters: Mapping[RecType, TypeFilter] | None) -> list[_Candidate]:
        session, user = self.evidence(event)
        if max(session.signals, user.signals) < self.threshold(event.event_type):
            return []
        profile = shopper_profile(self._width, session, user)
        kind = event.event_type
        rec_type = rec_type_for(kind)
        type_filter = filters.get(rec_type) if filters and rec_type is not None else None
        candidates: Iterable[_Candidate]
        if kind == "productView":
            candidates = self._product_view(event.item_id, profile)
        elif kind == "categoryView":
            candidates = self._category_view(event.item_id, profile)
        elif kind == "shopTheLook":
            candidates = self._shop_the_look(event.item_id, profile, type_filter)
        else:
            candidates = self._custom_shelf(session, user, profile)
        return self._finish(candidates, type_filter)

    def _finish(self, candidates: Iterable[_Candidate], type_filter: TypeFilter | None) -> list[_Candidate]:
        # candidates arrive best first; only as many are looked at as the answer needs
        cap = self.config.max_products
        if type_filter is None:
            return list(itertools.islice(candidates, cap))
        mask = type_filter.mask
        if mask is not None:
            candidates = (c for c in candidates if mask[c[2]])
        if type_filter.full_size_run:
            return type_filter.first(candidates, cap)
        return list(itertools.islice(candidates, cap))

    def _personal(
        self, profile: list[float], members: Iterable[int], bases: Iterable[float]
    ) -> list[_Candidate]:
        """``members`` with their ``bases`` re-scored with the profile, sorted best first."""
        pad = self._padded
        w = HISTORY_WEIGHT
        pf = profile
        # one flat comprehension: this is the request path's inner loop
        ranked = [
            (-(base + w * (pf[a] + pf[b] + pf[c] + pf[d] + pf[e] + pf[f] + pf[g] + pf[h])), pos, i)
            for pos, (i, base, (a, b, c, d, e, f, g, h)) in enumerate(
                zip(members, bases, map(pad.__getitem__, members), strict=False)
            )
        ]
        ranked.sort()  # by score, then by position: ties keep the base order
        return ranked

    def _product_view(self, item_id: str, profile: list[float] | None) -> Iterable[_Candidate]:
        index = self.catalog.index.get(item_id)
        if index is None:
            return ()
        members, scores = self.similar(index)
        plain = ((-s, pos, i) for pos, (i, s) in enumerate(zip(members, scores, strict=True)))
        if profile is None:
            return plain
        head = self._personal(profile, members[:RERANK], scores[:RERANK])
        return itertools.chain(head, itertools.islice(plain, RERANK, None))

    def _category_view(self, item_id: str, profile: list[float] | None) -> Iterable[_Candidate]:
        members = self.lists.best_sellers.get(item_id)
        if members is None:
            return ()
        pops = self.lists.best_seller_pops[item_id]
        if profile is None:
            return ((-p, pos, i) for pos, (i, p) in enumerate(zip(members, pops, strict=True)))
        return self._personal(profile, members, pops)

    def _shop_the_look(
        self, item_id: str, profile: list[float] | None, type_filter: TypeFilter | None
    ) -> Iterable[_Candidate]:
        index = self.catalog.index.get(item_id)
        if index is None:
            return ()
        mask = type_filter.mask if type_filter is not None else None
        per_slot: list[list[_Candidate]] = []
        for all_members, all_scores in self.look(index):
            members: Sequence[int] = all_members
            scores: Sequence[int] = all_scores
            if mask is not None:
                kept = [(i, s) for i, s in zip(all_members, all_scores, strict=True) if mask[i]]
                members, scores = [i for i, _ in kept], [s for _, s in kept]
            if profile is None:
                pairs = enumerate(zip(members, scores, strict=True))
                per_slot.append([(-s, pos, i) for pos, (i, s) in pairs])
            else:
                per_slot.append(self._personal(profile, members, scores))
        return _round_robin(per_slot)

    def _custom_shelf(self, session: History, user: History, profile: list[float] | None) -> list[_Candidate]:
        if profile is None:
            return []
        recent = (*user.recent, *session.recent)
        seen = {code for code in recent if code >= 0}
        pool: dict[int, None] = {}
        categories = self.catalog.categories
        for code in list(dict.fromkeys(reversed(recent)))[:SHELF_SOURCES]:
            if code >= 0:
                source: Iterable[int] = self.similar(code)[0][:SHELF_PER_SOURCE]
            else:
                source = self.lists.best_sellers[categories[-code - 1]][:SHELF_PER_SOURCE]
            pool.update(dict.fromkeys(i for i in source if i not in seen))
        pop = self.popularity
        members = sorted(pool)
        return self._personal(profile, members, [pop[i] for i in members])

    # -- per-product lists, memoised -------------------------------------------------

    def similar(self, index: int) -> tuple[array[int], array[int]]:
        """Product ``index``'s similar products and their similarity (see :mod:`.neighbours`)."""
        return self.lists.similar(index)

    def look(self, index: int) -> tuple[tuple[array[int], array[int]], ...]:
        """Per look slot: in-stock products that go with ``index`` (see :mod:`.neighbours`)."""
        return self.lists.look(index)

    def warm(self) -> None:
        """Compute every product's similar and look lists now (start-up, benchmarks)."""
        self.lists.warm()


def _round_robin(per_slot: list[list[_Candidate]]) -> Iterator[_Candidate]:
    """The best of each slot, then the second of each, and so on (lazily)."""
    for depth in range(max((len(r) for r in per_slot), default=0)):
        for ranked in per_slot:
            if depth < len(ranked):
                yield ranked[depth]


def shopper_profile(width: int, session: History, user: History) -> list[float] | None:
    """The shopper's attention per feature, in [0, 1]; ``None`` without any signal."""
    sources = [h for h in (session, user) if h.signals]
    if not sources:
        return None
    dense = [0.0] * width
    share = 1.0 / len(sources)
    for history in sources:
        scale = share / history.total
        for feature, weight in history.profile.items():
            dense[feature] += weight * scale
    return dense

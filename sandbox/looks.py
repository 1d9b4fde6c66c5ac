"""Fashion rules the rankings are explained by: what is similar, what completes a look.

All pure and table-driven, so an explanation can quote them:

- :func:`similarity`: how alike two products are. Shared attributes score by
  :data:`SIMILARITY_WEIGHTS`; the same category adds 2, a substitutable one
  (:data:`SUBSTITUTES`, e.g. jeans for pants) adds 0, any other category
  makes the pair not similar at all. A pair is *similar* when it shares at
  least :data:`MIN_SHARED` of the attributes.
- :func:`look_slots`: the categories that complete a look for a main piece's
  category (:data:`LOOKS`): one slot per role (a bottom, shoes, a bag...),
  each slot a tuple of interchangeable categories. A category the table does
  not know (a user catalog's own) is completed by every other category.
- :func:`compatibility`: how well a candidate goes with the main piece: same
  style 3, a related style 1; same occasion 3, a related one 1; colours that
  go together 2 (a neutral with anything, or the same colour), 0 otherwise;
  seasons: summer and winter never mix (``None``: incompatible), otherwise
  the same season 1; two bold patterns together -1. A candidate goes with the
  piece when it is season-compatible and matches its style or occasion.
"""

from __future__ import annotations

from typing import Final

from fashionai_pipeline.sandbox.catalog import Product

SIMILARITY_WEIGHTS: Final[dict[str, int]] = {
    "pattern": 3,
    "silhouette": 2,
    "fabric": 2,
    "style": 2,
    "occasion": 2,
    "colour": 2,
    "season": 1,
}
SAME_CATEGORY: Final = 2
MIN_SHARED: Final = 2

SUBSTITUTES: Final[dict[str, tuple[str, ...]]] = {
    "pants": ("jeans",),
    "jeans": ("pants",),
    "skirts": ("shorts",),
    "shorts": ("skirts",),
    "tops": ("knitwear",),
    "knitwear": ("tops",),
    "accessories": ("jewelry",),
    "jewelry": ("accessories",),
}

_BOTTOMS: Final = ("pants", "jeans", "skirts", "shorts")
_UPPERS: Final = ("tops", "knitwear")
LOOKS: Final[dict[str, tuple[tuple[str, ...], ...]]] = {
    "dresses": (("shoes",), ("bags",), ("jewelry",), ("outerwear",), ("accessories",)),
    "tops": (_BOTTOMS, ("shoes",), ("bags",), ("jewelry", "accessories"), ("outerwear",)),
    "knitwear": (_BOTTOMS, ("shoes",), ("bags",), ("accessories",)),
    "pants": (_UPPERS, ("shoes",), ("bags",), ("outerwear",), ("jewelry", "accessories")),
    "jeans": (_UPPERS, ("shoes",), ("bags",), ("outerwear",), ("jewelry", "accessories")),
    "skirts": (_UPPERS, ("shoes",), ("bags",), ("jewelry", "accessories"), ("outerwear",)),
    "shorts": (_UPPERS, ("shoes",), ("bags",), ("accessories",)),
    "outerwear": (_UPPERS, _BOTTOMS, ("shoes",), ("bags",), ("accessories",)),
    "swimwear": (("accessories",), ("shoes",), ("bags",), ("jewelry",)),
    "shoes": (("dresses", *_UPPERS), _BOTTOMS, ("bags",), ("accessories", "jewelry")),
    "bags": (("dresses", *_UPPERS), ("shoes",), ("jewelry", "accessories")),
    "accessories": (("dresses", *_UPPERS), ("shoes",), ("bags",)),
    "jewelry": (("dresses", *_UPPERS), ("shoes",), ("bags",)),
}

NEUTRALS: Final = frozenset({"black", "white", "beige", "navy", "grey", "brown", "gold", "silver"})
_RELATED_STYLES: Final = (
    frozenset({"boho", "romantic"}),
    frozenset({"classic", "elegant", "minimalist"}),
    frozenset({"casual", "sporty", "streetwear"}),
)
_RELATED_OCCASIONS: Final = (
    frozenset({"everyday", "weekend", "beach"}),
    frozenset({"party", "formal"}),
    frozenset({"work", "everyday"}),
)


def substitutes(category: str) -> tuple[str, ...]:
    """Categories whose products may stand in for ``category``'s (not including itself)."""
    return SUBSTITUTES.get(category, ())


def look_slots(category: str, known: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """The slots completing a look for ``category``, limited to ``known`` categories.

    Never includes ``category`` itself; slots left empty are dropped.
    """
    table = LOOKS.get(category)
    if table is None:
        table = tuple((c,) for c in known)
    present = set(known) - {category}
    slots = (tuple(c for c in slot if c in present) for slot in table)
    return tuple(slot for slot in slots if slot)


def shared_attributes(a: Product, b: Product) -> list[str]:
    """The attributes (of :data:`SIMILARITY_WEIGHTS`) on which ``a`` and ``b`` agree."""
    return [
        name for name in SIMILARITY_WEIGHTS if a.attribute(name) and a.attribute(name) == b.attribute(name)
    ]


def similarity(viewed: Product, other: Product) -> int | None:
    """The similarity score of ``other`` to ``viewed``; ``None`` when they are not similar."""
    if other.category == viewed.category:
        bonus = SAME_CATEGORY
    elif other.category in substitutes(viewed.category):
        bonus = 0
    else:
        return None
    shared = shared_attributes(viewed, other)
    if len(shared) < MIN_SHARED:
        return None
    return bonus + sum(SIMILARITY_WEIGHTS[name] for name in shared)


def _related(a: str, b: str, groups: tuple[frozenset[str], ...]) -> bool:
    return any(a in group and b in group for group in groups)


def colours_go(a: str, b: str) -> bool:
    """Whether two colours go together: a neutral with anything, or the same colour."""
    return a == b or a in NEUTRALS or b in NEUTRALS


def compatibility(main: Product, other: Product) -> tuple[int, list[str]] | None:
    """How well ``other`` completes ``main``'s look, with the reasons; ``None``: it does not."""
    if {main.season, other.season} == {"summer", "winter"}:
        return None
    score = 0
    reasons: list[str] = []
    matched = False
    if main.style and main.style == other.style:
        score, matched = score + 3, True
        reasons.append(f"same style ({main.style})")
    elif _related(main.style, other.style, _RELATED_STYLES):
        score, matched = score + 1, True
        reasons.append(f"related style ({other.style} with {main.style})")
    if main.occasion and main.occasion == other.occasion:
        score, matched = score + 3, True
        reasons.append(f"same occasion ({main.occasion})")
    elif _related(main.occasion, other.occasion, _RELATED_OCCASIONS):
        score, matched = score + 1, True
        reasons.append(f"related occasion ({other.occasion} with {main.occasion})")
    if not matched:
        return None
    if colours_go(main.colour, other.colour):
        score += 2
        reasons.append(f"colours go ({other.colour} with {main.colour})")
    if main.season and main.season == other.season:
        score += 1
        reasons.append(f"same season ({main.season})")
    if main.pattern not in {"", "solid"} and other.pattern not in {"", "solid"}:
        score -= 1
        reasons.append(f"two patterns ({other.pattern} with {main.pattern})")
    return score, reasons


def style_part(main: str, other: str) -> int:
    """The style part of :func:`compatibility`: 3 same, 1 related, 0 neither."""
    if main and main == other:
        return 3
    return 1 if _related(main, other, _RELATED_STYLES) else 0


def occasion_part(main: str, other: str) -> int:
    """The occasion part of :func:`compatibility`: 3 same, 1 related, 0 neither."""
    if main and main == other:
        return 3
    return 1 if _related(main, other, _RELATED_OCCASIONS) else 0


def bold(pattern: str) -> bool:
    """Whether ``pattern`` is a print (anything but solid or none)."""
    return pattern not in {"", "solid"}

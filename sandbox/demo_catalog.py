"""The demo catalog: 3,000 fashion products, generated the same in every process.

Every choice comes from a blake2b digest of the product's number and what is
being chosen (never ``random`` or ``hash()``), so the catalog is identical on
any machine and Python version, and a CI run can quote its products.

Ids run ``p0001`` .. ``p3000``, spread over the categories by digest, so any
run of ids spans many categories. Categories are slugs (``dresses``, ``tops``,
``pants``...: the ids a categoryView sends). About 2 % of the dresses, outerwear,
bags, shoes and jewelry are "Atelier" pieces above R$ 10,000.00, so the "above
10 thousand" price setting has something to keep; about a third of the products
are on sale; a few are out of stock or low on stock.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from hashlib import blake2b
from typing import Final, NamedTuple

from fashionai_pipeline.sandbox.catalog import Catalog, Product

N_PRODUCTS: Final = 3000


class _Kind(NamedTuple):
    products: int
    noun: str
    silhouettes: tuple[str, ...]
    fabrics: tuple[str, ...]
    sizes: tuple[str, ...]
    price: tuple[int, int]  # R$ range of the list price
    luxury: bool = False  # may hold Atelier pieces above R$ 10,000


_LETTERS: Final = ("PP", "P", "M", "G", "GG")
_KINDS: Final[dict[str, _Kind]] = {
    "dresses": _Kind(
        380,
        "Dress",
        ("a-line", "wrap", "slip", "shift", "bodycon", "maxi"),
        ("linen", "cotton", "viscose", "silk", "satin", "lace", "knit"),
        _LETTERS,
        (159, 1490),
        True,
    ),
    "tops": _Kind(
        360,
        "Top",
        ("fitted", "oversized", "cropped", "peplum", "wrap"),
        ("cotton", "linen", "silk", "viscose", "knit", "lace", "satin"),
        _LETTERS,
        (79, 690),
    ),
    "knitwear": _Kind(
        200,
        "Sweater",
        ("crewneck", "v-neck", "cardigan", "turtleneck", "oversized"),
        ("wool", "cashmere", "cotton", "knit"),
        ("P", "M", "G", "GG"),
        (199, 1890),
    ),
    "pants": _Kind(
        260,
        "Trousers",
        ("wide-leg", "straight", "tapered", "flare", "cargo", "palazzo"),
        ("linen", "cotton", "wool", "viscose", "satin", "twill"),
        ("36", "38", "40", "42", "44", "46"),
        (149, 990),
    ),
    "jeans": _Kind(
        220,
        "Jeans",
        ("skinny", "straight", "wide-leg", "flare", "mom", "boyfriend"),
        ("denim",),
        ("34", "36", "38", "40", "42", "44", "46"),
        (179, 890),
    ),
    "skirts": _Kind(
        220,
        "Skirt",
        ("a-line", "pencil", "pleated", "wrap", "mini", "midi"),
        ("linen", "cotton", "denim", "leather", "satin", "lace"),
        _LETTERS,
        (119, 890),
    ),
    "shorts": _Kind(
        160,
        "Shorts",
        ("high-waisted", "bermuda", "tailored", "cutoff"),
        ("denim", "linen", "cotton"),
        ("34", "36", "38", "40", "42", "44"),
        (99, 490),
    ),
    "outerwear": _Kind(
        220,
        "Jacket",
        ("blazer", "trench", "puffer", "bomber", "biker", "long-coat"),
        ("wool", "leather", "cotton", "suede", "denim", "tweed"),
        ("P", "M", "G", "GG"),
        (299, 2990),
        True,
    ),
    "swimwear": _Kind(
        150,
        "Swimsuit",
        ("bikini", "one-piece", "high-waisted-bikini", "kaftan"),
        ("lycra", "crochet", "linen"),
        ("P", "M", "G"),
        (129, 690),
    ),
    "shoes": _Kind(
        300,
        "Shoes",
        ("sandals", "heels", "flats", "sneakers", "boots", "espadrilles", "loafers", "mules"),
        ("leather", "suede", "canvas", "raffia", "patent"),
        ("34", "35", "36", "37", "38", "39", "40"),
        (149, 1990),
        True,
    ),
    "bags": _Kind(
        220,
        "Bag",
        ("tote", "crossbody", "clutch", "shoulder", "bucket", "backpack"),
        ("leather", "straw", "canvas", "suede", "raffia"),
        ("U",),
        (159, 3490),
        True,
    ),
    "accessories": _Kind(
        160,
        "Accessory",
        ("hat", "scarf", "belt", "sunglasses", "hair-clip"),
        ("straw", "silk", "leather", "acetate", "cotton"),
        ("U",),
        (49, 690),
    ),
    "jewelry": _Kind(
        150,
        "Jewelry",
        ("necklace", "earrings", "bracelet", "ring"),
        ("gold-plated", "silver", "pearl", "resin", "gold"),
        ("U",),
        (89, 1490),
        True,
    ),
}
CATEGORIES: Final[tuple[str, ...]] = tuple(_KINDS)

# Weighted vocabularies: a value appears as often as it is listed.
_PATTERNS: Final = ("solid",) * 7 + (
    "floral",
    "floral",
    "floral",
    "striped",
    "striped",
    "polka-dot",
    "animal-print",
    "plaid",
    "geometric",
    "tie-dye",
)
_COLOURS: Final = (
    "black",
    "black",
    "white",
    "white",
    "beige",
    "navy",
    "red",
    "pink",
    "yellow",
    "green",
    "blue",
    "brown",
    "grey",
    "lilac",
    "orange",
)
_STYLES: Final = ("casual", "classic", "boho", "minimalist", "romantic", "sporty", "streetwear", "elegant")
# the occasions a style is worn for, most likely first
_OCCASIONS: Final[dict[str, tuple[str, ...]]] = {
    "casual": ("everyday", "everyday", "beach", "weekend"),
    "classic": ("work", "work", "everyday", "formal"),
    "boho": ("beach", "everyday", "weekend", "party"),
    "minimalist": ("work", "everyday", "everyday", "weekend"),
    "romantic": ("party", "everyday", "weekend", "formal"),
    "sporty": ("weekend", "everyday", "everyday", "beach"),
    "streetwear": ("weekend", "everyday", "party", "party"),
    "elegant": ("formal", "party", "work", "formal"),
}
_SUMMER_FABRICS: Final = frozenset({"linen", "crochet", "raffia", "straw", "lycra", "canvas"})
_WINTER_FABRICS: Final = frozenset({"wool", "cashmere", "suede", "tweed"})
# a model name per product, as shops name their pieces ("Aurora Floral Linen Wrap Dress")
_MODELS: Final = (
    "Aurora", "Bela", "Cora", "Dália", "Elis", "Flora", "Gaia", "Helena", "Iris", "Jade", "Lara", "Luna",
    "Maia", "Marina", "Nina", "Olívia", "Paz", "Rosa", "Serena", "Tiê", "Vera", "Yara", "Zélia", "Alma",
    "Brisa", "Clara", "Duna", "Estela", "Frida", "Gal", "Ilha", "Joana", "Lis", "Mar", "Nara", "Sol",
)  # fmt: skip
# shown in names instead of the generic noun
_NOUNS: Final[dict[str, str]] = {
    "cardigan": "Cardigan",
    "turtleneck": "Turtleneck",
    "blazer": "Blazer",
    "trench": "Trench Coat",
    "long-coat": "Coat",
    "kaftan": "Kaftan",
    "one-piece": "Swimsuit",
    "bikini": "Bikini",
    "high-waisted-bikini": "Bikini",
}


def _digest(*parts: object) -> int:
    joined = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(blake2b(joined, digest_size=8, person=b"fai-demo").digest(), "big")


def _pick(options: tuple[str, ...], *parts: object) -> str:
    return options[_digest(*parts) % len(options)]


def _slots() -> list[str]:
    # one slot per product of each category, in digest order: ids interleave categories
    slots = [(cat, k) for cat, kind in _KINDS.items() for k in range(kind.products)]
    slots.sort(key=lambda slot: _digest("slot", *slot))
    return [cat for cat, _ in slots]


def _season(kind_name: str, fabric: str, n: int) -> str:
    if kind_name == "swimwear" or fabric in _SUMMER_FABRICS:
        return "summer"
    if kind_name in {"knitwear", "outerwear"} or fabric in _WINTER_FABRICS:
        return "winter" if kind_name != "outerwear" or _digest("s", n) % 3 else "all-season"
    return _pick(("summer", "summer", "all-season", "all-season", "winter"), "season", n)


def _product(n: int, category: str) -> Product:
    kind = _KINDS[category]
    pid = f"p{n:04d}"
    silhouette = _pick(kind.silhouettes, "silhouette", n)
    fabric = _pick(kind.fabrics, "fabric", n)
    pattern = "solid" if category in {"jewelry", "jeans"} else _pick(_PATTERNS, "pattern", n)
    colour = _pick(_COLOURS, "colour", n)
    if fabric in {"gold", "gold-plated"}:
        colour = "gold"
    elif fabric in {"silver", "pearl"}:
        colour = "silver" if fabric == "silver" else "white"
    style = _pick(_STYLES, "style", n)
    atelier = kind.luxury and _digest("atelier", n) % 50 == 0
    if atelier:
        style = "elegant"
    occasion = _pick(_OCCASIONS[style], "occasion", n)
    season = _season(category, fabric, n)
    low, high = (10_500, 45_000) if atelier else kind.price
    reais = low + _digest("price", n) % (high - low + 1)
    price_cents = (reais // 10 * 10 + 9) * 100 + 90  # R$ ...9.90, as shops price
    discount = Decimal(_pick(("10", "15", "20", "25", "30", "40", "50"), "off", n))
    if _digest("sale", n) % 3:
        discount = Decimal(0)
    stock = _stock(kind.sizes, n)
    noun = _NOUNS.get(silhouette, kind.noun)
    if category in {"shoes", "accessories", "jewelry", "bags"} and silhouette not in _NOUNS:
        noun = silhouette.replace("-", " ").title() if category != "bags" else f"{silhouette.title()} Bag"
        silhouette_word = ""
    else:
        silhouette_word = silhouette.replace("-", " ").title() + " "
    lead = colour.title() if pattern == "solid" else pattern.replace("-", " ").title()
    if fabric in {"gold", "gold-plated", "silver"}:
        lead = ""  # "Gold Plated Ring", not "Gold Gold Plated Ring"
    material = "" if fabric in {"denim"} and category == "jeans" else fabric.replace("-", " ").title() + " "
    model = _pick(_MODELS, "model", n)
    name = f"{'Atelier ' if atelier else ''}{model} {lead} {material}{silhouette_word}{noun}"
    return Product(
        id=pid,
        name=" ".join(name.split()),
        category=category,
        price_cents=price_cents,
        discount=discount,
        stock=stock,
        silhouette=silhouette,
        pattern=pattern,
        fabric=fabric,
        style=style,
        occasion=occasion,
        colour=colour,
        season=season,
    )


def _stock(sizes: tuple[str, ...], n: int) -> tuple[tuple[str, int], ...]:
    shape = _digest("stock-shape", n) % 20
    if shape == 0:  # sold out
        return tuple((size, 0) for size in sizes)
    units = []
    for size in sizes:
        roll = _digest("stock", n, size)
        if shape == 1:  # low on stock: a few units left
            units.append((size, roll % 3))
        elif roll % 7 == 0:  # this size sold out
            units.append((size, 0))
        else:
            units.append((size, 1 + roll % 24))
    return tuple(units)


@functools.cache
def demo_catalog() -> Catalog:
    """The demo catalog (built once per process, then shared: it is immutable)."""
    slots = _slots()
    return Catalog(_product(n, slots[n - 1]) for n in range(1, N_PRODUCTS + 1))

"""The shared recommendation-settings schema: strict parsing, one product's verdict, the size-run order."""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path

import pytest

from fashionai_pipeline.producers import recsettings
from fashionai_pipeline.producers.recsettings import (
    ProductFacts,
    RecommendationSettings,
    SettingsError,
    TypeSettings,
    admits,
    apply,
    parse_type_settings,
    rec_type_for,
    size_run,
)


def _facts(price: str = "100.00", discounted: bool = False, **stock: int) -> ProductFacts:
    return ProductFacts(Decimal(price), discounted, stock or {"M": 5})


def test_defaults_are_the_cleared_state_and_filter_nothing() -> None:
    cleared = parse_type_settings(b"{}")
    assert cleared == TypeSettings() and cleared.is_cleared and cleared.filters_nothing
    assert cleared.model_dump(mode="json") == {
        "fullSizeRun": False,
        "discount": "all",
        "priceRange": {"mode": "all", "min": None, "max": None},
        "lowStock": {"enabled": False, "limit": 10},
    }


def test_event_types_map_to_the_three_tabs_and_custom_shelf_to_none() -> None:
    assert [rec_type_for(t) for t in ("productView", "categoryView", "shopTheLook", "customShelf")] == [
        "product",
        "category",
        "shopTheLook",
        None,
    ]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"fullSizeRun": "true"}, "fullSizeRun:"),
        ({"fullSizeRun": 1}, "fullSizeRun:"),
        ({"discount": "some"}, "discount:"),
        ({"priceRange": {"mode": "custom", "min": 10}}, "priceRange: custom needs both min and max"),
        ({"priceRange": {"mode": "custom", "min": 10, "max": 5}}, "priceRange: min 10 is above max 5"),
        ({"priceRange": {"mode": "custom", "min": -1, "max": 5}}, "priceRange.min:"),
        ({"priceRange": {"mode": "custom", "min": 1.005, "max": 5}}, "priceRange.min:"),
        ({"priceRange": {"mode": "custom", "min": True, "max": 5}}, "priceRange.min:"),
        ({"priceRange": {"mode": "above10k", "max": 5}}, "priceRange: min and max are only for mode custom"),
        ({"priceRange": {"mode": "cheap"}}, "priceRange.mode:"),
        ({"lowStock": {"enabled": True, "limit": -1}}, "lowStock.limit:"),
        ({"lowStock": {"enabled": "yes"}}, "lowStock.enabled:"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ([], "body: must be a JSON object"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(body: object, named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_type_settings(body)
    assert str(caught.value).startswith(named)


def test_json_text_and_dicts_parse_alike_money_as_number_or_string() -> None:
    text = b'{"priceRange": {"mode": "custom", "min": 99.9, "max": "250"}}'
    from_text = parse_type_settings(text)
    assert from_text == parse_type_settings({"priceRange": {"mode": "custom", "min": 99.9, "max": "250"}})
    assert from_text.priceRange.min == Decimal("99.9")
    assert from_text.model_dump(mode="json")["priceRange"] == {"mode": "custom", "min": 99.9, "max": 250.0}
    with pytest.raises(SettingsError, match=r"^body:"):
        parse_type_settings(b"{not json")


def test_each_filter_decides_as_documented() -> None:
    on_sale = _facts(discounted=True)
    full_price = _facts()
    assert admits(parse_type_settings({"discount": "onlyWith"}), on_sale)
    assert not admits(parse_type_settings({"discount": "onlyWith"}), full_price)
    assert admits(parse_type_settings({"discount": "onlyWithout"}), full_price)
    assert not admits(parse_type_settings({"discount": "onlyWithout"}), on_sale)

    custom = parse_type_settings({"priceRange": {"mode": "custom", "min": 100, "max": 200}})
    assert [admits(custom, _facts(p)) for p in ("99.99", "100.00", "200.00", "200.01")] == [
        False,
        True,
        True,
        False,
    ]
    luxury = parse_type_settings({"priceRange": {"mode": "above10k"}})
    assert [admits(luxury, _facts(p)) for p in ("10000.00", "10000.01")] == [False, True]

    low = parse_type_settings({"lowStock": {"enabled": True, "limit": 10}})
    assert not admits(low, _facts(P=4, M=6))  # 10 units in all: "10 or fewer" are left out
    assert admits(low, _facts(P=5, M=6))
    assert admits(parse_type_settings({"lowStock": {"enabled": False, "limit": 10}}), _facts(P=1))
    assert admits(parse_type_settings({"fullSizeRun": True}), _facts(P=0))  # orders, never filters


def test_full_size_run_orders_by_size_run_keeping_relevance_within_a_group() -> None:
    assert size_run({"P": 1, "M": 0, "G": 3, "GG": 0}) == 0.5
    assert size_run({}) == 0.0
    items = {
        "a": _facts(P=0, M=1),  # half a run
        "b": _facts(P=2, M=1),  # full
        "c": _facts(P=0, M=0),  # none
        "d": _facts(U=3),  # one size, in stock: full
    }
    ordered = apply(parse_type_settings({"fullSizeRun": True}), list(items), items.__getitem__)
    assert ordered == ["b", "d", "a", "c"]
    assert apply(TypeSettings(), list(items), items.__getitem__) == ["a", "b", "c", "d"]


def test_types_are_saved_and_cleared_separately() -> None:
    every = RecommendationSettings()
    product = parse_type_settings({"discount": "onlyWith"})
    saved = every.saved("product", product)
    assert saved.of("product") == product
    assert saved.of("category") == TypeSettings() == saved.of("shopTheLook")
    again = saved.saved("shopTheLook", parse_type_settings({"fullSizeRun": True}))
    assert again.cleared("product").of("shopTheLook").fullSizeRun
    assert again.cleared("product").of("product").is_cleared


def test_the_module_imports_only_pydantic_and_the_standard_library() -> None:
    # it is part of the storefront install, and issue 11's local filters import it
    tree = ast.parse(Path(recsettings.__file__).read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots <= {"__future__", "collections", "dataclasses", "decimal", "typing", "pydantic"}


def test_the_sandboxs_early_stopping_size_run_order_equals_the_full_sort() -> None:
    from fashionai_pipeline.sandbox.demo_catalog import demo_catalog
    from fashionai_pipeline.sandbox.filters import TypeFilter, coverages

    catalog = demo_catalog()
    compiled = TypeFilter(parse_type_settings({"fullSizeRun": True}), catalog, coverages(catalog))
    candidates = [(0.0, pos, index, 0.0, -1) for pos, index in enumerate(range(0, 3000, 7))]
    for count in (1, 5, 24, 500):
        assert compiled.first(iter(candidates), count) == compiled.order(candidates)[:count]

"""A user's own catalog: JSON Lines or CSV loads, a bad row is refused by line and field."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from fashionai_pipeline.sandbox.catalog import CatalogError, load_catalog, parse_catalog
from fashionai_pipeline.sandbox.contract import Event
from fashionai_pipeline.sandbox.ranking import RankingEngine
from fashionai_pipeline.sandbox.server import TOKEN_HEADER
from tests.sandbox.test_sandbox_process import sandbox_process

REPO = Path(__file__).resolve().parents[2]
ROWS = [
    {"id": "v1", "name": "Vestido Floral Midi", "category": "vestidos", "price": 399.9, "discount": 20,
     "stock": {"P": 2, "M": 5, "G": 0}, "pattern": "floral", "fabric": "linen", "style": "boho",
     "occasion": "beach", "colour": "yellow", "season": "summer", "silhouette": "midi"},
    {"id": "v2", "name": "Vestido Floral Longo", "category": "vestidos", "price": 459, "stock": {"M": 9},
     "pattern": "floral", "fabric": "linen", "style": "boho", "occasion": "party", "colour": "pink"},
    {"id": "s1", "name": "Sandália de Couro", "category": "sapatos", "price": 259.9,
     "stock": {"36": 3, "37": 1}, "style": "boho", "occasion": "beach", "colour": "beige",
     "season": "summer"},
]  # fmt: skip
CSV = """id,name,category,price,discount,stock,pattern,style,colour
v1,Vestido Floral Midi,vestidos,399.90,20,P:2|M:5|G:0,floral,boho,yellow
v2,Vestido Floral Longo,vestidos,459,,M:9,floral,boho,pink
s1,Sandália de Couro,sapatos,259.90,0,36:3|37:1,,boho,beige
"""


def _jsonl(tmp_path: Path, rows: Sequence[object], name: str = "catalog.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(
        "\n".join(json.dumps(r) if not isinstance(r, str) else r for r in rows) + "\n", encoding="utf-8"
    )
    return path


def test_a_jsonl_catalog_loads_and_ranks(tmp_path: Path) -> None:
    catalog = load_catalog(_jsonl(tmp_path, ROWS))
    first = catalog.get("v1")
    assert first is not None
    assert (first.name, first.price_cents, first.discount, first.sale_cents) == (
        "Vestido Floral Midi",
        39990,
        Decimal(20),
        31992,
    )
    assert first.stock == (("P", 2), ("M", 5), ("G", 0)) and first.units == 7
    assert catalog.summary() == {"products": 3, "categories": {"sapatos": 1, "vestidos": 2}}
    engine = RankingEngine(catalog)
    assert engine.rank(Event("productView", "v1", "s")) == ["v2"]
    assert engine.rank(Event("shopTheLook", "v1", "s")) == ["s1"]  # another category that goes with it


def test_a_csv_catalog_loads_the_same_products(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(CSV, encoding="utf-8")
    catalog = load_catalog(path)
    assert [p.id for p in catalog.products] == ["v1", "v2", "s1"]
    v1, v2 = catalog.get("v1"), catalog.get("v2")
    assert v1 is not None and v2 is not None
    assert (v1.price_cents, v1.discount, v1.stock, v1.pattern) == (
        39990,
        Decimal(20),
        (("P", 2), ("M", 5), ("G", 0)),
        "floral",
    )
    assert (v2.discount, v2.fabric) == (Decimal(0), "")


@pytest.mark.parametrize(
    ("bad", "reported"),
    [
        ({**ROWS[1], "price": "cheap"}, "line 2: price: must be a number"),
        ({**ROWS[1], "price": -1}, "line 2: price: must be a finite number >= 0"),
        ({**ROWS[1], "price": 10.005}, "line 2: price: at most two decimals"),
        ({**ROWS[1], "discount": 100}, "line 2: discount: must be below 100"),
        ({k: v for k, v in ROWS[1].items() if k != "id"}, "line 2: id: required"),
        ({**ROWS[1], "name": ""}, "line 2: name: must be a non-empty string"),
        ({**ROWS[1], "stock": {"M": -2}}, "line 2: stock.M: must be an integer >= 0"),
        ({**ROWS[1], "stock": {"M": 1.5}}, "line 2: stock.M: must be an integer >= 0"),
        ({**ROWS[1], "stock": {}}, "line 2: stock: needs at least one size"),
        ({**ROWS[1], "stock": [1]}, "line 2: stock: must be an object"),
        ({**ROWS[1], "colour": 7}, "line 2: colour: must be a string"),
        ({**ROWS[1], "sku": "x"}, "line 2: sku: unknown field"),
        ({**ROWS[1], "id": "v1"}, "line 2: id: duplicate of line 1"),
        ("{not json", "line 2: body: not valid JSON"),
        ("[1, 2]", "line 2: body: must be a JSON object"),
    ],
)
def test_a_bad_jsonl_row_is_refused_by_line_and_field(bad: object, reported: str) -> None:
    text = "\n".join(json.dumps(r) if not isinstance(r, str) else r for r in (ROWS[0], bad, ROWS[2]))
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, "jsonl")
    assert reported in str(caught.value)


@pytest.mark.parametrize(
    ("text", "reported"),
    [
        (CSV.replace("459,,M:9", "459,,M=9"), "line 3: stock: 'M=9' is not SIZE:UNITS"),
        (CSV.replace("459,,M:9", "459,,M:lots"), "line 3: stock.M: must be an integer >= 0"),
        (CSV.replace("399.90,20", "399,90,20"), "line 2: row: more cells than the header has columns"),
        (CSV.replace("399.90,20", "R$399.90,20"), "line 2: price: must be a number"),
        (CSV.replace("Longo,vestidos,459", "Longo,vestidos,abc"), "line 3: price: must be a number"),
        (CSV.replace("colour\n", "color\n", 1), "line 1: header: unknown column 'color'"),
        ("id,name,category,stock\nv1,x,y,M:1\n", "line 1: header: price: required column"),
    ],
)  # fmt: skip
def test_a_bad_csv_row_is_refused_by_line_and_field(text: str, reported: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, "csv")
    assert reported in str(caught.value)


def test_every_bad_row_is_listed_not_only_the_first(tmp_path: Path) -> None:
    rows = [ROWS[0], {**ROWS[1], "price": "x"}, ROWS[2], {**ROWS[2], "id": "s2", "stock": {}}]
    with pytest.raises(CatalogError) as caught:
        load_catalog(_jsonl(tmp_path, rows))
    assert "line 2: price:" in str(caught.value) and "line 4: stock:" in str(caught.value)
    with pytest.raises(CatalogError, match=r"must end in \.jsonl or \.csv"):
        load_catalog(tmp_path / "catalog.json")


def test_the_sandbox_serves_a_user_catalog_and_refuses_a_bad_one(tmp_path: Path) -> None:
    good = _jsonl(tmp_path, ROWS)
    with sandbox_process("--token", "t", "--catalog", str(good)) as (_, port):
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/_sandbox/catalog", timeout=5).json()["products"] == 3
        assert httpx.get(f"{base}/_sandbox/products/s1", timeout=5).json()["name"] == "Sandália de Couro"
        answer = httpx.post(
            f"{base}/api/v1/products/protected/recommendation",
            json={"sessionId": "s", "eventType": "productView", "data": {"id": "v2"}},
            headers={TOKEN_HEADER: "t"},
            timeout=5,
        )
        assert answer.json() == {"products": ["v1"]}
    bad = _jsonl(tmp_path, [ROWS[0], {**ROWS[1], "stock": {"M": -1}}], "bad.jsonl")
    done = subprocess.run(
        [sys.executable, "-m", "fashionai_pipeline.sandbox", "--port", "0", "--catalog", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "line 2: stock.M: must be an integer >= 0" in done.stderr

"""`body_of` is parse_event(...).body() with a short way for plain dicts: on every input, valid
or not, it gives the same body or the same InvalidEvent (field and rule)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from fashionai_pipeline.producers.errors import InvalidEvent
from fashionai_pipeline.producers.event import MAX_LEN, body_of, make_event, parse_event

_VALUES: list[Any] = [
    "s1", "", " ", "x" * MAX_LEN, "x" * (MAX_LEN + 1), "sé", "s\ud800", None, 5, True, ["s"], {"id": "p"},
    "productView", "categoryView", "shopTheLook", "customShelf", "pageView",
]  # fmt: skip


def _outcome(fn: Any, raw: Any) -> Any:
    try:
        return fn(raw)
    except InvalidEvent as exc:
        return ("InvalidEvent", exc.field, exc.rule)


def _random_event(rng: random.Random) -> Any:
    raw: dict[str, Any] = {}
    for key in ("sessionId", "eventType", "data", "userId", "extra"):
        roll = rng.random()
        if key == "data":
            if roll < 0.7:
                data: dict[str, Any] = {"id": rng.choice(_VALUES)} if rng.random() < 0.9 else {}
                if rng.random() < 0.1:
                    data["more"] = "x"
                raw["data"] = data
            elif roll < 0.85:
                raw["data"] = rng.choice(_VALUES)
        elif key == "extra":
            if roll < 0.05:
                raw["extra"] = 1
        elif roll < (0.9 if key != "userId" else 0.5):
            raw[key] = rng.choice(_VALUES)
    return raw


def test_body_of_agrees_with_parse_event_on_random_events():
    rng = random.Random(11)
    plain = 0
    for _ in range(20_000):
        raw = _random_event(rng)
        expected = _outcome(lambda r: parse_event(r).body(), raw)
        assert _outcome(body_of, raw) == expected, raw
        plain += isinstance(expected, dict)
    assert plain > 200  # the valid events are many: the short way is exercised, not only refusals


@pytest.mark.parametrize(
    "raw",
    [
        make_event("productView", "s", "p1"),  # an Event passes through
        {"sessionId": "s", "eventType": "customShelf", "data": {"id": ""}, "userId": "u"},
        {"userId": None, "sessionId": "s", "eventType": "productView", "data": {"id": "p"}},
        ["not", "a", "mapping"],
    ],
)
def test_body_of_agrees_with_parse_event_on_the_edges(raw):
    assert _outcome(body_of, raw) == _outcome(lambda r: parse_event(r).body(), raw)

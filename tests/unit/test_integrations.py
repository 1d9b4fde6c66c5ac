"""The framework-free parts of the integrations (producers/integrations/common.py)."""

from __future__ import annotations

import pytest

from fashionai_pipeline.producers.integrations.common import (
    PageViews,
    Shopper,
    event_for,
    event_mapping,
    new_session_id,
    session_from_cookie,
)
from fashionai_pipeline.producers.settings import Settings


def test_a_new_session_id_is_opaque_random_and_accepted_back():
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100
    for sid in ids:
        assert len(sid) == 32
        assert session_from_cookie(sid) == (sid, False)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "short",
        "x" * 129,
        "a b c d e f g h i j",
        "sess;id=1234567890",
        "é" * 20,
        "../../../etc/passwd00",
    ],
)
def test_a_cookie_that_is_not_ours_gets_a_new_session(value):
    sid, new = session_from_cookie(value)
    assert new is True
    assert sid != value
    assert len(sid) == 32


@pytest.mark.parametrize(
    ("kind", "item", "expected"),
    [
        ("product", "p1", ("productView", "p1")),
        ("category", "c1", ("categoryView", "c1")),
        ("look", "p1", ("shopTheLook", "p1")),
        ("shelf", "ignored", ("customShelf", "")),
        ("productView", "p1", ("productView", "p1")),
        ("customShelf", "x", ("customShelf", "")),
    ],
)
def test_each_page_kind_publishes_its_event_type(kind, item, expected):
    assert event_for(kind, item) == expected


def test_the_event_leaves_out_an_anonymous_user():
    assert event_mapping("productView", "p1", Shopper("s" * 32)) == {
        "sessionId": "s" * 32,
        "eventType": "productView",
        "data": {"id": "p1"},
    }
    assert event_mapping("customShelf", "", Shopper("s" * 32, "90"))["userId"] == "90"


def test_a_page_view_that_cannot_be_published_still_returns_the_native_order():
    # Nothing listens on port 1: the broker is refused and the cache too.
    settings = Settings(
        broker_url="redis://127.0.0.1:1/0", redis_url="redis://127.0.0.1:1/1", publish_timeout=0.2
    )
    views = PageViews(settings)
    try:
        assert views.personalize("product", "p1", Shopper("s" * 32), ["a", "b"]) == ["a", "b"]
        # An id the contract refuses (too long) is counted too, not raised into the page.
        assert views.personalize("product", "p" * 600, Shopper("s" * 32), ["a"]) == ["a"]
    finally:
        views.close()
    assert views.stats.published == 0
    assert views.stats.not_published == 2
    assert views.stats.errors == {"BrokerUnavailable": 1, "InvalidEvent": 1}

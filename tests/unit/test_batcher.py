"""Batch cutting: by size, or by the age of the first item; time is passed in."""

from __future__ import annotations

import pytest

from fashionai_pipeline.worker.batcher import Batcher


def test_a_batch_is_cut_when_it_is_full():
    b: Batcher[int] = Batcher(3, 0.01)
    assert b.add(1, 0.0) is None and b.add(2, 0.0) is None
    assert b.add(3, 0.0) == [1, 2, 3]
    assert len(b) == 0


def test_a_batch_is_cut_interval_after_its_first_item_not_its_last():
    b: Batcher[int] = Batcher(100, 0.25)
    b.add(1, 10.0)
    b.add(2, 10.2)
    assert b.due(10.2) is None
    assert b.due(10.25) == [1, 2]
    assert b.due(11.0) is None  # nothing pending: nothing due
    b.add(3, 11.0)  # a new batch starts its own interval
    assert b.due(11.125) is None and b.due(11.5) == [3]


def test_take_returns_everything_pending():
    b: Batcher[str] = Batcher(10, 1.0)
    b.add("a", 0.0)
    b.add("b", 0.0)
    assert b.take() == ["a", "b"] and b.take() == []


def test_a_size_below_one_is_refused():
    with pytest.raises(ValueError, match="size"):
        Batcher(0, 0.01)

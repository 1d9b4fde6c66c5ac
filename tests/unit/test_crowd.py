"""The crowd tally's rules with an injected clock: position weights, decay, bounds, the TTL-free parts."""

from __future__ import annotations

import json
import math

import pytest

from fashionai_pipeline.worker.crowd import REBASE_AFTER, CrowdPolicy, CrowdState

H = 3600.0


def _order(policy: CrowdPolicy, state: CrowdState, now: float) -> list[str]:
    value = policy.value(state, now)
    assert value is not None
    return json.loads(value)[1:]


def test_positions_are_weighted_and_agreement_at_the_top_wins():
    policy = CrowdPolicy(half_life=H, size=10, min_shoppers=2)
    state = policy.add(None, ["a", "b", "c"], "s1", 0.0)
    state = policy.add(state, ["b", "a", "d"], "s2", 0.0)
    scores = policy.decayed(state, 0.0)
    assert scores["a"] == pytest.approx(1 + policy.weight(1))
    assert scores["a"] == scores["b"] and scores["c"] == scores["d"] == pytest.approx(0.5)
    assert _order(policy, state, 0.0)[:2] == ["a", "b"] and set(_order(policy, state, 0.0)) == {
        "a",
        "b",
        "c",
        "d",
    }


def test_older_contributions_weigh_half_per_half_life():
    policy = CrowdPolicy(half_life=H, size=10, min_shoppers=1)
    state = policy.add(None, ["old"], "s1", 0.0)
    state = policy.add(state, ["new"], "s2", H)  # one half-life later, the same weight
    scores = policy.decayed(state, H)
    assert scores["old"] == pytest.approx(0.5) and scores["new"] == pytest.approx(1.0)
    assert _order(policy, state, H) == ["new", "old"]
    # Two old votes equal one new one, as the decayed sums say.
    state = policy.add(state, ["old"], "s3", 0.0 + H)
    assert policy.decayed(state, H)["old"] == pytest.approx(1.5)


def test_rebase_keeps_numbers_finite_and_the_order_unchanged():
    policy = CrowdPolicy(half_life=1.0, size=10, min_shoppers=1)
    state = policy.add(None, ["a", "b"], "s1", 0.0)
    far = (REBASE_AFTER + 10) * 1.0
    state = policy.add(state, ["c"], "s2", far)
    assert state.epoch == far  # rebased
    assert max(state.scores.values()) == pytest.approx(1.0)
    assert _order(policy, state, far)[0] == "c"
    later = policy.add(state, ["a"], "s3", far * 40)  # thousands of half-lives: still finite
    assert all(math.isfinite(v) for v in later.scores.values())


def test_products_and_shoppers_are_bounded_and_only_a_crowd_is_served():
    policy = CrowdPolicy(half_life=H, size=5, min_shoppers=3)
    state = None
    for i in range(2):
        state = policy.add(state, [f"p{i}{j}" for j in range(8)], f"s{i}", float(i))
    assert state is not None
    assert len(state.scores) == 5  # the lowest scores went
    assert policy.value(state, 2.0) is None  # two shoppers are not a crowd
    state = policy.add(state, ["x"], "s1", 3.0)  # the same shopper again: still two
    assert policy.value(state, 3.0) is None and state.who[:2] == ["s1", "s0"]
    state = policy.add(state, ["x"], "s9", 4.0)
    assert len(state.who) == 3 and policy.value(state, 4.0) is not None
    state = policy.add(state, ["x"], "s10", 5.0)
    assert len(state.who) == 3 and state.who[0] == "s10"  # bounded: the most recent distinct shoppers


def test_state_round_trips_and_a_bad_state_starts_again():
    policy = CrowdPolicy()
    state = policy.add(None, ["a", "b"], "s1", 12.5)
    again = CrowdState.decode(state.encode())
    assert again == state
    assert CrowdState.decode(b"not json") is None
    assert CrowdState.decode(json.dumps({"v": 2, "epoch": 0, "scores": {}, "who": []})) is None
    assert CrowdState.decode(None) is None


def test_value_is_in_the_ranking_format_with_its_update_time():
    policy = CrowdPolicy(min_shoppers=1)
    state = policy.add(None, ["a", "b"], "s1", 100.0)
    raw = policy.value(state, 100.25)
    assert raw is not None and json.loads(raw) == [100_250, "a", "b"]

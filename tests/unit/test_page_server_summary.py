"""benchmarks.page_server's judging: per-round ratios to the page without personalisation, so a
machine whose speed drifts between rounds moves both sides of a ratio and not the verdict."""

from __future__ import annotations

import pytest

from benchmarks.page_server import MODES, Row, summarise, table


def rows(server: str, per_round: list[dict[str, float]]) -> list[Row]:
    return [
        Row(server, label, rps, 1e6 / rps, 1.0, 2.0, n)
        for n, modes in enumerate(per_round)
        for label, rps in modes.items()
    ]


def test_ratios_are_per_round_medians_and_the_targets_follow_them():
    # The machine runs at 1x, 0.5x and 0.8x speed in the three rounds; the project costs 5%
    # and the DIY peer 50% in each. Ratios of medians would mix rounds (0.95 only by luck).
    speeds = [1.0, 0.5, 0.8]
    data = rows(
        "s", [{"none": 1000 * k, "project": 950 * k, "diy": 500 * k, "pair-off": 900 * k} for k in speeds]
    )
    out = summarise(data)["servers"]["s"]
    modes, targets = out["modes"], out["targets"]
    assert modes["project"]["rps_vs_none"] == pytest.approx(0.95)
    assert modes["diy"]["rps_vs_none"] == pytest.approx(0.5)
    assert modes["project"]["rounds"] == 3
    # overhead per page above the median `none` (800 req/s): 1/(0.95 x 800) - 1/800
    assert modes["project"]["overhead_us"] == pytest.approx((1 / 0.95 - 1) / 800 * 1e6)
    assert targets == {
        "project >= 0.90 x none req/s": True,
        "diy overhead >= 3 x project's": True,
        "default >= pair-off req/s": True,
    }
    assert "0.95x" in table({"servers": {"s": out}})


def test_a_missed_target_and_a_losing_default_are_reported():
    data = rows("s", [{"none": 1000, "project": 800, "diy": 600, "poll-on": 850}] * 3)
    targets = summarise(data)["servers"]["s"]["targets"]
    assert targets == {
        "project >= 0.90 x none req/s": False,
        "diy overhead >= 3 x project's": False,  # 667 us against 250 us: 2.7x
        "default >= poll-on req/s": False,
    }


def test_every_mode_is_known():
    assert list(MODES)[:3] == ["none", "project", "diy"]
    assert all(mode in ("none", "raw", "project", "diy") for mode, _ in MODES.values())


def test_the_projects_own_work_is_its_overhead_above_the_raw_round_trip():
    data = rows("s", [{"none": 1000, "raw": 950, "project": 900}] * 3)
    modes = summarise(data)["servers"]["s"]["modes"]
    raw_over, project_over = (1 / 0.95 - 1) / 1000 * 1e6, (1 / 0.9 - 1) / 1000 * 1e6
    assert modes["raw"]["above_raw_us"] == pytest.approx(0.0)
    assert modes["project"]["above_raw_us"] == pytest.approx(project_over - raw_over)
    assert ">raw" in table({"servers": {"s": summarise(data)["servers"]["s"]}})

"""The benchmark suite runs end to end and reports every figure issue #4 asks for.

Only the shape and the bookkeeping are checked (every event accounted for, no
section failed, every target row judged): how fast anything was is the
benchmark's business, not a test's.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str, timeout: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", *argv, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not math.isnan(value) and value > 0


def test_smoke_benchmark_reports_every_section_with_every_event_accounted_for():
    result = _run("benchmarks", "--smoke", timeout=400)
    assert "errors" not in result
    assert result["worker_log_errors"] == []
    drains = result["delivery"]
    assert set(drains) == {"ceiling-aiohttp-200", "project", "celery-threads-100", "celery-prefork-2"}
    for name, entry in drains.items():
        for run in entry["runs"]:
            assert run["finished"] == run["backlog"] and run["failed"] == 0, (name, run)
            assert _positive(run["events_per_s"]) and _positive(run["cpu_us_per_event"]), (name, run)
    ratios = result["ratios"]
    assert ratios["best_peer"] in drains
    for key in (
        "project_vs_best_peer",
        "project_vs_ceiling",
        "cpu_best_peer_vs_project",
        "apply_async_vs_publish_p50",
        "apply_async_vs_publish_cpu",
    ):
        assert _positive(ratios[key]), key
    for timing in (
        result["redis_rtt"],
        result["redis_rtt_client"],
        result["redis_rtt_polled"],
        result["publish"]["project"],
        result["publish"]["project_polled"],
        result["publish"]["celery"],
        result["read"],
        result["read_polled"],
    ):
        assert timing["calls"] > 0 and _positive(timing["p50_us"]) and timing["p99_us"] >= timing["p50_us"]
    latency = result["latency"]
    assert latency["samples"] > 0 and latency["p99_ms"] >= latency["p50_ms"] > 0
    memory = result["memory"]
    assert len(memory["per_process_mb"]) == 3 and _positive(memory["node_pss_mb"])
    assert memory["node_pss_mb"] <= memory["total_mb"]  # shared pages are counted once
    assert [r["workers"] for r in result["rate_limit"]] == [1, 2, 4]
    assert all(r["events"] > 0 and _positive(r["ratio"]) for r in result["rate_limit"])
    targets = result["targets"]
    assert targets, "no target was judged"
    assert all(isinstance(t["pass"], bool) and t["value"] is not None for t in targets), targets


def test_smoke_benchmark_on_rabbitmq_delivers_and_publishes_there():
    result = _run("benchmarks", "--smoke", "--broker", "amqp", "--broker-only", timeout=400)
    assert "errors" not in result
    assert result["worker_log_errors"] == []
    assert result["machine"]["broker"].startswith("amqp://guest:***@")  # the password is not printed
    for name in ("project", "celery-threads-100", "celery-prefork-2"):
        run = result["delivery"][name]["median"]
        assert run["finished"] == run["backlog"] and run["failed"] == 0, (name, run)
    assert _positive(result["ratios"]["project_vs_best_peer"])
    publish = result["publish"]
    assert _positive(publish["project"]["p50_us"]) and _positive(publish["celery"]["p50_us"])


def test_request_path_profile_takes_a_publish_and_a_read_apart():
    result = _run("benchmarks.request_path", "--calls", "300", timeout=120)
    assert set(result["calls"]) == {
        "PING, raw socket",
        "PING, redis-py Connection",
        "PING, Connection, reply polled",
        "PING, redis.Redis client",
        "Publisher.product_view",
        "Publisher.product_view, polling on",
        "Publisher.product_view, direct connections off",
        "Publisher.product_view, JSON templates off",
        "RankingReader.order (200 native)",
        "RankingReader.order, polling on",
        "RankingReader.order, direct connections off",
    }
    assert set(result["publish_stages"]) == {"validate", "envelope", "kombu framing", "LPUSH round trip"}
    assert set(result["read_stages"]) == {"key", "GET round trip", "JSON decode", "merge (200 native)"}
    stages = [*result["publish_stages"].values(), *result["read_stages"].values()]
    assert all(s["calls"] == 300 and _positive(s["p50_us"]) for s in stages)
    assert all(_positive(s["p50_us"]) and _positive(s["cpu_us_per_call"]) for s in result["calls"].values())
    assert _positive(result["async_publisher"]["together_us_per_event"])


def test_latency_alone_at_a_chosen_rate():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.latency", "--rate", "200", "--seconds", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["samples"] > 0 and result["p99_ms"] >= result["p50_ms"] > 0


def test_the_page_benchmarks_raw_round_trip_publishes_and_reads_for_real():
    """The raw mode is a publish + read that does the round trip, not a page that skips it:
    the event lands on the queue and the cached ranking orders the page."""
    import asyncio

    import redis

    from benchmarks.pages.raw import AsyncRaw, Raw

    url, queue, key = "redis://127.0.0.1:6379/15", "fashionai-raw-test.q", "fashionai-raw-test:rank"
    client = redis.Redis.from_url(url)
    client.delete(queue, key)
    native = ["a", "b", "c", "d"]
    try:
        sync = Raw(url, queue)
        assert sync.order(key, "s1", "p1", native) == native  # nothing cached: native
        client.set(key, json.dumps([1, "c", "x", "a"]))
        assert sync.order(key, "s1", "p1", native) == ["c", "a", "b", "d"]
        assert len(sync.socks) == 1  # one connection for the thread, reused
        sync.close()

        async def main() -> list[str]:
            raw = AsyncRaw(url, queue)
            first = await raw.order(key, "s2", "p2", native)
            assert len(raw.free) == 1  # the connection is kept for the next page
            await raw.aclose()
            return first

        assert asyncio.run(main()) == ["c", "a", "b", "d"]
        events = [json.loads(value) for value in client.lrange(queue, 0, -1)]
        pushed = [(e["sessionId"], e["data"]["id"]) for e in events]
        assert pushed == [("s2", "p2"), ("s1", "p1"), ("s1", "p1")]
    finally:
        client.delete(queue, key)


def test_the_in_process_page_benchmark_runs_every_mode_for_real():
    """Each mode's pages do what the mode says (an event pushed per page, the cached ranking
    rendered), on both kinds, so a CPU figure is never that of a page that skipped its work."""
    result = _run(
        "benchmarks.page_inprocess", "--block", "8", "--blocks", "2", "--redis", "redis://127.0.0.1:6379/15",
        timeout=300,
    )  # fmt: skip
    for kind in ("asyncio", "threads"):
        modes = result["kinds"][kind]
        assert set(modes) == {"none", "raw", "project", "diy"}
        assert modes["none"]["pushed_per_page"] == 0 and modes["none"]["ranked_share"] == 0
        for mode in ("raw", "project", "diy"):
            assert modes[mode]["pushed_per_page"] == 1, (kind, mode)
            assert modes[mode]["ranked_share"] > 0.5, (kind, mode)
        for m in modes.values():
            assert m["pages"] == 16 and m["blocks"] == 2 and _positive(m["cpu_us"])
            assert "above_raw_us" in m and _positive(m["cpu_vs_none"])
    layers = _run(
        "benchmarks.page_inprocess", "--kind", "threads", "--modes", "direct,publisher,reader",
        "--block", "8", "--blocks", "2", "--redis", "redis://127.0.0.1:6379/15", timeout=300,
    )["kinds"]["threads"]  # fmt: skip
    for mode in ("direct", "publisher", "reader"):
        assert layers[mode]["pushed_per_page"] == 1 and layers[mode]["ranked_share"] > 0.5, mode

"""Delivery under pressure: the global rate limit, retries, shared pauses, coalescing."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.event import make_event
from fashionai_pipeline.producers.message import encode
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.producers.reader import RankingReader
from fashionai_pipeline.worker.batch import BatchProcessor
from fashionai_pipeline.worker.delivery import Deliverer
from fashionai_pipeline.worker.store import RedisStore
from tests.conftest import BROKERS, CACHE_URL, make_settings, wait_until

pytestmark = pytest.mark.integration


def max_in_any_second(times: list[float]) -> int:
    """The most requests that arrived within any half-open 1-second span."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def _stats(state, tenant: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in state.hgetall(keys.stats(tenant)).items()}


def test_global_limit_holds_across_four_worker_processes(sandbox, cache, state, workers):
    rate, burst, n = 50, 5, 1000
    settings = make_settings(BROKERS["redis"], sandbox.url, rate_limit=rate, rate_burst=burst, batch_size=50)
    for node in range(4):  # four worker processes, each its own node, all up and idle
        workers(settings, "-c", "1", "-n", f"rl{node}-{settings.tenant}@%h")
    with Publisher(settings) as pub:  # a backlog: publishing outpaces the limit 10x
        for i in range(n):
            pub.product_view(f"rl-{settings.tenant}-{i}", f"p{i}")
    wait_until(lambda: _stats(state, settings.tenant).get("cached", 0) >= n, 60, "the backlog to drain")

    times = [r["t"] for r in sandbox.requests()]
    assert len(times) == n  # no retries were needed: the limit kept us clear of 429s
    peak = max_in_any_second(times)
    # The limiter grants at most rate + burst in any second; the sandbox logs arrivals, which
    # the scheduling of a loaded 2-core machine shifts by tens of ms: 100 ms of that is allowed
    # (without the shared limit, four workers would reach 4 x 50).
    assert peak <= rate + burst + rate // 10, f"{peak} requests in one second"
    drain = max(times) - min(times)
    ideal = (n - burst) / rate
    assert drain <= 1.10 * ideal, f"drained in {drain:.2f}s, ideal {ideal:.2f}s"


def test_429_retry_after_pauses_every_worker(sandbox, cache, state, workers):
    sandbox.configure(rate_429=1.0, retry_after=2)
    settings = make_settings(BROKERS["redis"], sandbox.url, rate_limit=100, rate_burst=2)
    workers(settings, "-c", "1", "-n", f"a-{settings.tenant}@%h")
    workers(settings, "-c", "1", "-n", f"b-{settings.tenant}@%h")
    with Publisher(settings) as pub:
        for i in range(40):
            pub.product_view(f"ra-{settings.tenant}-{i}", f"p{i}")
    wait_until(lambda: any(r["status"] == 429 for r in sandbox.requests()), 30, "a 429")
    sandbox.configure(rate_429=0.0)
    first_429 = min(r["t"] for r in sandbox.requests() if r["status"] == 429)
    wait_until(lambda: _stats(state, settings.tenant).get("cached", 0) >= 40, 60, "everything cached")

    log = sandbox.requests()
    # Requests already in flight land within a few ms; after that nobody sends
    # until Retry-After (2 s) has passed, on either worker.
    during_pause = [r for r in log if first_429 + 0.3 < r["t"] < first_429 + 1.9]
    assert during_pause == []
    assert _stats(state, settings.tenant)["retried"] >= 1
    assert all(r["status"] in (200, 429) for r in log)


def test_flaky_upstream_every_event_delivered_within_the_limit(sandbox, cache, state, workers):
    sandbox.configure(
        rate_429=0.3, retry_after=1, rate_5xx=0.1, rate_timeout=0.05, timeout_sleep_s=1.5, seed=11
    )
    rate, burst, n = 50, 5, 100
    settings = make_settings(
        BROKERS["redis"],
        sandbox.url,
        rate_limit=rate,
        rate_burst=burst,
        request_timeout=0.5,
        connect_timeout=0.5,
        max_attempts=40,
        max_age=600,
        retry_base=0.05,
        retry_cap=0.5,
    )
    events = [make_event("categoryView", f"fl-{settings.tenant}-{i}", f"c{i}") for i in range(n)]
    with Publisher(settings) as pub:
        for event in events:
            pub.publish(event)
    workers(settings, "-c", "2")
    reader = RankingReader(settings)

    def uncached() -> int:
        return sum(reader.get(e.eventType, e.data.id, e.sessionId) is None for e in events)

    wait_until(lambda: uncached() == 0, 240, "every event delivered despite the failures")
    reader.close()
    log = sandbox.requests()
    statuses = {r["status"] for r in log}
    assert {200, 429} <= statuses and statuses & {500, 502, 503} and 504 in statuses
    assert max_in_any_second([r["t"] for r in log]) <= rate + burst
    stats = _stats(state, settings.tenant)
    assert stats["retried"] >= len(log) - n - stats.get("coalesced", 0) - 5  # every failure was retried
    assert stats.get("dead", 0) == 0
    delivered = {json.dumps(r["body"], sort_keys=True) for r in log if r["status"] == 200}
    assert delivered == {json.dumps(e.body(), sort_keys=True) for e in events}


def test_identical_events_coalesce_within_batch_and_window(sandbox, cache, state, workers):
    settings = make_settings(BROKERS["redis"], sandbox.url, coalesce_window_ms=5000)
    event = make_event("productView", f"co-{settings.tenant}", "p1", "u1")
    with Publisher(settings) as pub:
        for _ in range(10):
            pub.publish(event)
    worker = workers(settings, "-c", "1")
    wait_until(lambda: _stats(state, settings.tenant).get("received", 0) >= 10, 30, "the first ten")
    with Publisher(settings) as pub:  # a second batch, inside the window
        pub.publish(event)
    wait_until(lambda: _stats(state, settings.tenant).get("received", 0) >= 11, 30, "the eleventh")
    worker.stop()
    assert len(sandbox.requests()) == 1
    stats = _stats(state, settings.tenant)
    assert stats["coalesced"] == 10 and stats["calls"] == 1


def test_late_ranking_never_overwrites_a_newer_one(sandbox):
    settings = make_settings(BROKERS["redis"], sandbox.url)
    # Same user, so the same ranking key; the sandbox answers the shelf of a session
    # with history (s-new) and has no data for a fresh one (s-old).
    old = make_event("customShelf", "s-old", "", "u1")
    new = make_event("customShelf", "s-new", "", "u1")
    history = [make_event("productView", "s-new", f"p{i + 1:04d}") for i in range(3)]  # demo catalog ids

    async def run() -> tuple[list[str], list[str], int]:
        client = aioredis.Redis.from_url(CACHE_URL)
        deliverer = Deliverer(settings)
        processor = BatchProcessor(settings, deliverer, RedisStore(client, client))
        for i, event in enumerate(history):
            await processor.process([encode(f"h{i}", settings.tenant, 1500.0, event.body())])
        first = await processor.process([encode("n", settings.tenant, 2000.0, new.body())])
        second = await processor.process([encode("o", settings.tenant, 1000.0, old.body())])
        await deliverer.aclose()
        await client.aclose()
        assert first is not None and second is not None
        answered = {r["body"]["sessionId"]: r["products"] for r in sandbox.requests()}
        return answered["s-new"], answered["s-old"], second["stale"]

    newer, older, stale = asyncio.run(run())
    assert newer != older  # the two answers differ, so the check below means something
    with RankingReader(settings) as reader:
        ranking = reader.get("customShelf", "", "s-any", "u1")
    assert ranking is not None
    assert ranking.products == newer and ranking.enqueued_at == 2000.0
    assert stale == 1


def test_scheduled_retries_survive_a_worker_crash(sandbox, cache, state, workers):
    import signal

    sandbox.configure(rate_5xx=1.0)
    settings = make_settings(BROKERS["redis"], sandbox.url, retry_base=2.0, retry_cap=3.0, max_attempts=20)
    events = [make_event("productView", f"rs-{settings.tenant}-{i}", f"p{i}") for i in range(30)]
    with Publisher(settings) as pub:
        for event in events:
            pub.publish(event)
    first = workers(settings, "-c", "1")
    wait_until(
        lambda: _stats(state, settings.tenant).get("retried", 0) >= 30, 30, "every event to be scheduled"
    )
    assert state.zcard(keys.retry(settings.tenant)) + state.zcard(keys.retry_lease(settings.tenant)) >= 1
    first.signal(signal.SIGKILL)  # the broker messages are acked; only the retry set holds these events
    first.popen.wait(10)
    sandbox.configure(rate_5xx=0.0)
    workers(settings, "-c", "1")
    with RankingReader(settings) as reader:
        wait_until(
            lambda: all(reader.get(e.eventType, e.data.id, e.sessionId) is not None for e in events),
            90,
            "every retried event to be delivered by the new worker",
        )

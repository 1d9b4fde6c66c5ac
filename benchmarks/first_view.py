"""First view: publish-and-wait time to the fresh ranking, idle and at half load.

    python -m benchmarks.first_view [--views 200] [--rate 1500] [--seconds 15] [--json]

A fresh sandbox at 50 ms upstream latency and one worker node (`-c 2`), as in
the full benchmark. `RankingServer.view` (producers.serving) publishes one
view and waits for the worker's notice of its ranking; the time is the whole
call, from before the publish to the merged order (200 native products).

- one view at a time: `--views` calls, one after another, nothing else queued;
- capacity: a backlog of `--backlog` events drained by the same worker, in this
  run (the machine is shared: its capacity now, not a figure from another day);
- at half load: the same calls, spaced 50 ms apart, while a second process
  publishes half that capacity in other events/s onto the same queue (or
  `--rate`).

Targets (issue 11): p50 <= upstream + 20 ms idle; p99 <= upstream + 60 ms at
half load. Every call's source is counted: anything but "fresh" is a miss.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from typing import Any

import redis

from benchmarks import backlog
from benchmarks.context import UPSTREAM_LATENCY_MS, Bench, progress
from benchmarks.measure import percentile
from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.event import make_event
from fashionai_pipeline.producers.serving import RankingServer
from fashionai_pipeline.producers.settings import Settings

NATIVE = [f"p{i:04d}" for i in range(200)]
_TICK = 0.005


def _background(settings: Settings, broker_url: str, rate: float, seconds: float) -> None:
    """Publish `rate` distinct events/s onto the queue for `seconds` (run in its own process)."""
    broker = redis.Redis.from_url(broker_url)
    messages = backlog.ProjectMessages(settings, broker)
    total = int(rate * seconds)
    start, sent = time.perf_counter(), 0
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        if due > sent:
            bodies = (backlog.event_body(f"{settings.tenant}-bg", i) for i in range(sent, due))
            sent += messages.push(broker, settings.queue, bodies)
        time.sleep(_TICK)


def _views(server: RankingServer, tag: str, n: int, spacing: float, deadline: float) -> dict[str, Any]:
    times, sources = [], Counter[str]()
    for i in range(n):
        if time.monotonic() > deadline:
            break
        event = make_event("productView", f"{tag}-s{i}", f"p{i % 200:04d}")
        t0 = time.perf_counter()
        served = server.view(event, NATIVE, wait_ms=1000)
        times.append((time.perf_counter() - t0) * 1000)
        sources[served.source] += 1
        if spacing:
            time.sleep(max(0.0, spacing - (time.perf_counter() - t0)))
    return {
        "views": len(times),
        "p50_ms": percentile(times, 50),
        "p99_ms": percentile(times, 99),
        "max_ms": max(times, default=float("nan")),
        "sources": dict(sources),
    }


def capacity(bench: Bench, settings: Settings, n: int) -> float:
    """Events/s the running worker drains from a backlog of `n` (pushed in one go)."""
    messages = backlog.ProjectMessages(settings, bench.broker)
    before = bench.finished(settings.tenant)
    start = time.perf_counter()
    messages.push(
        bench.broker, settings.queue, (backlog.event_body(f"{settings.tenant}-cap", i) for i in range(n))
    )
    deadline = time.monotonic() + 120
    while bench.finished(settings.tenant) < before + n and time.monotonic() < deadline:
        time.sleep(0.01)
    return (bench.finished(settings.tenant) - before) / (time.perf_counter() - start)


def run(views: int, rate: float | None, seconds: float, backlog_n: int) -> dict[str, Any]:
    bench = Bench(quick=True)
    sandbox = bench.sandbox()
    try:
        settings = bench.settings(sandbox, "first-view")
        worker = bench.worker(settings, settings.queue)
        server = RankingServer(settings)
        try:
            server.view(make_event("productView", "warm", "p0001"), NATIVE, wait_ms=1000)  # connections open
            progress(f"first view: {views} views one at a time")
            idle = _views(server, f"{settings.tenant}-idle", views, 0.0, time.monotonic() + 120)
            progress(f"first view: capacity from a backlog of {backlog_n} events")
            measured = capacity(bench, settings, backlog_n)
            rate = rate or measured / 2
            progress(f"first view: views every 50 ms while {rate:.0f} other events/s arrive, {seconds:.0f} s")
            bench.cache.delete(keys.latency(settings.tenant))
            pusher = multiprocessing.get_context("spawn").Process(
                target=_background, args=(settings, bench.broker_url, rate, seconds + 2)
            )
            pusher.start()
            time.sleep(2.0)  # the background flow reaches its rate
            loaded = _views(
                server, f"{settings.tenant}-load", int(seconds / 0.05), 0.05, time.monotonic() + seconds
            )
            pusher.join(60)
            background = [float(x) for x in bench.cache.lrange(keys.latency(settings.tenant), 0, -1)]
            loaded["rate"] = rate
            loaded["capacity_events_per_s"] = measured
            loaded["background_enqueue_to_cache_p50_ms"] = percentile(background, 50)
            loaded["background_enqueue_to_cache_p99_ms"] = percentile(background, 99)
        finally:
            server.close()
        bench.stop(worker)
        bench.broker.delete(settings.queue)
        return {
            "upstream_ms": UPSTREAM_LATENCY_MS,
            "idle": idle,
            "half_load": loaded,
            "load_avg": os.getloadavg(),
        }
    finally:
        sandbox.close()
        bench.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.first_view", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--views", type=int, default=200)
    parser.add_argument(
        "--rate", type=float, default=None, help="background events/s (default: capacity / 2)"
    )
    parser.add_argument("--backlog", type=int, default=10_000, help="events in the capacity backlog")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    result = run(args.views, args.rate, args.seconds, args.backlog)
    result["load_avg_before"] = load_before
    up = UPSTREAM_LATENCY_MS
    idle, loaded = result["idle"], result["half_load"]
    print(f"first view (upstream {up} ms; load average before {load_before[0]:.2f})")
    print(f"{'':32} {'views':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  sources")
    print(f"worker capacity now: {loaded['capacity_events_per_s']:,.0f} events/s (backlog drain)")
    for name, row in (("one view at a time", idle), (f"at {loaded['rate']:,.0f} events/s", loaded)):
        print(
            f"{name:32} {row['views']:>6} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['max_ms']:>8.1f}"
            f"  {row['sources']}"
        )
    print(
        f"background enqueue->cache: p50 {loaded['background_enqueue_to_cache_p50_ms']:.1f} ms,"
        f" p99 {loaded['background_enqueue_to_cache_p99_ms']:.1f} ms"
    )
    ok_idle = idle["p50_ms"] <= up + 20
    ok_load = loaded["p99_ms"] <= up + 60
    print(f"target p50 idle <= {up + 20} ms: {'met' if ok_idle else 'MISSED'}")
    print(f"target p99 at half load <= {up + 60} ms: {'met' if ok_load else 'MISSED'}")
    result["targets"] = {"idle_p50": ok_idle, "half_load_p99": ok_load}
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

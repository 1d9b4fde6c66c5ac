"""The project's worker under load shapes other than "drain as fast as you can".

- latency: events arrive at a steady rate (half the measured maximum) while one
  worker node (-c 2) runs; after a warm-up (connections opened, batches
  flowing) the worker's own enqueue->cache samples (keys.latency) give
  p50/p99. Events are pushed in small paced chunks of Publisher-identical
  messages, so the producer costs the worker's CPU little.
- memory: a large backlog waits on the queue; one worker node (-c 2) runs for
  a while; peak RSS (VmHWM) of each of its processes.
- rate limit: a backlog for `seconds` at rate R drained by 1, then 2, then 4
  worker nodes (-c 1 each, nodes added between backlogs) sharing the global
  limit; the delivered rate is read off the sandbox's arrival stamps of 200
  answers, after the first second of each backlog (the burst).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from benchmarks import backlog
from benchmarks.context import Bench, progress, wait_for_line
from benchmarks.measure import percentile, tree_memory
from fashionai_pipeline.producers import keys
from fashionai_pipeline.worker.local import Proc

_TICK = 0.005


@dataclass
class Latency:
    rate: float
    seconds: float
    events: int
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class MemoryRun:
    backlog: int
    seconds: float
    consumed: int
    max_process_mb: float
    total_mb: float
    per_process_mb: list[float]
    node_pss_mb: float  # the whole node now, each shared page counted once


@dataclass
class RateRun:
    workers: int
    limit: float
    events: int
    delivered_per_s: float
    ratio: float
    max_in_1s: int


def _wait_finished(bench: Bench, tenant: str, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    done = bench.finished(tenant)
    while done < n and time.monotonic() < deadline:
        time.sleep(0.05)
        done = bench.finished(tenant)
    return done


def latency_at(bench: Bench, rate: float, seconds: float, warmup: float = 2.0) -> Latency:
    """Steady arrivals at `rate` for warmup + seconds; samples from after the warm-up."""
    sandbox = bench.sandbox()
    try:
        settings = bench.settings(sandbox, "latency")
        worker = bench.worker(settings, settings.queue)
        messages = backlog.ProjectMessages(settings, bench.broker)
        total = int(rate * (warmup + seconds))
        progress(f"latency: {rate:.0f}/s for {warmup:.0f}+{seconds:.0f}s, one worker -c 2")
        latency_key = keys.latency(settings.tenant)
        start, sent, warm = time.perf_counter(), 0, False
        counted_from, measure_start = 0, 0.0
        while sent < total:
            now = time.perf_counter() - start
            if not warm and now >= warmup:
                # Connections are open and batches flowing: measure from here.
                bench.cache.delete(latency_key)
                warm, counted_from, measure_start = True, sent, now
            due = min(total, int(now * rate) + 1)
            if due > sent:
                bodies = (backlog.event_body(settings.tenant, i) for i in range(sent, due))
                sent += messages.push(bench.broker, settings.queue, bodies)
            time.sleep(_TICK)
        elapsed = time.perf_counter() - start - measure_start
        _wait_finished(bench, settings.tenant, total, timeout=60)
        samples = [float(x) for x in bench.cache.lrange(latency_key, 0, -1)]
        bench.stop(worker)
        measured = total - counted_from
        return Latency(
            measured / elapsed,
            elapsed,
            measured,
            len(samples),
            percentile(samples, 50),
            percentile(samples, 99),
            max(samples, default=float("nan")),
        )
    finally:
        sandbox.close()


def memory_with_backlog(bench: Bench, n: int, seconds: float) -> MemoryRun:
    sandbox = bench.sandbox()
    try:
        settings = bench.settings(sandbox, "memory")
        messages = backlog.ProjectMessages(settings, bench.broker)
        progress(f"memory: pushing a backlog of {n} events")
        messages.push(
            bench.broker, settings.queue, (backlog.event_body(settings.tenant, i) for i in range(n))
        )
        worker = bench.worker(settings, settings.queue)
        progress(f"memory: worker -c 2 consuming for {seconds:.0f}s")
        time.sleep(seconds)
        memory = tree_memory([worker.pid])
        consumed = bench.finished(settings.tenant)
        bench.stop(worker)
        bench.broker.delete(settings.queue)
        per = sorted(memory.peak_rss_mb.values(), reverse=True)
        return MemoryRun(
            n,
            seconds,
            consumed,
            memory.max_peak_mb,
            memory.total_peak_mb,
            [round(x, 1) for x in per],
            memory.total_pss_mb,
        )
    finally:
        sandbox.close()


def rate_limited(
    bench: Bench, limit: float, seconds: float, counts: tuple[int, ...] = (1, 2, 4)
) -> list[RateRun]:
    """One backlog per worker count; nodes are added between backlogs, never restarted."""
    sandbox = bench.sandbox()
    runs: list[RateRun] = []
    procs: list[Proc] = []
    try:
        settings = bench.settings(sandbox, "rate", rate_limit=limit, rate_burst=10)
        n, total = int(limit * seconds), 0
        for workers in counts:
            release = backlog.stage_project(settings, bench.broker, n)
            new = [
                bench.worker(settings, f"{settings.queue}-{i}", args=("-c", "1"), wait_ready=False)
                for i in range(len(procs), workers)
            ]
            for proc in new:
                wait_for_line(proc, "pump started")
            procs += new
            sandbox.clear()
            progress(f"rate limit: {n} events, limit {limit:.0f}/s, {workers} worker(s) -c 1")
            release()
            total += n
            _wait_finished(bench, settings.tenant, total, timeout=seconds * 3 + 30)
            times = sorted(float(e["t"]) for e in sandbox.requests() if e["status"] == 200)
            steady = [t for t in times if t >= times[0] + 1.0] if times else []
            rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0
            runs.append(RateRun(workers, limit, len(times), rate, rate / limit, _max_in_window(times, 1.0)))
        return runs
    finally:
        bench.stop(*procs)
        sandbox.close()


def _max_in_window(times: list[float], width: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best

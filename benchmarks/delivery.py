"""Draining a backlog: the project's worker, the two Celery peers and the ceiling.

Every contender gets a fresh sandbox at 50 ms latency, its own queue and tenant,
and a backlog of N distinct events staged before its workers start. Then, the
same way for each:

    events/s = N / (t_last - t_first)

t_first: when the first upstream request reached the sandbox (its own stamp);
t_last: when the last event's outcome was recorded (the run's counters in Redis
reached N, polled every 10 ms; for the ceiling, when its last answer arrived).
Worker CPU is that of every process of the worker (main process and pool
children) between the release of the backlog and t_last, divided by the events
delivered.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from benchmarks import backlog, peers
from benchmarks.context import Bench, Sandbox, progress, wait_for_line
from benchmarks.measure import descendants, tree_cpu_seconds
from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.local import Proc

DEFINITION = (
    "events/s = backlog N / (first upstream request seen by the sandbox -> last outcome "
    "recorded in Redis); backlog staged before the workers start; fresh sandbox at 50 ms"
)


@dataclass
class Drain:
    contender: str
    backlog: int
    events_per_s: float
    seconds: float
    finished: int
    failed: int
    cpu_s: float
    cpu_us_per_event: float
    processes: int
    t_first: float = 0.0


def _drain(
    name: str,
    sandbox: Sandbox,
    roots: list[int],
    *,
    release: Callable[[], None],
    finished: Callable[[], tuple[int, int]],
    n: int,
    timeout: float,
) -> Drain:
    cpu0 = tree_cpu_seconds(roots)
    processes = sum(len(descendants(root)) for root in roots)
    release()
    t_first = sandbox.wait_first_request(timeout=30)
    deadline = time.monotonic() + timeout
    done, failed = finished()
    while done < n and time.monotonic() < deadline:
        time.sleep(0.01)
        done, failed = finished()
    t_last = time.time()
    cpu = tree_cpu_seconds(roots) - cpu0
    if done < n:
        progress(f"{name}: only {done}/{n} finished within {timeout:.0f}s; rate is over those")
    seconds = max(t_last - t_first, 1e-9)
    delivered = max(done - failed, 1)
    return Drain(
        name, n, done / seconds, seconds, done, failed, cpu, cpu / delivered * 1e6, processes, t_first
    )


def run_project(bench: Bench, n: int, label: str = "project") -> Drain:
    sandbox = bench.sandbox()
    settings = bench.settings(
        sandbox, f"{label}-{time.monotonic_ns() % 10**6}", broker_url=bench.delivery_broker_url
    )
    try:
        progress(f"{label}: staging {n} events")
        if bench.amqp_url:
            bench.amqp_queue(settings.queue)
            worker = bench.worker(settings, settings.queue)
            release = _stage_project_amqp(bench, worker, settings, n)
        else:
            release = backlog.stage_project(settings, bench.broker, n)
            worker = bench.worker(settings, settings.queue)
        stats_key = keys.stats(settings.tenant)

        def finished() -> tuple[int, int]:
            stats = bench.cache.hmget(stats_key, "cached", "stale", "dead")
            cached, stale, dead = (int(v or 0) for v in stats)  # dead includes invalid
            return cached + stale + dead, dead

        progress(f"{label}: worker -c 2 ready; draining")
        result = _drain(
            label, sandbox, [worker.pid], release=release, finished=finished, n=n, timeout=n / 100 + 60
        )
        bench.stop(worker)
        return result
    finally:
        sandbox.close()


def _stage_project_amqp(bench: Bench, worker: Proc, settings: Settings, n: int) -> Callable[[], None]:
    """RabbitMQ cannot move a staged queue in one step: the ready worker is paused
    (SIGSTOP) while the backlog is published onto its queue, and resumed by release."""
    bench.pause(worker)
    fast = settings.model_copy(update={"amqp_confirm_publish": False})  # staging, not measured
    with Publisher(fast) as publisher:
        for start in range(0, n, 1000):
            publisher.publish_many(
                backlog.event_body(settings.tenant, i) for i in range(start, min(n, start + 1000))
            )
    return lambda: bench.resume(worker)


def run_peer(bench: Bench, pool: str, concurrency: int, n: int) -> Drain:
    label = f"celery-{pool}-{concurrency}"
    sandbox = bench.sandbox()
    queue = bench.name(f"{label}-{time.monotonic_ns() % 10**6}")
    peers.configure(
        broker_url=bench.delivery_broker_url,
        redis_url=bench.cache_url,
        api_url=sandbox.url,
        token=bench.token,
        queue=queue,
        tenant=queue,
        connections=concurrency,
    )
    try:
        progress(f"{label}: staging {n} tasks with deliver.apply_async()")
        if not bench.amqp_url:
            release = backlog.stage_peer(queue, queue, bench.broker, n)
        worker = bench.spawn(
            label,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "benchmarks.peers",
                "worker",
                "--pool",
                pool,
                "-c",
                str(concurrency),
                "-Q",
                queue,
                "-n",
                f"{queue}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "WARNING",
            ],
            env=peers.env(),
        )
        wait_for_line(worker, "peer ready")
        time.sleep(0.5 if pool == "threads" else 1.0)  # prefork children finish forking
        if bench.amqp_url:
            bench.amqp_queue(queue)
            bench.pause(worker)  # as for the project: hold still while the backlog is built
            for i in range(n):
                peers.deliver.apply_async((backlog.event_body(queue, i),), queue=queue)
            release = partial(bench.resume, worker)

        def finished() -> tuple[int, int]:
            cached, dead = (int(v or 0) for v in bench.cache.hmget(keys.stats(queue), "cached", "dead"))
            return cached + dead, dead

        progress(f"{label}: worker ready; draining")
        result = _drain(
            label, sandbox, [worker.pid], release=release, finished=finished, n=n, timeout=n / 10 + 60
        )
        bench.stop(worker)
        return result
    finally:
        sandbox.close()


def run_ceiling(bench: Bench, n: int, concurrency: int = 200) -> Drain:
    label = f"ceiling-aiohttp-{concurrency}"
    sandbox = bench.sandbox()
    try:
        argv = [
            sys.executable,
            "-m",
            "benchmarks.ceiling",
            "--url",
            sandbox.url,
            "--token",
            bench.token,
            "--n",
            str(n),
            "--concurrency",
            str(concurrency),
            "--tag",
            bench.name("ceiling"),
        ]
        client = bench.spawn(label, argv, stdin=True)
        wait_for_line(client, "ceiling ready")
        stdin = client.popen.stdin
        assert stdin is not None

        def go() -> None:
            stdin.write(b"go\n")
            stdin.flush()

        def finished() -> tuple[int, int]:
            out = _result_line(client)
            return (int(out["ok"] + out["failed"]), int(out["failed"])) if out else (0, 0)

        progress(f"{label}: client ready; running")
        result = _drain(
            label, sandbox, [client.pid], release=go, finished=finished, n=n, timeout=n / 100 + 60
        )
        out = _result_line(client)
        if out:  # the client's own stamp of its last answer is finer than the 10 ms poll
            result.seconds = max(out["t_last"] - result.t_first, 1e-9)
            result.events_per_s = result.finished / result.seconds
            result.cpu_s = out["cpu_s"]
            result.cpu_us_per_event = out["cpu_s"] / max(out["ok"], 1) * 1e6
        client.popen.wait(10)
        return result
    finally:
        sandbox.close()


def _result_line(proc: Proc) -> dict[str, float] | None:
    for line in reversed(proc.output().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    return None

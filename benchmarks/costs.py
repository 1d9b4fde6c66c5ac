"""Costs on the storefront's request path: publishing an event, reading a ranking.

Both are timed call by call with perf_counter_ns in this process, after a
warm-up, against the same Redis as everything else.

- publish: `Publisher.product_view(...)` (validation, envelope, kombu publish,
  Redis LPUSH answered) vs the peer's `deliver.apply_async((body,))` on the
  same broker, taking turns in blocks of 500 calls. Nobody consumes those queues; they
  are deleted afterwards. On Redis a third Publisher with reply polling on
  (`reply_poll_us=100`; off by default) takes its turns too: what polling is worth idle.
- floor: one PING round trip on a redis-py Connection (what publish and read
  use, producers.direct), and through a redis.Redis client for comparison;
  publish and read each need one round trip.
- read: `RankingReader.order(event_type, id, session, native)` with a
  200-product native ordering, against pre-filled rankings of 12-50 ids in the
  reader's format, so every call does the GET, the JSON decode and the merge;
  a reader with `reply_poll_us=100` takes turns with the default one.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from benchmarks import backlog, peers
from benchmarks.context import Bench, progress
from benchmarks.measure import percentile, take_turns
from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.direct import DirectRedis
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.producers.reader import RankingReader
from fashionai_pipeline.producers.settings import Settings

NATIVE_SIZE = 200


@dataclass
class Timing:
    what: str
    calls: int
    p50_us: float
    p99_us: float
    mean_us: float
    cpu_us_per_call: float | None = None  # this thread's CPU time / calls, where measured


def _timing(what: str, samples_ns: list[int], cpu_ns: int | None = None) -> Timing:
    us = [s / 1000 for s in samples_ns]
    cpu = None if cpu_ns is None else cpu_ns / 1000 / len(us)
    return Timing(what, len(us), percentile(us, 50), percentile(us, 99), sum(us) / len(us), cpu)


def publish_costs(bench: Bench, calls: int, warmup: int = 300, block: int = 500) -> dict[str, Timing]:
    """Per-call cost of publishing on the same broker: "project" (Publisher),
    "celery" (apply_async) and, on RabbitMQ, "project_unconfirmed" (Publisher
    with publisher confirms off, as apply_async publishes).

    They take turns in blocks of `block` calls, so a slow spell of the machine
    (other processes, CPU frequency) lands on all alike, while each runs warm
    as it would in a loop of its own.
    """
    settings = Settings(
        broker_url=bench.delivery_broker_url,
        redis_url=bench.cache_url,
        queue=bench.name("publish"),
        tenant=bench.name("publish"),
    )
    publishers = {"project": Publisher(settings)}
    if bench.amqp_url:
        unconfirmed = settings.model_copy(update={"amqp_confirm_publish": False})
        publishers["project_unconfirmed"] = Publisher(unconfirmed)
    else:
        publishers["project_polled"] = Publisher(settings.model_copy(update={"reply_poll_us": 100}))
    queue = bench.name("publish-celery")
    peers.configure(broker_url=bench.delivery_broker_url, redis_url=bench.cache_url)
    if bench.amqp_url:
        bench.amqp_queue(settings.queue)
        bench.amqp_queue(queue)
    bodies = [backlog.event_body("pub", i) for i in range(block)]
    calls_of: dict[str, Callable[[int], object]] = {
        name: partial(_publish_one, pub) for name, pub in publishers.items()
    }
    calls_of["celery"] = lambda i: peers.deliver.apply_async((bodies[i % block],), queue=queue)
    try:
        samples, cpu = take_turns(
            calls_of, block=block, rounds=max(1, calls // block), warm_rounds=max(1, -(-warmup // block))
        )
    finally:
        for pub in publishers.values():
            pub.close()
    labels = {
        "project": "Publisher.product_view",
        "celery": "celery apply_async",
        "project_unconfirmed": "Publisher.product_view, confirms off",
        "project_polled": "Publisher.product_view, reply polling on (100 us)",
    }
    timings = {name: _timing(labels[name], samples[name], cpu[name] or None) for name in calls_of}
    project, celery = timings["project"], timings["celery"]
    progress(
        f"publish: project p50 {project.p50_us:.0f} us, p99 {project.p99_us:.0f} us; "
        f"apply_async p50 {celery.p50_us:.0f} us, p99 {celery.p99_us:.0f} us"
    )
    bench.clean()
    return timings


def _publish_one(publisher: Publisher, i: int) -> object:
    return publisher.product_view(f"pub-s{i}", f"p{i % 5000}")


def redis_round_trip(
    bench: Bench, calls: int, warmup: int = 300, block: int = 500
) -> tuple[Timing, Timing, Timing]:
    """One PING on the broker's Redis, the floor under publish and read: on a
    redis-py Connection directly, blocking for the reply and polling for it (as
    publish and read do by default, producers.direct), and through a
    redis.Redis client (its pool checkout per call), taking turns in blocks as
    publish does (call-by-call alternation slowed both by ~25 us here)."""
    direct = DirectRedis(bench.broker_url, timeout=1.0, name="fashionai-bench")
    polled = DirectRedis(bench.broker_url, timeout=1.0, name="fashionai-bench", reply_poll_us=100)
    try:
        samples, _ = take_turns(
            {
                "direct": lambda _: direct.execute("PING"),
                "polled": lambda _: polled.execute("PING"),
                "client": lambda _: bench.broker.ping(),
            },
            block=block,
            rounds=max(1, calls // block),
            warm_rounds=max(1, -(-warmup // block)),
        )
    finally:
        direct.close()
        polled.close()
    timings = (
        _timing("PING, redis-py Connection", samples["direct"]),
        _timing("PING, redis.Redis client", samples["client"]),
        _timing("PING, redis-py Connection, reply polled", samples["polled"]),
    )
    progress(
        f"redis round trip: p50 {timings[0].p50_us:.0f} us direct, {timings[2].p50_us:.0f} us polled, "
        f"{timings[1].p50_us:.0f} us through the client"
    )
    return timings


def read_costs(
    bench: Bench, calls: int, rankings: int = 2000, warmup: int = 500, block: int = 500
) -> dict[str, Timing]:
    """`RankingReader.order()` with a 200-id native ordering, every call a cache hit:
    "project" (the default reader) and "polled" (`reply_poll_us=100`), taking turns."""
    tenant = bench.name("read")
    rng = random.Random(11)
    native = [f"p{i:04d}" for i in range(NATIVE_SIZE)]
    rng.shuffle(native)
    pipe = bench.cache.pipeline(transaction=False)
    now_ms = int(time.time() * 1000)
    for i in range(rankings):
        ids = rng.sample([f"p{j:04d}" for j in range(2 * NATIVE_SIZE)], rng.randint(12, 50))
        key = keys.ranking(tenant, "productView", f"p{i:04d}", f"read-s{i}", None)
        pipe.set(key, json.dumps([now_ms, *ids], separators=(",", ":")), px=600_000)
    pipe.execute()
    settings = Settings(redis_url=bench.cache_url, tenant=tenant)
    readers = {
        "project": RankingReader(settings),
        "polled": RankingReader(settings.model_copy(update={"reply_poll_us": 100})),
    }
    picks = [rng.randrange(rankings) for _ in range(block)]

    def read(reader: RankingReader, n: int) -> None:
        i = picks[n % block]
        page = reader.order("productView", f"p{i:04d}", f"read-s{i}", native)
        if len(page) != NATIVE_SIZE:
            raise RuntimeError(f"order() returned {len(page)} ids, expected {NATIVE_SIZE}")

    try:
        samples, cpu = take_turns(
            {name: partial(read, reader) for name, reader in readers.items()},
            block=block,
            rounds=max(1, calls // block),
            warm_rounds=max(1, -(-warmup // block)),
        )
    finally:
        for reader in readers.values():
            reader.close()
    labels = {"project": "RankingReader.order", "polled": "RankingReader.order, reply polling on (100 us)"}
    timings = {name: _timing(labels[name], samples[name], cpu[name]) for name in readers}
    progress(
        f"read: p50 {timings['project'].p50_us:.0f} us, p99 {timings['project'].p99_us:.0f} us; "
        f"polling on p50 {timings['polled'].p50_us:.0f} us"
    )
    bench.clean()
    return timings

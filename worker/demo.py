"""`fashionai-pipeline demo`: the whole pipeline on this machine, end to end.

It starts the sandbox (the embedded default upstream) and a worker, uses the
local Redis (or a private redis-server when none answers), publishes a realistic
mix of storefront sessions with all four event types, waits until every event
is cached or dead-lettered, prints what happened, and stops what it started.
"""

from __future__ import annotations

import random
import secrets
import sys
import time
import uuid
from dataclasses import dataclass

import redis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.producers.reader import RankingReader
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.local import (
    Proc,
    redis_answers,
    scratch_dir,
    start_redis,
    start_sandbox,
    start_worker,
)


@dataclass(frozen=True)
class Visit:
    event_type: str
    item_id: str
    session_id: str
    user_id: str | None


def storefront_traffic(sessions: int, rng: random.Random) -> list[Visit]:
    """Shopper sessions: browse categories, open products, shop a look, see a shelf.

    Sessions are interleaved, as concurrent shoppers are: each session's visits
    keep their order, and the sessions take turns.
    """
    run = uuid.uuid4().hex[:6]
    per_session = [_session_visits(n, rng, run) for n in range(sessions)]
    visits: list[Visit] = []
    while any(per_session):
        for queue in per_session:
            if queue:
                visits.append(queue.pop(0))
    return visits


def _session_visits(n: int, rng: random.Random, run: str) -> list[Visit]:
    session = f"demo-{run}-s{n:03d}"
    user = f"u{rng.randint(1, 40)}" if rng.random() < 0.35 else None
    visits = [Visit("customShelf", "", session, user)]  # the home page, before any history
    for _ in range(rng.randint(1, 2)):
        visits.append(Visit("categoryView", f"c{rng.randint(1, 12):02d}", session, user))
        for _ in range(rng.randint(1, 4)):
            product = f"p{rng.randint(1, 500):04d}"
            visits.append(Visit("productView", product, session, user))
            if rng.random() < 0.3:
                visits.append(Visit("shopTheLook", product, session, user))
    visits.append(Visit("customShelf", "", session, user))
    return visits


def run_demo(base: Settings, *, sessions: int = 60, timeout: float = 120.0) -> int:
    started: list[Proc] = []
    log_dir = scratch_dir("fashionai-demo-")
    rng = random.Random(7)
    try:
        redis_url = base.redis_url
        broker_url = base.broker_url
        if not redis_answers(redis_url):
            try:
                proc, private = start_redis(log_dir=log_dir)
            except FileNotFoundError:
                print(
                    f"No Redis answers at {redis_url} and no redis-server is on the PATH.\n"
                    "Fix: start Redis (e.g. `apt-get install redis-server && redis-server --daemonize yes`)"
                    " or set FASHIONAI_REDIS_URL and FASHIONAI_BROKER_URL.",
                    file=sys.stderr,
                )
                return 2
            started.append(proc)
            redis_url = private.replace("/0", "/1")
            broker_url = private
            print(f"started a private redis-server at {private}")
        token = "demo-" + secrets.token_hex(12)
        sandbox = start_sandbox(
            token, log_dir=log_dir, knobs=["--latency-ms", "40", "--rate-5xx", "0.03", "--seed", "7"]
        )
        started.append(sandbox)
        settings = base.model_copy(
            update={
                "api_url": sandbox.extra["url"],
                "app_token": base.app_token.__class__(token),
                "redis_url": redis_url,
                "broker_url": broker_url,
                # A private Redis replaces the configured one: the state store with it.
                "state_url": base.state_url if broker_url == base.broker_url else None,
                "queue": f"fashionai.demo.{uuid.uuid4().hex[:8]}",
                "tenant": "demo",
                "retry_base": 0.2,
                "log_level": "WARNING",
            }
        )
        # Counters and latency samples live in the state store (docs/ARCHITECTURE.md).
        cache = redis.Redis.from_url(settings.state_store_url(), decode_responses=True)
        cache.delete(keys.stats("demo"), keys.latency("demo"))
        print(f"sandbox at {sandbox.extra['base_url']} (40 ms latency, 3% 5xx); starting a worker...")
        worker = start_worker(settings, log_dir=log_dir, args=["-c", "2"])
        started.append(worker)

        visits = storefront_traffic(sessions, rng)
        publisher = Publisher(settings)
        t0 = time.perf_counter()
        for i, v in enumerate(visits):
            user = {"userId": v.user_id} if v.user_id else {}
            publisher.publish(
                {**user, "sessionId": v.session_id, "eventType": v.event_type, "data": {"id": v.item_id}}
            )
            # About 200 page views a second across the store, as live traffic arrives.
            time.sleep(max(0.0, t0 + (i + 1) / 200 - time.perf_counter()))
        publish_s = time.perf_counter() - t0
        print(f"published {len(visits)} events from {sessions} concurrent sessions over {publish_s:.1f} s")

        stats = _wait(cache, len(visits), timeout)
        _report(stats, len(visits), cache, settings, visits)
        if stats.get("cached", 0) + stats.get("dead", 0) < len(visits):
            print(
                f"NOT everything was delivered within {timeout:.0f}s; see logs in {log_dir}", file=sys.stderr
            )
            return 1
        return 0
    finally:
        for proc in reversed(started):
            proc.stop()
        print("stopped everything the demo started")


def _wait(cache: redis.Redis, expected: int, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    stats: dict[str, int] = {}
    while time.monotonic() < deadline:
        stats = {str(k): int(v) for k, v in cache.hgetall(keys.stats("demo")).items()}
        if stats.get("cached", 0) + stats.get("dead", 0) >= expected:
            break
        time.sleep(0.2)
    return stats


def _report(
    stats: dict[str, int], published: int, cache: redis.Redis, settings: Settings, visits: list[Visit]
) -> None:
    lat = sorted(float(x) for x in cache.lrange(keys.latency("demo"), 0, -1))

    def pct(p: float) -> str:
        return f"{lat[min(len(lat) - 1, int(p * len(lat)))]:.0f} ms" if lat else "n/a"

    rows = [
        ("published", published),
        ("delivered (upstream calls answered 2xx)", stats.get("delivered", 0)),
        ("cached rankings written", stats.get("cached", 0)),
        ("  of which empty (not enough data yet)", stats.get("empty", 0)),
        ("coalesced duplicates", stats.get("coalesced", 0)),
        ("retried", stats.get("retried", 0)),
        ("failed (dead-lettered)", stats.get("dead", 0) + stats.get("invalid", 0)),
    ]
    print("\nwhat happened")
    for label, value in rows:
        print(f"  {label:<42} {value:>6}")
    print(f"  {'enqueue -> cache latency p50 / p99':<42} {pct(0.5):>6} / {pct(0.99)}")
    reader = RankingReader(settings)
    print("\na few cached rankings (reader.order() with a 6-product native ordering)")
    native = [f"p{n:04d}" for n in range(1, 7)]
    examples: list[Visit] = []
    seen_types: set[str] = set()
    for v in visits[::-1]:  # the latest visit of each type, then one shopper the AI knows nothing of
        if v.event_type not in seen_types:
            seen_types.add(v.event_type)
            examples.append(v)
    for v in examples:
        ranking = reader.get(v.event_type, v.item_id, v.session_id, v.user_id)
        if ranking is None:
            continue
        who = f"user {v.user_id}" if v.user_id else f"session {v.session_id}"
        top = ", ".join(ranking.products[:5]) or "(empty: not enough data yet)"
        print(f"  {v.event_type:<12} {v.item_id or '-':<6} {who:<24} -> {top}")
    # Each session's first shelf was empty (the AI knew nothing yet) and was then
    # replaced by a newer one; a shopper who just arrived shows the fallback.
    fresh = reader.order("customShelf", "", f"just-arrived-{uuid.uuid4().hex[:6]}", native)
    print(
        f"  {'customShelf':<12} {'-':<6} {'a shopper just arrived':<24} -> no ranking yet;"
        f" order() = native ordering {fresh}"
    )
    reader.close()

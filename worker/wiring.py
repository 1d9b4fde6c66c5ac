"""Building a pump's real parts: its event loop, and its processors on Redis and httpx.

`Pump` takes a processor factory (a test passes its own); `redis_processors` is
the real one: two redis.asyncio clients (cache and state store; one when they
are the same URL), the `RedisStore` and `RedisGates` on them, and per lane a
`Deliverer`, a `Limiter` and a `BatchProcessor` sharing the pump's
`StoreHealth`. Everything that needs closing is appended to `resources`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.batch import BatchProcessor
from fashionai_pipeline.worker.clock import Clock
from fashionai_pipeline.worker.delivery import Deliverer, TransportName
from fashionai_pipeline.worker.health import StoreHealth
from fashionai_pipeline.worker.limiter import Limiter, RedisGates
from fashionai_pipeline.worker.store import RedisStore


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """uvloop when installed and not turned off (the `worker` extra brings it):
    it cut the delivery thread's CPU per event (docs/PERFORMANCE.md)."""
    if kind == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def redis_processors(
    settings: Settings, *, transport: TransportName, clock: Clock, health: StoreHealth, resources: list[Any]
) -> Callable[[Settings], BatchProcessor]:
    """The factory of each lane's BatchProcessor. Call it on the pump's event loop."""

    def client(url: str) -> aioredis.Redis:
        # health_check_interval: a pooled connection idle for a second is PINGed
        # (and replaced if dead) before use, so after a Redis restart the pool's
        # stale connections do not fail the first calls one by one.
        c = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=1)
        resources.append(c)
        return c

    cache = client(settings.redis_url)
    state_url = settings.state_store_url()
    state = cache if state_url == settings.redis_url else client(state_url)
    store = RedisStore(cache, state)
    gates = RedisGates(state)
    secrets = settings.secrets()

    def build(lane: Settings) -> BatchProcessor:
        deliverer = Deliverer(lane, transport=transport)
        resources.append(deliverer)
        limiter = Limiter(gates, lane, clock=clock)
        return BatchProcessor(
            lane, deliverer, store, limiter=limiter, clock=clock, health=health, secrets=secrets
        )

    return build


def describe_tasks(loop: asyncio.AbstractEventLoop) -> str:
    """Where each task of the delivery loop waits, innermost await first (for the log)."""
    try:
        tasks = asyncio.all_tasks(loop)
    except RuntimeError:
        return "?"
    described = []
    for task in list(tasks)[:10]:
        where: list[str] = []
        coro: Any = task.get_coro()
        while coro is not None and len(where) < 8:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                where.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        described.append(f"{task.get_name()} at {' -> '.join(where) or '-'}")
    return "; ".join(described) or "none"

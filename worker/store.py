"""Where a batch's outcomes are written: the ranking cache and the state store.

`Store` is the seam `BatchProcessor` records through; `RedisStore` is the real
one. Two Redis roles (docs/ARCHITECTURE.md, "Two Redis roles"):

- the *cache* (`FASHIONAI_REDIS_URL`) holds rankings only, and may be a pure
  cache (no persistence, any eviction policy);
- the *state store* (`FASHIONAI_STATE_URL`) holds what must not be lost: the
  retry schedule and its leases, dead letters, the duplicate-id marks, the
  coalescing window, the counters and latency samples, and (through the
  limiter) the rate limit and the cooldown.

Every method may raise `redis.RedisError` or `OSError` when its Redis does not
answer; the caller decides what an outage means (`worker.health`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.message import Envelope
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker import crowd, notify, scripts
from fashionai_pipeline.worker.deadletter import encode_entry
from fashionai_pipeline.worker.delivery import Outcome

LATENCY_SAMPLES = 10_000


@dataclass(frozen=True, slots=True)
class RankingWrite:
    key: str
    ts_ms: int
    value: str


@dataclass(slots=True)
class StateRecord:
    """Everything a batch writes to the state store, in one MULTI/EXEC."""

    tenant: str
    retries: list[tuple[float, bytes]] = field(default_factory=list)  # (delay s, member)
    dead: list[dict[str, Any]] = field(default_factory=list)
    release: Sequence[bytes | str] = ()  # retry-lease members this batch claimed
    marks: list[str] = field(default_factory=list)  # message ids now recorded
    counts: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)


class Store(Protocol):
    async def write_rankings(self, rankings: Sequence[RankingWrite], ttl_ms: int) -> list[bool]:
        """Newer-wins write to the cache. Per ranking: True written, False stale. Idempotent."""
        ...

    async def commit(self, record: StateRecord, mark_ttl: int) -> None:
        """Write `record` to the state store atomically (all of it or none)."""
        ...

    async def announce(self, notices: Sequence[notify.Notice]) -> None:
        """Tell waiting page renderers that rankings landed (worker.notify). Never raises."""
        ...

    async def add_to_crowd(
        self,
        settings: Settings,
        leaders: Sequence[Envelope],
        outcomes: Sequence[Outcome],
        now: Callable[[], float],
    ) -> None:
        """Add the batch's delivered rankings to their crowds (worker.crowd; a no-op unless
        `settings.crowd`). After the cache write. Never raises."""
        ...

    async def recorded(self, tenant: str, ids: Sequence[str]) -> set[str]:
        """Which of `ids` carry a duplicate-id mark (their outcome was recorded)."""
        ...

    async def first_sent(self, tenant: str, digests: Sequence[str], window_ms: int) -> list[bool]:
        """Per digest: True if no identical event was sent within the window (and mark it)."""
        ...

    async def claim_retries(self, tenant: str, limit: int, lease: float) -> list[bytes]:
        """Due retries of `tenant`, moved under a lease of `lease` seconds."""
        ...

    async def extend_lease(self, tenant: str, members: Sequence[bytes | str], lease: float) -> None:
        """Push the lease of claimed members still leased to `lease` seconds from now."""
        ...


class RedisStore:
    """`Store` on two redis.asyncio clients (which may be one and the same)."""

    def __init__(self, cache: aioredis.Redis, state: aioredis.Redis) -> None:
        self.cache = cache
        self.state = state
        self._write = cache.register_script(scripts.WRITE_RANKINGS)
        self._schedule = state.register_script(scripts.SCHEDULE_RETRIES)
        self._claim = state.register_script(scripts.CLAIM_RETRIES)
        self._extend = state.register_script(scripts.EXTEND_LEASE)

    async def write_rankings(self, rankings: Sequence[RankingWrite], ttl_ms: int) -> list[bool]:
        if not rankings:
            return []
        argv: list[Any] = [ttl_ms]
        for r in rankings:
            argv += [r.ts_ms, r.value]
        flags = await self._write(keys=[r.key for r in rankings], args=argv)
        return [int(f) == 1 for f in flags]

    async def announce(self, notices: Sequence[notify.Notice]) -> None:
        await notify.announce(self.cache, list(notices))

    async def add_to_crowd(
        self,
        settings: Settings,
        leaders: Sequence[Envelope],
        outcomes: Sequence[Outcome],
        now: Callable[[], float],
    ) -> None:
        await crowd.record(self.cache, settings, leaders, outcomes, clock=now)

    async def commit(self, record: StateRecord, mark_ttl: int) -> None:
        t = record.tenant
        async with self.state.pipeline(transaction=True) as pipe:
            if record.retries:
                flat: list[Any] = []
                for delay, member in record.retries:
                    flat += [delay, member]
                await self._schedule(keys=[keys.retry(t)], args=flat, client=pipe)
            for entry in record.dead:
                pipe.xadd(keys.dead_letters(), encode_entry(entry))
            if record.release:
                pipe.zrem(keys.retry_lease(t), *record.release)
            for msg_id in record.marks:
                pipe.set(keys.recorded(t, msg_id), 1, ex=mark_ttl)
            for name, n in record.counts.items():
                if n:
                    pipe.hincrby(keys.stats(t), name, n)
            if record.latencies_ms:
                pipe.lpush(keys.latency(t), *(round(x, 2) for x in record.latencies_ms))
                pipe.ltrim(keys.latency(t), 0, LATENCY_SAMPLES - 1)
            await pipe.execute()

    async def recorded(self, tenant: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        values = await self.state.mget([keys.recorded(tenant, i) for i in ids])
        return {i for i, v in zip(ids, values, strict=True) if v is not None}

    async def first_sent(self, tenant: str, digests: Sequence[str], window_ms: int) -> list[bool]:
        async with self.state.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.set(keys.seen(tenant, digest), 1, nx=True, px=window_ms)
            return [bool(x) for x in await pipe.execute()]

    async def claim_retries(self, tenant: str, limit: int, lease: float) -> list[bytes]:
        members = await self._claim(keys=[keys.retry(tenant), keys.retry_lease(tenant)], args=[limit, lease])
        return list(members)

    async def extend_lease(self, tenant: str, members: Sequence[bytes | str], lease: float) -> None:
        if members:
            await self._extend(keys=[keys.retry_lease(tenant)], args=[lease, *members])

"""A global rate limit shared by every worker process on every machine.

State lives in the state store and is changed by one atomic script
(`scripts.GCRA_ACQUIRE`) that reads the Redis server's clock, so no worker's
clock matters. `Limiter` is the policy around it (who asks when, how long to
sleep, how often to look at the cooldown); `RedisGates` runs the scripts. The
policy takes a `Clock`, so unit tests drive it without sleeping.

A slot is granted only when it is due now, never reserved ahead: a request
granted a future slot may be sent late (a busy loop, a new connection) and then
land together with the next one, and the upstream counts arrivals, not grants
(docs/ARCHITECTURE.md, "GCRA in one Lua script"). Within a process one
coroutine at a time asks (a lock), sleeping until the next slot is due, so
waiting callers do not stampede Redis: each process makes about one call per
slot.

A cooldown key pauses every worker at once: a 429's Retry-After or a 401 sets it
(only ever lengthened), and every acquisition checks it first.

`acquire` and `pause` raise `redis.RedisError`/`OSError` when the state store
does not answer; the batch processor treats that as a store outage.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Protocol

import redis.asyncio as aioredis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker import scripts
from fashionai_pipeline.worker.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("fashionai.limiter")

COOLDOWN_CHECK = 0.1  # seconds between cooldown look-ups when no rate limit is set
LATE_SEND_GUARD = 0.025  # seconds of send lateness the burst allowance absorbs
MIN_RETRY_WAIT = 0.0002  # seconds: never ask the script again sooner than this


def tolerance_slots(rate: float, burst: int) -> int:
    """GCRA tolerance, in slots: how many grants may come early.

    Grants in any 1-second span are at most `rate + tolerance`. Of the `burst`
    the upstream allows on top of `rate`, this keeps `burst - tolerance` slots
    (at least 1, and enough to cover LATE_SEND_GUARD of sends) for requests
    that leave later than their grant (a busy loop, a new connection) and land
    beside the next one, so the upstream counts at most `rate + burst` in any
    second.
    """
    if rate <= 0:
        return 0
    guard = max(1, math.ceil(rate * LATE_SEND_GUARD))
    return max(0, burst - 1 - guard)


class Gates(Protocol):
    """The atomic operations the limiter needs from the state store."""

    async def acquire(self, rate_key: str, cooldown_key: str, interval_us: float, tau_us: float) -> list[int]:
        """[granted, wait_us]: 1 send now, 0 ask again after wait_us, -1 paused for wait_us."""
        ...

    async def cooldown_ms(self, cooldown_key: str) -> int:
        """Milliseconds the cooldown still runs (<= 0: none)."""
        ...

    async def pause(self, cooldown_key: str, ms: int, reason: str) -> bool:
        """Lengthen the cooldown to `ms` (never shorten). True if it was lengthened."""
        ...


class RedisGates:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._acquire = client.register_script(scripts.GCRA_ACQUIRE)
        self._pause = client.register_script(scripts.PAUSE)

    async def acquire(self, rate_key: str, cooldown_key: str, interval_us: float, tau_us: float) -> list[int]:
        granted, wait_us = await self._acquire(keys=[rate_key, cooldown_key], args=[interval_us, tau_us])
        return [int(granted), int(wait_us)]

    async def cooldown_ms(self, cooldown_key: str) -> int:
        return int(await self._redis.pttl(cooldown_key))

    async def pause(self, cooldown_key: str, ms: int, reason: str) -> bool:
        return bool(await self._pause(keys=[cooldown_key], args=[ms, reason]))


class Limiter:
    """One tenant's limit and cooldown, as seen by one process."""

    def __init__(self, gates: Gates, settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._gates = gates
        self._clock = clock
        self.tenant = settings.tenant
        self.rate = settings.rate_limit
        self.burst = settings.rate_burst
        self._interval_us = 1_000_000 / self.rate if self.rate > 0 else 0.0
        self._tau_us = tolerance_slots(self.rate, self.burst) * self._interval_us
        self._rate_key, self._cooldown_key = keys.rate_limit(self.tenant), keys.cooldown(self.tenant)
        self._checked_at = float("-inf")
        self._paused_until = 0.0
        self._turn = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until this caller may send one request. Cancellation-safe."""
        if self.rate <= 0:
            while (wait := await self._cooldown_wait()) > 0:
                await self._clock.sleep(wait)
            return
        async with self._turn:
            while True:
                granted, wait_us = await self._gates.acquire(
                    self._rate_key, self._cooldown_key, self._interval_us, self._tau_us
                )
                if granted == 1:
                    return
                await self._clock.sleep(max(wait_us / 1_000_000, MIN_RETRY_WAIT))

    async def _cooldown_wait(self) -> float:
        # Without a rate limit only the shared cooldown matters; look it up at most
        # every COOLDOWN_CHECK seconds instead of once per request.
        now = self._clock.monotonic()
        if now - self._checked_at >= COOLDOWN_CHECK:
            ttl = await self._gates.cooldown_ms(self._cooldown_key)
            self._checked_at = now
            self._paused_until = now + ttl / 1000 if ttl > 0 else 0.0
        return max(0.0, self._paused_until - now)

    async def pause(self, seconds: float, reason: str) -> None:
        """Pause sending for every worker of the tenant for at least `seconds`. Idempotent."""
        ms = max(1, int(seconds * 1000))
        self._checked_at = float("-inf")
        if await self._gates.pause(self._cooldown_key, ms, reason):
            log.warning("tenant %s: sending paused for %.1fs (%s)", self.tenant, seconds, reason)

"""A global rate limit shared by every worker process on every machine.

State lives in Redis and is changed by one atomic script (scripts.GCRA_RESERVE)
that reads the Redis server's clock, so no worker's clock matters. Each call
reserves the next send slot (at most `_MAX_RESERVE` ahead) and the caller sleeps
until it; nothing polls in a tight loop.

A cooldown key pauses every worker at once: a 429's Retry-After or a 401 sets it
(only ever lengthened), and every reservation checks it first.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from producers import keys
from producers.settings import Settings
from worker import scripts

log = logging.getLogger("fashionai.limiter")

_MAX_RESERVE_US = 2_000_000
_COOLDOWN_CHECK = 0.1


class RedisLimiter:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._redis = client
        self.rate = settings.rate_limit
        self.burst = settings.rate_burst
        interval_us = 1_000_000 / self.rate if self.rate > 0 else 0.0
        self._args = [interval_us, (self.burst - 1) * interval_us, _MAX_RESERVE_US]
        self._reserve = client.register_script(scripts.GCRA_RESERVE)
        self._pause = client.register_script(scripts.PAUSE)
        self._checked_at = float("-inf")
        self._paused_until = 0.0

    async def acquire(self, tenant: str) -> None:
        """Wait until this caller may send one request. Cancellation-safe."""
        rate_key, cooldown_key = keys.rate_limit(tenant), keys.cooldown(tenant)
        while True:
            if self.rate > 0:
                granted, wait_us = await self._reserve(keys=[rate_key, cooldown_key], args=self._args)
            else:
                granted, wait_us = await self._cooldown_only(cooldown_key)
            if wait_us > 0:
                await asyncio.sleep(wait_us / 1_000_000)
            if granted == 1:
                return

    async def _cooldown_only(self, cooldown_key: str) -> tuple[int, int]:
        # Without a rate limit only the shared cooldown matters; look it up at most
        # every _COOLDOWN_CHECK seconds instead of once per request.
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._checked_at >= _COOLDOWN_CHECK:
            self._checked_at = now
            ttl = await self._redis.pttl(cooldown_key)
            self._paused_until = now + ttl / 1000 if ttl > 0 else 0.0
        if self._paused_until > now:
            return -1, int((self._paused_until - now) * 1_000_000)
        return 1, 0

    async def pause(self, tenant: str, seconds: float, reason: str) -> None:
        """Pause sending for every worker of `tenant` for at least `seconds`."""
        ms = max(1, int(seconds * 1000))
        self._checked_at = float("-inf")
        if await self._pause(keys=[keys.cooldown(tenant)], args=[ms, reason]):
            log.warning("tenant %s: sending paused for %.1fs (%s)", tenant, seconds, reason)

"""Whether the pump's stores answer, and what the pump does while they do not.

One `StoreHealth` per pump, shared by every lane. Every call to the cache or the
state store goes through `call()`, which retries it until it succeeds: once at
once (a stale pooled connection after a restart), then with a capped, jittered
backoff (equal jitter: a wait drawn from [c/2, c] with
c = min(cap, base * 2**n)); no call is ever given up, and a caller that holds
a batch's computed outcomes holds them, not the batch's upstream calls (they are
never made again for that reason). While any call is failing the store is
*unhealthy*:

- no lane sends (`wait_healthy()` before each upstream call),
- no lane claims retries, and the consumer thread takes no new messages
  (`healthy` is read from there),
- and the first failure and the recovery are each logged once (WARNING, then
  INFO), not a traceback per batch.

It becomes healthy again by itself: the first call that succeeds says so. At
any moment the store is unhealthy, some caller is inside `call()` retrying, so
the pump never waits for a recovery nobody is probing; and it is healthy again
only when no call is failing (the state store answering while the cache does
not is still an outage).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis

from fashionai_pipeline.worker.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("fashionai.worker")

T = TypeVar("T")

# What "the store did not answer" looks like: redis-py's errors (connection,
# timeout, READONLY/OOM replies), socket errors and asyncio timeouts.
STORE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError, TimeoutError)
# The narrower "no answer at all" of a best-effort call (a lease extension): an
# error reply to it (a script Redis refuses) is a bug and must surface.
UNANSWERED: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
    TimeoutError,
)


class StoreHealth:
    def __init__(
        self,
        *,
        base: float = 0.2,
        cap: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.base = base
        self.cap = cap
        self._clock = clock
        self._rand = rand
        self._healthy = True  # read by the consumer thread; a bool is safe to read unlocked
        self._failing: set[int] = set()  # ids of the calls now retrying
        self._ids = 0
        self._event: asyncio.Event | None = None
        self.outages = 0
        self.retries = 0

    @property
    def healthy(self) -> bool:
        return self._healthy

    def backoff(self, failures: int) -> float:
        """Seconds to wait after `failures` (>= 1) failed tries of one call."""
        ceiling = min(self.cap, self.base * 2 ** (max(failures, 1) - 1))
        return self._rand(ceiling / 2, ceiling)

    async def wait_healthy(self) -> None:
        """Return at once when healthy; else when a store call next succeeds."""
        if self._healthy:
            return
        await self._flag().wait()

    async def call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """`await fn()` until it does not raise a store error; cancellation-safe.

        Other exceptions propagate at once (they are bugs, not outages).
        """
        self._ids += 1
        me, failures = self._ids, 0
        try:
            while True:
                try:
                    value = await fn()
                except STORE_ERRORS as exc:
                    failures += 1
                    if failures == 1:
                        # Once at once, quietly: after a Redis restart a pooled
                        # connection that died with the old server fails one call
                        # and is replaced; that is no outage.
                        continue
                    self._failed(me, what, exc)
                    await self._clock.sleep(self.backoff(failures - 1))
                    continue
                self._succeeded(me)
                return value
        finally:
            # A failing call that was cancelled leaves no prober behind: do not
            # keep the lanes waiting for a recovery nobody would notice.
            self._failing.discard(me)
            if not self._healthy and not self._failing:
                self._recovered()

    def _flag(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
            if self._healthy:
                self._event.set()
        return self._event

    def _failed(self, me: int, what: str, exc: BaseException) -> None:
        self._failing.add(me)
        self.retries += 1
        if self._healthy:
            self._healthy = False
            self.outages += 1
            self._flag().clear()
            log.warning(
                "store unavailable (%s: %s: %s); holding outcomes and pausing every lane"
                " (no sends, no new messages, no retry claims) until it answers",
                what,
                type(exc).__name__,
                str(exc)[:200],
            )

    def _succeeded(self, me: int) -> None:
        # Healthy only once no call is failing: the state store answering while
        # the cache does not (or the reverse) is still an outage.
        self._failing.discard(me)
        if not self._healthy and not self._failing:
            self._recovered()

    def _recovered(self) -> None:
        if not self._healthy:
            self._healthy = True
            self._flag().set()
            log.info("store answers again after %d failed call(s); resuming", self.retries)
            self.retries = 0

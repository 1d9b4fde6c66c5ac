"""Time as a dependency: the worker's policies read the clock and sleep through this.

Production code gets `SystemClock`; unit tests get `MockedClock`, whose `sleep`
advances time instead of waiting, so backoff, cooldown and batch-cutting tests
run without sleeping (the model is arroyo's `MockedClock`). The Lua scripts in
`worker.scripts` keep reading the Redis server's clock: only the policy code
around them uses this one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (compared with envelope timestamps)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals, deadlines)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`; cancellation-safe."""
        ...


class SystemClock:
    """The real clocks and `asyncio.sleep`."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class MockedClock:
    """A clock that moves only when told to, or when someone sleeps on it.

    `sleep(s)` advances both clocks by `s` and yields to the event loop once, so
    other coroutines run in between as they would during a real wait. Every
    sleep is recorded in `sleeps`, for tests that check a backoff schedule.
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)


SYSTEM_CLOCK = SystemClock()

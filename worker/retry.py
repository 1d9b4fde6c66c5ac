"""Retry policy: exponential backoff with full jitter, a cap, and limits.

delay(n) = uniform(0, min(cap, base * 2**(n-1))), never shorter than the
upstream's Retry-After. An event is given up (dead-lettered) once it has made
`max_attempts` attempts or is older than `max_age` seconds. A 401 does not
count as an attempt (the event is not at fault) and neither does a 429 (flow
control, not a failure of the event), but age still applies to both, so an
unfixed token or an upstream that throttles for ever ends in dead letters after
`max_age`, not in an endless loop.

A throttled event's delay cannot grow with its attempts (it spends none), so it
grows with the time the event has waited: uniform(0, min(cap, max(base, age))),
never shorter than Retry-After; the shared cooldown (worker.limiter) paces the
whole tenant meanwhile.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from fashionai_pipeline.producers.settings import Settings


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float
    cap: float
    max_attempts: int
    max_age: float
    rand: Callable[[float, float], float] = random.uniform

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.retry_base, settings.retry_cap, settings.max_attempts, settings.max_age)

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the next try, after `attempts` failed attempts (>= 1)."""
        ceiling = min(self.cap, self.base * 2 ** (max(attempts, 1) - 1))
        jittered = self.rand(0.0, ceiling)
        return max(jittered, retry_after or 0.0)

    def throttled_delay(self, age: float, retry_after: float | None = None) -> float:
        """Seconds to wait before the next try of an event answered 429, `age` s old."""
        ceiling = min(self.cap, max(self.base, age))
        return max(self.rand(0.0, ceiling), retry_after or 0.0)

    def give_up(self, attempts: int, age: float) -> str | None:
        """Why the event must stop being retried, or None to retry it."""
        if attempts >= self.max_attempts:
            return f"gave up after {attempts} attempts"
        if age >= self.max_age:
            return f"gave up: older than {self.max_age:g}s"
        return None

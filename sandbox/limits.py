"""The hard requests/s limit (``SandboxConfig.rate_limit_rps``), as a contract's quota.

At most ``limit`` requests are accepted in any one-second window: the arrival
times of the last ``limit`` accepted requests are kept, and a request is
refused while the oldest of them is less than a second old. Unlike a token
bucket this never lets a burst of 2 x limit through across a window edge.
Refused requests do not count. ``Retry-After`` is the whole seconds until the
oldest kept arrival leaves the window (at least 1).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class SlidingWindowLimit:
    """A sliding one-second window over accepted requests. Event-loop thread only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._arrivals: deque[float] = deque()
        self._limit = 0

    def admit(self, limit: int) -> int | None:
        """``None`` to accept a request now, else the ``Retry-After`` seconds (limit 0: no limit)."""
        if limit <= 0:
            return None
        arrivals = self._arrivals
        if limit != self._limit:
            self._limit = limit
            self._arrivals = arrivals = deque(arrivals, maxlen=limit)
        now = self._clock()
        if len(arrivals) == limit and now - arrivals[0] < 1.0:
            return max(1, math.ceil(arrivals[0] + 1.0 - now))
        arrivals.append(now)
        return None

    def reset(self) -> None:
        """Forget every arrival."""
        self._arrivals.clear()

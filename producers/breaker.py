"""A short circuit breaker for the request path's reads: sans-I/O, one per Redis a reader reads.

A read that fails costs its page at most the read bound (`FASHIONAI_READ_TIMEOUT_MS`). While
a Redis stays down or frozen, the breaker keeps every later read from paying that bound
again:

- **closed** (normal): every read goes to Redis. `failures` failures in a row open it (a
  timeout, a refusal, an error reply; a success resets the count).
- **open**: reads are not tried; the caller serves its fallback at once ("short_circuit").
  After `open_for` seconds the next read is let through as the probe...
- **half-open**: ...one read at a time: its success closes the breaker, its failure opens
  it for `open_for` again. A probe that never reports (a cancelled task) is given up after
  `probe_for` seconds and another read probes. So reads resume by themselves within about
  `open_for` of Redis coming back, and a dead Redis costs one bounded read per `open_for`.

No I/O, no thread: the caller asks `allow()` before a read and reports `success()` or
`failure()` after; the clock is injectable (`clock`, monotonic seconds). Thread-safe (one
lock, taken only off the closed path's fast case) and fork-safe (a child gets a fresh lock;
its state starts as the parent's was). `listener(is_open)` is called on every change
between open and not open, outside the lock (counters, a log line).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Final, Literal

State = Literal["closed", "open", "half_open"]
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"

_live: weakref.WeakSet[Breaker] = weakref.WeakSet()


def _after_fork() -> None:
    for breaker in list(_live):
        breaker._lock = threading.Lock()  # one held by another thread at the fork would never be let go


os.register_at_fork(after_in_child=_after_fork)


class Breaker:
    """Consecutive-failure circuit breaker with a timed half-open probe (module doc)."""

    def __init__(
        self,
        *,
        failures: int = 3,
        open_for: float = 0.5,
        probe_for: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        listener: Callable[[bool], None] | None = None,
    ) -> None:
        if failures < 1 or open_for <= 0 or probe_for <= 0:
            raise ValueError("failures >= 1, open_for > 0 and probe_for > 0")
        self.threshold = failures
        self.open_for = open_for
        self.probe_for = probe_for
        self.clock = clock
        self.listener = listener
        self.state: State = CLOSED
        self._failures = 0
        self._until = 0.0  # open: when the next probe may go; half-open: when the probe is given up
        self._lock = threading.Lock()
        _live.add(self)

    @property
    def is_open(self) -> bool:
        """True while reads are being refused (open, or half-open with a probe out)."""
        return self.state != CLOSED

    def allow(self) -> bool:
        """May a read go to Redis now? False: serve the fallback without trying."""
        if self.state == CLOSED:
            return True
        with self._lock:
            now = self.clock()
            if self._closed():  # another thread's probe closed it meanwhile
                return True
            if now < self._until:
                return False
            self.state, self._until = HALF_OPEN, now + self.probe_for  # this caller probes
            return True

    def success(self) -> None:
        """The read got Redis's answer (whatever the value)."""
        if self.state == CLOSED and not self._failures:
            return
        with self._lock:
            was_open = self.state != CLOSED
            self.state, self._failures = CLOSED, 0
        if was_open:
            self._tell(False)

    def failure(self) -> None:
        """The read failed: no answer within the bound, refused, or an error reply."""
        with self._lock:
            now = self.clock()
            if self.state == OPEN:
                return  # a read that started before the breaker opened
            self._failures += 1
            if self.state == CLOSED and self._failures < self.threshold:
                return
            was_closed = self.state == CLOSED
            self.state, self._until = OPEN, now + self.open_for
        if was_closed:
            self._tell(True)

    def _closed(self) -> bool:
        return self.state == CLOSED

    def _tell(self, is_open: bool) -> None:
        if self.listener is not None:
            self.listener(is_open)

"""Failure injection: the 429s, 5xxs, timeouts and latency a client must survive.

Decisions come from one ``random.Random`` seeded by ``config.seed``, so with a
seed the sequence of outcomes is reproducible request by request. The server
draws a fault only for requests that passed auth and validation — a refused
body is refused whatever the knobs say — and records nothing into session
history for an injected failure, because the upstream would not have processed
it. Latency jitter (:meth:`FaultInjector.latency_s`) is drawn for every answer
on the API path, refusals included, from the same sequence.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Final

from fashionai_pipeline.sandbox.config import SandboxConfig

_RATE_LIMITED: Final = json.dumps({"error": "rate limited (sandbox: injected 429)"}).encode()
_TIMED_OUT: Final = json.dumps({"error": "upstream timed out (sandbox: injected)"}).encode()
_SERVER_ERRORS: Final = {
    status: json.dumps({"error": f"upstream error (sandbox: injected {status})"}).encode()
    for status in (500, 502, 503)
}
_SERVER_ERROR_STATUSES: Final = tuple(_SERVER_ERRORS)


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected outcome: answer ``status`` with ``body`` after ``sleep_s`` seconds."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    sleep_s: float = 0.0


class FaultInjector:
    """Draws per-request outcomes from the live ``config``.

    A change of ``config.seed`` (by any means) reseeds before the next draw;
    :meth:`reseed` restarts the sequence even when the seed is unchanged.
    Not thread-safe: call from the server's event loop only.
    """

    def __init__(self, config: SandboxConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._seed = config.seed
        self._rng = random.Random(config.seed)

    def reseed(self) -> None:
        """Restart the random sequence from ``config.seed``."""
        self._seed = self._config.seed
        self._rng = random.Random(self._seed)

    def _rng_now(self) -> random.Random:
        if self._config.seed != self._seed:
            self.reseed()
        return self._rng

    def draw(self) -> Fault | None:
        """One outcome for an accepted request: a :class:`Fault` or ``None`` (answer normally)."""
        cfg = self._config
        if not (cfg.rate_429 or cfg.rate_5xx or cfg.rate_timeout):
            return None  # the common path consumes no randomness and no time
        rng = self._rng_now()
        roll = rng.random()
        if roll < cfg.rate_429:
            return Fault(429, _RATE_LIMITED, {"Retry-After": self._retry_after()})
        roll -= cfg.rate_429
        if roll < cfg.rate_5xx:
            status = rng.choice(_SERVER_ERROR_STATUSES)
            return Fault(status, _SERVER_ERRORS[status])
        roll -= cfg.rate_5xx
        if roll < cfg.rate_timeout:
            return Fault(504, _TIMED_OUT, sleep_s=cfg.timeout_sleep_s)
        return None

    def latency_s(self) -> float:
        """Seconds to sleep before answering: ``latency_ms`` plus uniform jitter."""
        cfg = self._config
        if not cfg.latency_jitter_ms:
            return cfg.latency_ms / 1000.0
        return (cfg.latency_ms + self._rng_now().uniform(0.0, cfg.latency_jitter_ms)) / 1000.0

    def _retry_after(self) -> str:
        cfg = self._config
        if cfg.retry_after_http_date:
            return formatdate(self._clock() + cfg.retry_after, usegmt=True)
        return str(cfg.retry_after)

"""In-memory stand-ins for the worker's seams, for unit tests that need nothing running.

Each keeps what was done to it, so a test asserts outcomes (what was recorded,
in which order, how long anyone slept), never calls on a mock. `MemoryStore`
follows `worker.store.Store`'s contract: newer-wins rankings, an atomic commit,
marks with a TTL, and it can be told to fail like a Redis that does not answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from fashionai_pipeline.producers.message import encode
from fashionai_pipeline.worker.clock import MockedClock
from fashionai_pipeline.worker.delivery import Delivered, Failed, Outcome
from fashionai_pipeline.worker.store import RankingWrite, StateRecord


def envelope(
    msg_id: str,
    session: str,
    item: str = "p1",
    *,
    tenant: str = "t",
    ts: float = 999_990.0,
    attempt: int = 0,
    notify: str | None = None,
) -> bytes:
    body = {"sessionId": session, "eventType": "productView", "data": {"id": item}}
    return encode(msg_id, tenant, ts, body, attempt, notify)


class ScriptedSender:
    """Answers each POST from `script(body)`; records every body sent, with the clock's time."""

    def __init__(self, clock: MockedClock, script: Any = None) -> None:
        self.clock = clock
        self.script = script or (lambda body: Delivered(["r1", "r2"]))
        self.sent: list[tuple[float, dict[str, Any]]] = []

    async def send(self, body: dict[str, Any]) -> Outcome:
        self.sent.append((self.clock.time(), body))
        await asyncio.sleep(0)
        outcome: Outcome = self.script(body)
        return outcome


@dataclass
class MemoryStore:
    clock: MockedClock
    rankings: dict[str, tuple[int, str]] = field(default_factory=dict)
    commits: list[StateRecord] = field(default_factory=list)
    marks: dict[tuple[str, str], float] = field(default_factory=dict)  # -> expiry
    seen: dict[tuple[str, str], float] = field(default_factory=dict)
    retry_due: list[tuple[float, bytes]] = field(default_factory=list)
    # Failure injection: the next N calls of each role raise as a dead Redis would.
    cache_failures: int = 0
    state_failures: int = 0
    calls: list[str] = field(default_factory=list)
    announced: list[tuple[str, str]] = field(default_factory=list)  # (channel, payload)

    def _cache(self, what: str) -> None:
        self.calls.append(what)
        if self.cache_failures:
            self.cache_failures -= 1
            raise redis.ConnectionError("cache down (injected)")

    def _state(self, what: str) -> None:
        self.calls.append(what)
        if self.state_failures:
            self.state_failures -= 1
            raise redis.ConnectionError("state store down (injected)")

    async def write_rankings(self, rankings: Sequence[RankingWrite], ttl_ms: int) -> list[bool]:
        self._cache("write_rankings")
        out = []
        for r in rankings:
            cur = self.rankings.get(r.key)
            ok = cur is None or cur[0] <= r.ts_ms
            if ok:
                self.rankings[r.key] = (r.ts_ms, r.value)
            out.append(ok)
        return out

    async def announce(self, notices: Sequence[tuple[str, str]]) -> None:
        if notices:  # as RedisStore: no notices, no Redis call
            self.calls.append("announce")
            self.announced.extend(notices)

    async def add_to_crowd(self, settings: Any, leaders: Any, outcomes: Any, now: Any) -> None:
        if settings.crowd:
            self.calls.append("add_to_crowd")

    async def commit(self, record: StateRecord, mark_ttl: int) -> None:
        self._state("commit")
        self.commits.append(record)
        for msg_id in record.marks:
            self.marks[(record.tenant, msg_id)] = self.clock.time() + mark_ttl
        for delay, member in record.retries:
            self.retry_due.append((self.clock.time() + delay, member))

    async def recorded(self, tenant: str, ids: Sequence[str]) -> set[str]:
        self._state("recorded")
        now = self.clock.time()
        return {i for i in ids if self.marks.get((tenant, i), 0.0) > now}

    async def first_sent(self, tenant: str, digests: Sequence[str], window_ms: int) -> list[bool]:
        self._state("first_sent")
        now = self.clock.time()
        out = []
        for d in digests:
            fresh = self.seen.get((tenant, d), 0.0) <= now
            if fresh:
                self.seen[(tenant, d)] = now + window_ms / 1000
            out.append(fresh)
        return out

    async def claim_retries(self, tenant: str, limit: int, lease: float) -> list[bytes]:
        self._state("claim_retries")
        now = self.clock.time()
        due = [m for t, m in self.retry_due if t <= now][:limit]
        self.retry_due = [(t, m) for t, m in self.retry_due if m not in due]
        return due

    async def extend_lease(self, tenant: str, members: Sequence[bytes | str], lease: float) -> None:
        self._state("extend_lease")

    @property
    def dead(self) -> list[dict[str, Any]]:
        return [e for c in self.commits for e in c.dead]

    @property
    def retries(self) -> list[tuple[float, bytes]]:
        return [r for c in self.commits for r in c.retries]


class RecordingLimiter:
    """Grants at once; remembers pauses (the real policy is tested on its own)."""

    def __init__(self) -> None:
        self.acquired = 0
        self.pauses: list[tuple[float, str]] = []

    async def acquire(self) -> None:
        self.acquired += 1

    async def pause(self, seconds: float, reason: str) -> None:
        self.pauses.append((seconds, reason))


def failed(status: int, *, retry_after: float | None = None, body: str = "") -> Failed:
    from fashionai_pipeline.worker.delivery import classify

    outcome = classify(status, body.encode(), None if retry_after is None else str(int(retry_after)))
    assert isinstance(outcome, Failed)
    return outcome

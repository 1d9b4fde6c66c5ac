"""One batch: decode, coalesce, deliver concurrently, record every outcome.

`BatchProcessor.process(raws)` is the unit the pump acks by. It returns True
only once every message's outcome is recorded in Redis in one MULTI/EXEC:

- a ranking cached (newer-wins; an empty list cached as "not enough data yet"),
- a retry scheduled in the durable retry set (backoff, Retry-After honoured),
- or a dead letter written with its reason.

When recording fails it returns False and the pump must not ack: the broker
redelivers, so the worst case is a duplicate upstream call, never a lost event.
Undecodable messages are dead-lettered, never raised: one bad message cannot
reject its batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.message import Envelope, InvalidMessage, compact_json, decode
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker import crowd, notify, scripts
from fashionai_pipeline.worker.deadletter import Kind, encode_entry, entry_for
from fashionai_pipeline.worker.delivery import Delivered, Failed, Outcome
from fashionai_pipeline.worker.retry import RetryPolicy

log = logging.getLogger("fashionai.worker")

LATENCY_SAMPLES = 10_000
AUTH_PAUSE = 30.0  # seconds every worker waits after a 401 before trying the token again


class Sender(Protocol):
    async def send(self, body: dict[str, Any]) -> Outcome: ...


class Limiter(Protocol):
    async def acquire(self, tenant: str) -> None: ...
    async def pause(self, tenant: str, seconds: float, reason: str) -> None: ...


@dataclass
class BatchResult:
    """What one batch did; counters add up across batches (pump, demo, metrics)."""

    received: int = 0
    calls: int = 0
    delivered: int = 0
    cached: int = 0
    empty: int = 0
    stale: int = 0
    retried: int = 0
    dead: int = 0
    invalid: int = 0
    coalesced: int = 0
    auth_failures: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def as_counts(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if isinstance(v, int) and v}


class BatchProcessor:
    def __init__(
        self,
        settings: Settings,
        sender: Sender,
        client: aioredis.Redis,
        *,
        limiter: Limiter | None = None,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._sender = sender
        self._redis = client
        self._limiter = limiter
        self._policy = policy or RetryPolicy.from_settings(settings)
        self._clock = clock
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._write = client.register_script(scripts.WRITE_RANKINGS)
        self._schedule = client.register_script(scripts.SCHEDULE_RETRIES)

    async def process(
        self, raws: Sequence[bytes | str], *, lease_members: Sequence[bytes | str] = ()
    ) -> BatchResult | None:
        """Deliver and record a batch. None means "not recorded: do not ack".

        `lease_members` are retry-set members claimed for this batch; they are
        released in the same transaction that records the outcomes.
        """
        result = BatchResult(received=len(raws))
        dead: list[dict[str, Any]] = []
        groups: dict[str, list[Envelope]] = {}
        for raw in raws:
            try:
                env = decode(raw)
            except InvalidMessage as exc:
                dead.append(entry_for("undecodable", f"undecodable message: {exc}", raw=raw))
                result.invalid += 1
                continue
            ident = compact_json([env.tenant, env.event.body()])
            groups.setdefault(ident, []).append(env)
        result.coalesced = sum(len(g) - 1 for g in groups.values())
        if self.settings.coalesce_window_ms and not lease_members:
            await self._drop_recently_sent(groups, result)

        leaders = [max(g, key=lambda e: e.ts) for g in groups.values()]
        outcomes = await self._deliver_in_session_order(leaders)
        result.calls = len(leaders)

        now = self._clock()
        rankings: list[tuple[str, int, str]] = []
        retries: list[tuple[str, float, bytes]] = []
        notices: list[notify.Notice] = []
        for group, leader, outcome in zip(groups.values(), leaders, outcomes, strict=True):
            if isinstance(outcome, Delivered):
                ev = leader.event
                key = keys.ranking(leader.tenant, ev.eventType, ev.data.id, ev.sessionId, ev.userId)
                ts_ms = int(leader.ts * 1000)
                value = compact_json([ts_ms, *outcome.products])
                rankings.append((key, ts_ms, value))
                notices += notify.notices(group, key, value)
                result.delivered += 1
                result.cached += len(group)
                result.empty += len(group) if not outcome.products else 0
                result.latencies_ms.extend((now - e.ts) * 1000 for e in group)
                continue
            self._on_failure(leader, group, outcome, now, result, dead, retries)

        if not await self._record(rankings, retries, dead, lease_members, result):
            return None
        await notify.announce(self._redis, notices)  # after the cache write: waiters read what landed
        await crowd.record(self._redis, self.settings, leaders, outcomes, clock=self._clock)  # off by default
        return result

    async def _drop_recently_sent(self, groups: dict[str, list[Envelope]], result: BatchResult) -> None:
        """Coalesce events identical to one sent within the window (by any worker).

        The earlier event's ranking is the same key and is (or will be) cached;
        a failure of this check only means the event is sent, never that it is lost.
        """
        tenant = self.settings.tenant
        idents = list(groups)
        digests = [hashlib.blake2b(i.encode(), digest_size=12).hexdigest() for i in idents]
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for digest in digests:
                    pipe.set(keys.seen(tenant, digest), 1, nx=True, px=self.settings.coalesce_window_ms)
                fresh = await pipe.execute()
        except Exception:
            log.warning("coalescing window check failed; sending every event", exc_info=True)
            return
        for ident, is_new in zip(idents, fresh, strict=True):
            if not is_new:
                result.coalesced += len(groups.pop(ident))

    async def _deliver_in_session_order(self, leaders: list[Envelope]) -> list[Outcome]:
        """Sessions run concurrently; one session's events go one after another.

        Fashion.AI ranks from what the session did before (a customShelf sent
        beside the product views that precede it would find no history), so
        events of one session keep their enqueue order within a batch.
        """
        chains: dict[tuple[str, str], list[int]] = {}
        for i, env in enumerate(leaders):
            chains.setdefault((env.tenant, env.event.sessionId), []).append(i)
        outcomes: list[Outcome | None] = [None] * len(leaders)

        async def run(chain: list[int]) -> None:
            for i in sorted(chain, key=lambda i: leaders[i].ts):
                outcomes[i] = await self._deliver(leaders[i])

        await asyncio.gather(*(run(chain) for chain in chains.values()))
        return [o for o in outcomes if o is not None]

    async def _deliver(self, env: Envelope) -> Outcome:
        async with self._slots:
            if self._limiter is None:
                return await self._sender.send(env.event.body())
            await self._limiter.acquire(env.tenant)
            outcome = await self._sender.send(env.event.body())
        # Pause every worker the moment the answer arrives, not when the batch ends.
        if isinstance(outcome, Failed) and outcome.auth:
            await self._limiter.pause(env.tenant, AUTH_PAUSE, "401")
        elif isinstance(outcome, Failed) and outcome.status == 429 and outcome.retry_after:
            await self._limiter.pause(env.tenant, outcome.retry_after, "429")
        return outcome

    def _on_failure(
        self,
        leader: Envelope,
        group: list[Envelope],
        outcome: Failed,
        now: float,
        result: BatchResult,
        dead: list[dict[str, Any]],
        retries: list[tuple[str, float, bytes]],
    ) -> None:
        if outcome.auth:
            result.auth_failures += 1
            log.error(
                "CONFIGURATION ERROR: Fashion.AI refused the app token (HTTP 401) for tenant %s;"
                " sending is paused and events are kept for retry. Fix FASHIONAI_APP_TOKEN.",
                leader.tenant,
            )
        attempts = leader.attempt + (0 if outcome.auth else 1)
        for env in group:
            why = None if not outcome.retryable else self._policy.give_up(attempts, now - env.ts)
            if not outcome.retryable or why is not None:
                kind: Kind = "refused" if not outcome.retryable else "exhausted"
                reason = outcome.reason if why is None else f"{why}; last: {outcome.reason}"
                dead.append(
                    entry_for(
                        kind,
                        reason,
                        envelope=env,
                        status=outcome.status,
                        response=outcome.body,
                        attempts=attempts,
                    )
                )
                result.dead += 1
                continue
            delay = self._policy.delay(max(attempts, 1), outcome.retry_after)
            nxt = Envelope(env.id, env.tenant, env.ts, attempts, env.event)
            retries.append((env.tenant, delay, nxt.encode()))
            result.retried += 1

    async def _record(
        self,
        rankings: list[tuple[str, int, str]],
        retries: list[tuple[str, float, bytes]],
        dead: list[dict[str, Any]],
        lease_members: Sequence[bytes | str],
        result: BatchResult,
    ) -> bool:
        tenant = self.settings.tenant
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                if rankings:
                    argv: list[Any] = [self.settings.ranking_ttl * 1000]
                    for _, ts_ms, value in rankings:
                        argv += [ts_ms, value]
                    await self._write(keys=[k for k, _, _ in rankings], args=argv, client=pipe)
                by_tenant: dict[str, list[Any]] = {}
                for owner, delay, member in retries:
                    by_tenant.setdefault(owner, []).extend((delay, member))
                for owner, flat in by_tenant.items():
                    await self._schedule(keys=[keys.retry(owner)], args=flat, client=pipe)
                for entry in dead:
                    pipe.xadd(keys.dead_letters(), encode_entry(entry))
                if lease_members:
                    pipe.zrem(keys.retry_lease(tenant), *lease_members)
                for name, n in result.as_counts().items():
                    pipe.hincrby(keys.stats(tenant), name, n)
                if result.latencies_ms:
                    pipe.lpush(keys.latency(tenant), *(round(x, 2) for x in result.latencies_ms))
                    pipe.ltrim(keys.latency(tenant), 0, LATENCY_SAMPLES - 1)
                replies = await pipe.execute()
        except Exception:
            log.exception("could not record a batch of %d outcomes; leaving it unacked", result.received)
            return False
        if rankings:
            result.stale = int(replies[0])
        return True

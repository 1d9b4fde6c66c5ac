"""One batch: decode, coalesce, deliver concurrently, record every outcome.

`BatchProcessor.process(raws)` is the unit the pump acks by. It returns a
`BatchResult` only once every message's outcome is recorded:

- a ranking cached (newer-wins; an empty list cached as "not enough data yet"),
- a retry scheduled in the durable retry set (backoff, Retry-After honoured),
- or a dead letter written with its reason.

When recording fails it returns None and the pump must not ack: the broker
redelivers, so the worst case is a duplicate upstream call, never a lost event.
Undecodable messages are dead-lettered, never raised: one bad message cannot
reject its batch.

Everything it talks to is a seam: the `Sender` (upstream), the `Limiter`, the
`Store` (cache and state store) and the `Clock`, so unit tests run it with no
Redis, no server and no sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.message import Envelope, InvalidMessage, compact_json, decode
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.clock import SYSTEM_CLOCK, Clock
from fashionai_pipeline.worker.deadletter import Kind, entry_for
from fashionai_pipeline.worker.delivery import Delivered, Failed, Outcome
from fashionai_pipeline.worker.metrics import Count
from fashionai_pipeline.worker.retry import RetryPolicy
from fashionai_pipeline.worker.store import RankingWrite, StateRecord, Store

log = logging.getLogger("fashionai.worker")

AUTH_PAUSE = 30.0  # seconds every worker waits after a 401 before trying the token again


class Sender(Protocol):
    async def send(self, body: dict[str, Any]) -> Outcome: ...


class Limiter(Protocol):
    async def acquire(self) -> None: ...
    async def pause(self, seconds: float, reason: str) -> None: ...


@dataclass
class BatchResult:
    """What one batch did; results add up across batches (pump, demo, metrics).

    `counts` holds the words of `worker.metrics.Count` only.
    """

    counts: Counter[Count] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def __getitem__(self, word: Count) -> int:
        return self.counts[word]

    def add(self, other: BatchResult) -> None:
        self.counts.update(other.counts)

    def as_counts(self) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if v}


class BatchProcessor:
    """Processes one lane's (one tenant's) batches. Runs on the pump's event loop."""

    def __init__(
        self,
        settings: Settings,
        sender: Sender,
        store: Store,
        *,
        limiter: Limiter | None = None,
        policy: RetryPolicy | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self._sender = sender
        self._store = store
        self._limiter = limiter
        self._policy = policy or RetryPolicy.from_settings(settings)
        self._clock = clock
        self._slots = asyncio.Semaphore(settings.concurrency)

    async def claim_retries(self, limit: int, lease: float) -> list[bytes]:
        """Due retries of this lane's tenant, moved under a lease (see `process`)."""
        return await self._store.claim_retries(self.settings.tenant, limit, lease)

    async def process(
        self, raws: Sequence[bytes | str], *, lease_members: Sequence[bytes | str] = ()
    ) -> BatchResult | None:
        """Deliver and record a batch. None means "not recorded: do not ack".

        `lease_members` are retry-set members claimed for this batch; they are
        released in the same transaction that records the outcomes.
        """
        result = BatchResult()
        counts = result.counts
        counts["received"] = len(raws)
        dead: list[dict[str, Any]] = []
        groups: dict[str, list[Envelope]] = {}
        for raw in raws:
            try:
                env = decode(raw)
            except InvalidMessage as exc:
                dead.append(entry_for("undecodable", f"undecodable message: {exc}", raw=raw))
                counts["invalid"] += 1
                counts["dead"] += 1
                continue
            ident = compact_json([env.tenant, env.event.body()])
            groups.setdefault(ident, []).append(env)
        counts["coalesced"] = sum(len(g) - 1 for g in groups.values())
        if self.settings.coalesce_window_ms and not lease_members:
            await self._drop_recently_sent(groups, counts)

        leaders = [max(g, key=lambda e: e.ts) for g in groups.values()]
        outcomes = await self._deliver_in_session_order(leaders)
        counts["calls"] = len(leaders)

        now = self._clock.time()
        rankings: list[RankingWrite] = []
        ranked: list[list[Envelope]] = []
        record = StateRecord(self.settings.tenant, dead=dead, release=lease_members)
        for group, leader, outcome in zip(groups.values(), leaders, outcomes, strict=True):
            if isinstance(outcome, Delivered):
                ev = leader.event
                key = keys.ranking(leader.tenant, ev.eventType, ev.data.id, ev.sessionId, ev.userId)
                ts_ms = int(leader.ts * 1000)
                rankings.append(RankingWrite(key, ts_ms, compact_json([ts_ms, *outcome.products])))
                ranked.append(group)
                counts["delivered"] += 1
                if not outcome.products:
                    counts["empty"] += len(group)
                continue
            self._on_failure(leader, group, outcome, now, counts, record)

        try:
            written = await self._store.write_rankings(rankings, self.settings.ranking_ttl * 1000)
            for group, ok in zip(ranked, written, strict=True):
                counts["cached" if ok else "stale"] += len(group)
                if ok:
                    result.latencies_ms.extend((now - e.ts) * 1000 for e in group)
            record.counts = result.as_counts()
            record.latencies_ms = result.latencies_ms
            await self._store.commit(record, 0)
        except Exception:
            log.exception("could not record a batch of %d outcomes; leaving it unacked", len(raws))
            return None
        return result

    async def _drop_recently_sent(self, groups: dict[str, list[Envelope]], counts: Counter[Count]) -> None:
        """Coalesce events identical to one sent within the window (by any worker).

        The earlier event's ranking is the same key and is (or will be) cached;
        a failure of this check only means the event is sent, never that it is lost.
        """
        idents = list(groups)
        digests = [hashlib.blake2b(i.encode(), digest_size=12).hexdigest() for i in idents]
        try:
            fresh = await self._store.first_sent(
                self.settings.tenant, digests, self.settings.coalesce_window_ms
            )
        except Exception:
            log.warning("coalescing window check failed; sending every event", exc_info=True)
            return
        for ident, is_new in zip(idents, fresh, strict=True):
            if not is_new:
                counts["coalesced"] += len(groups.pop(ident))

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
            await self._limiter.acquire()
            outcome = await self._sender.send(env.event.body())
        # Pause every worker the moment the answer arrives, not when the batch ends.
        if isinstance(outcome, Failed) and outcome.auth:
            await self._limiter.pause(AUTH_PAUSE, "401")
        elif isinstance(outcome, Failed) and outcome.status == 429 and outcome.retry_after:
            await self._limiter.pause(outcome.retry_after, "429")
        return outcome

    def _on_failure(
        self,
        leader: Envelope,
        group: list[Envelope],
        outcome: Failed,
        now: float,
        counts: Counter[Count],
        record: StateRecord,
    ) -> None:
        if outcome.auth:
            counts["auth_failures"] += 1
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
                record.dead.append(
                    entry_for(
                        kind,
                        reason,
                        envelope=env,
                        status=outcome.status,
                        response=outcome.body,
                        attempts=attempts,
                    )
                )
                counts["dead"] += 1
                continue
            delay = self._policy.delay(max(attempts, 1), outcome.retry_after)
            nxt = Envelope(env.id, env.tenant, env.ts, attempts, env.event)
            record.retries.append((delay, nxt.encode()))
            counts["retried"] += 1

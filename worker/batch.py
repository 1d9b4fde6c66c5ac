"""One batch: admit, drop duplicates, coalesce, deliver concurrently, record every outcome.

`BatchProcessor.process(raws)` is the unit the pump acks by. It returns once
every message's outcome is recorded, in this order (docs/ARCHITECTURE.md,
"Recording order and the acking rule"):

1. rankings to the cache (newer-wins script);
2. one MULTI/EXEC on the state store: retries scheduled (backoff, Retry-After
   honoured), dead letters with their reasons, lease releases, a duplicate-id
   mark per recorded message, counters and latency samples;
3. (the pump) ack.

When a store does not answer, the computed outcomes are held and only their
recording is retried (`worker.health`): no upstream call is made again for
them, and meanwhile every lane stops sending. A message is dropped (acked,
counted `duplicate`) only if its id carries a mark, i.e. its outcome was
recorded; retries claimed from the retry set are never checked.

Admission, per message, before anything is sent: larger than
`max_message_bytes` or not an envelope -> dead letter "undecodable"; naming
another tenant than this lane's -> dead letter "foreign" (never sent with this
tenant's token, never cached under the other tenant's keys); a timestamp later
than the worker's clock + `clock_skew` -> clamped to the worker's clock (it
orders cache writes, so a far-future one would pin a ranking key).

Everything it talks to is a seam: the `Sender` (upstream), the `Limiter`, the
`Store` (cache and state store), the `StoreHealth` gate and the `Clock`, so
unit tests run it with no Redis, no server and no sleeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.message import Envelope, InvalidMessage, compact_json, decode
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker import notify
from fashionai_pipeline.worker.clock import SYSTEM_CLOCK, Clock
from fashionai_pipeline.worker.deadletter import Kind, entry_for, redact_entry
from fashionai_pipeline.worker.delivery import Delivered, Failed, Outcome
from fashionai_pipeline.worker.health import UNANSWERED, StoreHealth
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
        health: StoreHealth | None = None,
        secrets: Sequence[str] = (),
    ) -> None:
        """`secrets`: every token of the deployment (each tenant's), masked in dead letters."""
        self.settings = settings
        self.tenant = settings.tenant
        self._sender = sender
        self._store = store
        self._limiter = limiter
        self._policy = policy or RetryPolicy.from_settings(settings)
        self._clock = clock
        self._health = health or StoreHealth(
            base=settings.store_retry_base, cap=settings.store_retry_cap, clock=clock
        )
        secret_list = [*secrets, settings.app_token.get_secret_value()]
        self._secrets = [s for s in secret_list if s]
        self._slots = asyncio.Semaphore(settings.concurrency)

    async def claim_retries(self, limit: int, lease: float) -> list[bytes]:
        """Due retries of this lane's tenant, moved under a lease (see `process`).

        Waits while the stores are unhealthy; retries the claim itself until it succeeds.
        """
        await self._health.wait_healthy()
        return await self._health.call(
            "retry claim", lambda: self._store.claim_retries(self.tenant, limit, lease)
        )

    async def keep_leased(self, members: Sequence[bytes | str], lease: float) -> bool:
        """Extend the lease of retries this process still works on; best effort, one try.

        Returns False when the state store did not answer (the next call tries again).
        Any other error (a script Redis refuses, say) is a bug and propagates.
        """
        try:
            await self._store.extend_lease(self.tenant, members, lease)
        except UNANSWERED:
            return False
        return True

    async def process(
        self, raws: Sequence[bytes | str], *, lease_members: Sequence[bytes | str] = ()
    ) -> BatchResult:
        """Deliver and record a batch; returns once it is recorded (then the pump may ack).

        `lease_members` are retry-set members claimed for this batch; they are
        released in the same transaction that records the outcomes, and they are
        never dropped as duplicates. Cancellation (shutdown) leaves nothing
        recorded by the step it interrupts; anything else raised is a bug.
        """
        result = BatchResult()
        counts = result.counts
        counts["received"] = len(raws)
        now = self._clock.time()
        record = StateRecord(self.tenant, release=lease_members)
        admitted = [e for e in (self._admit(raw, now, counts, record) for raw in raws) if e is not None]
        if admitted and not lease_members:
            admitted = await self._drop_duplicates(admitted, counts)
        record.marks = [e.id for e in admitted] + [str(d["id"]) for d in record.dead if d.get("id")]

        groups: dict[str, list[Envelope]] = {}
        for env in admitted:
            groups.setdefault(compact_json(env.event.body()), []).append(env)
        counts["coalesced"] = sum(len(g) - 1 for g in groups.values())
        if self.settings.coalesce_window_ms and not lease_members and groups:
            await self._drop_recently_sent(groups, counts)

        leaders = [max(g, key=lambda e: e.ts) for g in groups.values()]
        outcomes = await self._deliver_in_session_order(leaders)
        counts["calls"] = len(leaders)

        now = self._clock.time()
        rankings: list[RankingWrite] = []
        ranked: list[list[Envelope]] = []
        notices: list[notify.Notice] = []
        for group, leader, outcome in zip(groups.values(), leaders, outcomes, strict=True):
            if isinstance(outcome, Delivered):
                ev = leader.event
                key = keys.ranking(self.tenant, ev.eventType, ev.data.id, ev.sessionId, ev.userId)
                ts_ms = int(leader.ts * 1000)
                value = compact_json([ts_ms, *outcome.products])
                rankings.append(RankingWrite(key, ts_ms, value))
                notices += notify.notices(group, key, value)
                ranked.append(group)
                counts["delivered"] += 1
                if not outcome.products:
                    counts["empty"] += len(group)
                continue
            self._on_failure(leader, group, outcome, now, counts, record)

        ttl_ms = self.settings.ranking_ttl * 1000
        written = await self._health.call("cache write", lambda: self._store.write_rankings(rankings, ttl_ms))
        # After the cache write, never before: a waiter woken early would read the older
        # ranking. Best effort: a lost notice costs its waiter the rest of its bound.
        await self._store.announce(notices)
        await self._store.add_to_crowd(self.settings, leaders, outcomes, self._clock.time)  # off by default
        for group, ok in zip(ranked, written, strict=True):
            counts["cached" if ok else "stale"] += len(group)
            if ok:
                result.latencies_ms.extend((now - e.ts) * 1000 for e in group)
        record.dead = [redact_entry(entry, self._secrets) for entry in record.dead]
        record.counts = result.as_counts()
        record.latencies_ms = result.latencies_ms
        window = self.settings.duplicate_window
        await self._health.call("state store write", lambda: self._store.commit(record, window))
        for entry in record.dead:
            log.warning(
                "dead letter (%s): message %s of tenant %s: %s",
                entry["kind"],
                entry.get("id") or "-",
                entry.get("tenant") or self.tenant,
                entry["reason"],
            )
        return result

    def _admit(
        self, raw: bytes | str, now: float, counts: Counter[Count], record: StateRecord
    ) -> Envelope | None:
        """The message's envelope, fit to deliver; or None once it is dead-lettered."""
        limit = self.settings.max_message_bytes
        size = len(raw.encode() if isinstance(raw, str) else raw)
        try:
            if size > limit:
                raise InvalidMessage(f"message too large: {size} bytes (limit {limit})")
            env = decode(raw)
        except InvalidMessage as exc:
            record.dead.append(entry_for("undecodable", f"undecodable message: {exc}", raw=raw, now=now))
            counts["invalid"] += 1
            counts["dead"] += 1
            return None
        if env.tenant != self.tenant:
            reason = f"tenant: {env.tenant!r} is not the tenant of this queue ({self.tenant!r})"
            record.dead.append(entry_for("foreign", reason, envelope=env, now=now))
            counts["foreign"] += 1
            counts["dead"] += 1
            return None
        # `not <=` also catches NaN and infinity.
        if not env.ts <= now + self.settings.clock_skew:
            env = dataclasses.replace(env, ts=now)
        return env

    async def _drop_duplicates(self, envs: list[Envelope], counts: Counter[Count]) -> list[Envelope]:
        ids = list({e.id for e in envs})
        marked = await self._health.call("duplicate check", lambda: self._store.recorded(self.tenant, ids))
        if not marked:
            return envs
        kept = [e for e in envs if e.id not in marked]
        counts["duplicate"] += len(envs) - len(kept)
        return kept

    async def _drop_recently_sent(self, groups: dict[str, list[Envelope]], counts: Counter[Count]) -> None:
        """Coalesce events identical to one sent within the window (by any worker).

        The earlier event's ranking is the same key and is (or will be) cached.
        """
        idents = list(groups)
        digests = [hashlib.blake2b(i.encode(), digest_size=12).hexdigest() for i in idents]
        window = self.settings.coalesce_window_ms
        fresh = await self._health.call(
            "coalescing window", lambda: self._store.first_sent(self.tenant, digests, window)
        )
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
        limiter = self._limiter
        async with self._slots:
            # Nothing is sent while outcomes cannot be recorded (worker.health).
            await self._health.wait_healthy()
            if limiter is not None:
                await self._health.call("rate limiter", limiter.acquire)
            outcome = await self._sender.send(env.event.body())
        if limiter is None or not isinstance(outcome, Failed):
            return outcome
        # Pause every worker the moment the answer arrives, not when the batch ends.
        if outcome.auth:
            await self._health.call("cooldown", lambda: limiter.pause(AUTH_PAUSE, "401"))
        elif outcome.status == 429 and outcome.retry_after:
            pause = outcome.retry_after
            await self._health.call("cooldown", lambda: limiter.pause(pause, "429"))
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
        # A 401 is the deployment's fault and a 429 is flow control: neither spends an
        # attempt; only max_age bounds them.
        throttled = outcome.status == 429
        attempts = leader.attempt + (0 if outcome.auth or throttled else 1)
        for env in group:
            age = now - env.ts
            why = None if not outcome.retryable else self._policy.give_up(attempts, age)
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
                        now=now,
                    )
                )
                counts["dead"] += 1
                continue
            if throttled:
                delay = self._policy.throttled_delay(age, outcome.retry_after)
                counts["throttled"] += 1
            else:
                delay = self._policy.delay(max(attempts, 1), outcome.retry_after)
            nxt = Envelope(env.id, env.tenant, env.ts, attempts, env.event)
            record.retries.append((delay, nxt.encode()))
            counts["retried"] += 1

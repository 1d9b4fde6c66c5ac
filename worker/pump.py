"""The pump: consume the event queue in batches, deliver, ack after recording.

One pump per worker process (each prefork child, or the main process with the
solo/threads pools). It serves one *lane* per tenant: its own queue, kombu
channel and prefetch, token, rate limit and retry set, so a tenant with a
backlog (or a tight limit) holds only its own prefetch slots and cannot starve
another tenant. It runs two threads:

- the consumer thread owns the kombu connection and does every broker
  operation (consume, ack, requeue): kombu channels are not thread-safe;
- the delivery thread runs an asyncio loop with the httpx client, the async
  Redis client and the BatchProcessor; it also claims due retries.

Batches are cut at `batch_size` messages or `batch_interval_ms` after the first
message, whichever comes first; several batches may be in flight (prefetch is
2 x batch_size). A message is acked only after its batch's outcomes are recorded.
A batch that fails to record, or raises, is requeued whole; a pump that dies
(SIGKILL) leaves its messages unacked, and the broker gives them to another
consumer (RabbitMQ at once; Redis after `visibility_timeout`, default 60 s).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.settings import Settings, redact_url
from fashionai_pipeline.worker import metrics, notify, scripts
from fashionai_pipeline.worker.batch import BatchProcessor, BatchResult
from fashionai_pipeline.worker.brokers import Source, open_source
from fashionai_pipeline.worker.delivery import Deliverer, TransportName
from fashionai_pipeline.worker.limiter import RedisLimiter

log = logging.getLogger("fashionai.worker")

_TICK = 0.01  # longest idle wait of the consumer thread: bounds added latency
_RESTORE_EVERY = 5.0
_RETRY_POLL = 0.5


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """uvloop when installed and not turned off (the `worker` extra brings it):
    it cut the delivery thread's CPU per event (docs/PERFORMANCE.md)."""
    if kind == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@dataclass(eq=False)
class Lane:
    """One tenant's share of a pump."""

    settings: Settings
    processor: BatchProcessor | None = None
    pending: list[Any] = field(default_factory=list)
    pending_since: float = 0.0


Done = tuple[list[Any], "concurrent.futures.Future[BatchResult | None]", str, Any]


class Pump:
    """Start with start(), stop with stop(); both are called from one control thread."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: TransportName = "aiohttp",
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self.lanes = [Lane(settings.for_tenant(name)) for name in settings.tenant_names()]
        self.totals = BatchResult()
        self._totals_lock = threading.Lock()
        self._transport: TransportName = transport
        self._on_batch = on_batch
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._stop_deadline = 0.0
        self._done: queue.SimpleQueue[Done] = queue.SimpleQueue()
        self._inflight: set[concurrent.futures.Future[BatchResult | None]] = set()
        self._loop = _new_loop(settings.event_loop)
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="fashionai-delivery", daemon=True
        )
        self._consumer_thread = threading.Thread(target=self._consume, name="fashionai-consumer", daemon=True)
        self._resources: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._source: Source | None = None

    def __repr__(self) -> str:
        tenants = ",".join(lane.settings.tenant for lane in self.lanes)
        return f"<Pump broker={redact_url(self.settings.broker_url)} tenants={tenants}>"

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._loop_thread.start()
        asyncio.run_coroutine_threadsafe(self._setup(), self._loop).result(timeout=30)
        self._consumer_thread.start()
        log.info(
            "pump started: queues=%s batch=%d/%dms concurrency=%d",
            ",".join(lane.settings.queue for lane in self.lanes),
            self.settings.batch_size,
            self.settings.batch_interval_ms,
            self.settings.concurrency,
        )

    def stop(self, timeout: float | None = None) -> None:
        """Stop consuming, finish in-flight batches within `timeout`, return the rest.

        Messages not yet dispatched and batches still running at the deadline are
        not acked: the broker gives them to another consumer. Idempotent.
        """
        if self._stopped.is_set():
            return
        bound = self.settings.shutdown_timeout if timeout is None else timeout
        self._stop_deadline = time.monotonic() + bound
        self._stopping.set()
        if self._consumer_thread.is_alive():
            self._consumer_thread.join(bound + 10)
        if self._loop_thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._teardown(), self._loop).result(timeout=10)
            except Exception:
                log.warning("pump teardown did not finish cleanly", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(5)
        # The standard loop's self-pipe sockets would otherwise leak in a process that
        # goes on (tests, embedding). uvloop's close() was seen to block once; a
        # worker process exits right after, so it is left to the exit.
        if isinstance(self._loop, asyncio.BaseEventLoop) and not self._loop_thread.is_alive():
            self._loop.close()
        self._stopped.set()
        log.info("pump stopped: %s", self.totals.as_counts())

    # -- delivery thread ---------------------------------------------------------------

    async def _setup(self) -> None:
        client = aioredis.Redis.from_url(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        self._resources.append(client)
        self._claim = client.register_script(scripts.CLAIM_RETRIES)
        for lane in self.lanes:
            deliverer = Deliverer(lane.settings, transport=self._transport)
            self._resources.append(deliverer)
            limiter = RedisLimiter(client, lane.settings)
            lane.processor = BatchProcessor(lane.settings, deliverer, client, limiter=limiter)
            self._tasks.append(asyncio.create_task(self._retry_loop(lane)))

    async def _teardown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for resource in reversed(self._resources):
            await resource.aclose()

    async def _retry_loop(self, lane: Lane) -> None:
        """Claim due retries under a lease and process them like a batch."""
        assert lane.processor is not None
        tenant = lane.settings.tenant
        lease = max(30.0, (self.settings.request_timeout + self.settings.connect_timeout) * 4)
        while True:
            try:
                members = await self._claim(
                    keys=[keys.retry(tenant), keys.retry_lease(tenant)],
                    args=[self.settings.batch_size, lease],
                )
                if members:
                    result = await lane.processor.process(members, lease_members=members)
                    if result is not None:
                        self._account(result, tenant)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retry claim failed for tenant %s; will try again", tenant)
            await asyncio.sleep(_RETRY_POLL)

    # -- consumer thread -----------------------------------------------------------------

    def _consume(self) -> None:
        failures = 0
        prefetch = self.settings.batch_size * 2
        while not self._stopping.is_set():
            source: Source | None = None
            try:
                source = open_source(
                    self.settings,
                    [lane.settings.queue for lane in self.lanes],
                    self._on_message,
                    prefetch=prefetch,
                )
                self._source = source
                failures = 0
                self._serve(source)
            except Exception as exc:  # any broker failure: reconnect
                failures += 1
                delay = min(0.2 * 2**failures, 5.0)
                log.warning(
                    "broker %s: %s; reconnecting in %.1fs",
                    redact_url(self.settings.broker_url),
                    type(exc).__name__,
                    delay,
                )
                # Deliveries of a dead connection cannot be acked; the broker redelivers them.
                for lane in self.lanes:
                    lane.pending.clear()
                self._stopping.wait(delay)
            finally:
                if source is not None:
                    source.close()

    def _serve(self, source: Source) -> None:
        last_restore = time.monotonic()
        interval = self.settings.batch_interval_ms / 1000
        while not self._stopping.is_set():
            source.poll(_TICK)
            self._settle(source)
            now = time.monotonic()
            for lane in self.lanes:
                if lane.pending and now - lane.pending_since >= interval:
                    self._dispatch(lane)
            if now - last_restore >= _RESTORE_EVERY:
                last_restore = now
                source.maintain()
        self._drain_on_stop(source)

    def _on_message(self, index: int, delivery: Any) -> None:
        lane = self.lanes[index]
        waited = notify.cuts_batch(delivery.body)  # a page waits for it: alone and at once
        if waited and lane.pending:
            self._dispatch(lane)
        if not lane.pending:
            lane.pending_since = time.monotonic()
        lane.pending.append(delivery)
        if len(lane.pending) >= self.settings.batch_size or waited:
            self._dispatch(lane)

    def _dispatch(self, lane: Lane) -> None:
        batch, lane.pending = lane.pending, []
        assert lane.processor is not None
        raws = [d.body for d in batch]
        future = asyncio.run_coroutine_threadsafe(lane.processor.process(raws), self._loop)
        self._inflight.add(future)
        tenant, owner = lane.settings.tenant, self._source
        future.add_done_callback(lambda f, b=batch: self._done.put((b, f, tenant, owner)))  # type: ignore[misc]

    def _settle(self, source: Source) -> None:
        """Ack the deliveries of recorded batches; requeue the others."""
        while True:
            try:
                batch, future, tenant, owner = self._done.get_nowait()
            except queue.Empty:
                return
            self._inflight.discard(future)
            result = None
            if not future.cancelled():
                try:
                    result = future.result()
                except Exception:
                    log.exception("batch of %d raised; requeueing it", len(batch))
            if owner is not source:
                self._settle_stale(owner, batch, result, tenant)
                continue
            if result is None:
                source.requeue(batch)
                self._stopping.wait(0.5)
                continue
            source.ack(batch)
            self._account(result, tenant)

    def _settle_stale(self, owner: Any, batch: list[Any], result: BatchResult | None, tenant: str) -> None:
        """Settle a batch delivered on a connection that has since been replaced.

        Its deliveries belong to the old connection: acking them on the new one
        fails on RabbitMQ ("connection already closed"), and treating that as a
        new broker failure would reconnect in a loop. RabbitMQ already returned
        them when the old connection died; on Redis the old source can still
        settle them (the unacked entries live in Redis, not in the connection).
        """
        try:
            (owner.ack if result is not None else owner.requeue)(batch)
        except Exception as exc:
            log.info(
                "batch of %d from a replaced connection left to the broker: %s",
                len(batch),
                type(exc).__name__,
            )
        if result is not None:
            self._account(result, tenant)

    def _drain_on_stop(self, source: Source) -> None:
        source.stop_consuming()
        for lane in self.lanes:
            source.requeue(lane.pending)
            lane.pending = []
        while self._inflight and time.monotonic() < self._stop_deadline:
            self._settle(source)
            time.sleep(_TICK)
        self._settle(source)
        unfinished = len(self._inflight)
        for future in list(self._inflight):
            future.cancel()
        self._settle(source)  # cancelled batches are requeued, never acked
        if unfinished:
            log.warning("shutdown bound reached: %d batch(es) returned to the queue unacked", unfinished)

    def _account(self, result: BatchResult, tenant: str) -> None:
        metrics.record(tenant, result.as_counts(), result.latencies_ms)
        with self._totals_lock:
            total = self.totals
            for name, n in result.as_counts().items():
                setattr(total, name, getattr(total, name) + n)
        if self._on_batch is not None:
            self._on_batch(result)

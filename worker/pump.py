"""The pump: consume the event queue in batches, deliver, ack after recording.

One pump per worker process (each prefork child, or the main process with the
solo/threads pools). It serves one *lane* per tenant: its own queue, kombu
channel and prefetch, token, rate limit and retry set, so a tenant with a
backlog (or a tight limit) holds only its own prefetch slots and cannot starve
another tenant. It runs two threads:

- the consumer thread owns the kombu connection and does every broker
  operation (consume, ack, requeue): kombu channels are not thread-safe;
- the delivery thread runs an asyncio loop with the httpx client, the async
  Redis clients (cache and state store) and the BatchProcessors; it also claims
  due retries.

Batches are cut at `batch_size` messages or `batch_interval_ms` after the first
message, whichever comes first; several batches may be in flight (prefetch is
2 x batch_size). A message is acked only after its batch's outcomes are recorded.
A batch whose recording fails holds its outcomes and retries the recording
while the whole pump pauses (`worker.health`: no sends, no new messages, no
retry claims; in-flight deliveries are kept from the visibility-timeout sweep);
a batch that raises (a bug) is requeued whole; a pump that dies (SIGKILL)
leaves its messages unacked, and the broker gives them to another consumer
(RabbitMQ at once; Redis after `visibility_timeout`, default 60 s).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fashionai_pipeline.producers.settings import Settings, redact_url
from fashionai_pipeline.worker import brokers, notify
from fashionai_pipeline.worker.batch import BatchResult
from fashionai_pipeline.worker.batcher import Batcher
from fashionai_pipeline.worker.brokers import Source
from fashionai_pipeline.worker.clock import SYSTEM_CLOCK, Clock
from fashionai_pipeline.worker.delivery import TransportName
from fashionai_pipeline.worker.health import StoreHealth
from fashionai_pipeline.worker.metrics import Metrics, default_metrics
from fashionai_pipeline.worker.wiring import describe_tasks, new_loop, redis_processors

log = logging.getLogger("fashionai.worker")

_TICK = 0.01  # longest idle wait of the consumer thread: bounds added latency
_RESTORE_EVERY = 5.0
_RETRY_POLL = 0.5
_TEARDOWN_BOUND = 10.0  # seconds stop() waits for the delivery thread's teardown


class Processor(Protocol):
    """What a lane needs from its batch processor (worker.batch.BatchProcessor)."""

    async def process(
        self, raws: Sequence[bytes | str], *, lease_members: Sequence[bytes | str] = ()
    ) -> BatchResult | None: ...

    async def claim_retries(self, limit: int, lease: float) -> list[bytes]: ...

    async def keep_leased(self, members: Sequence[bytes | str], lease: float) -> bool: ...


# Builds one lane's processor on the delivery thread's loop; the pump's default
# builds BatchProcessors on Redis and httpx. A test passes its own.
ProcessorFactory = Callable[[Settings], Processor]
SourceFactory = Callable[..., Source]


@dataclass(eq=False)
class Lane:
    """One tenant's share of a pump."""

    settings: Settings
    batcher: Batcher[Any]
    processor: Processor | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """A dispatched batch whose processing ended (recorded, failed, raised or cancelled)."""

    deliveries: list[Any]
    future: concurrent.futures.Future[BatchResult | None]
    tenant: str
    source: Source | None  # the broker connection the deliveries came from


class Pump:
    """Start with start(), stop with stop(); both are called from one control thread."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: TransportName = "aiohttp",
        on_batch: Callable[[BatchResult], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        metrics: Metrics | None = None,
        open_source: SourceFactory = brokers.open_source,
        processor_factory: ProcessorFactory | None = None,
    ) -> None:
        self.settings = settings
        interval = settings.batch_interval_ms / 1000
        self.lanes = [
            Lane(settings.for_tenant(name), Batcher(settings.batch_size, interval))
            for name in settings.tenant_names()
        ]
        self.totals = BatchResult()
        self._clock = clock
        self._metrics = metrics
        self._open_source = open_source
        self._processor_factory = processor_factory
        self._totals_lock = threading.Lock()
        self._transport: TransportName = transport
        self._on_batch = on_batch
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._stop_deadline = 0.0
        self._done: queue.SimpleQueue[Done] = queue.SimpleQueue()
        self._inflight: dict[concurrent.futures.Future[BatchResult | None], Done] = {}
        self.health = StoreHealth(base=settings.store_retry_base, cap=settings.store_retry_cap, clock=clock)
        self._teardown_step = "not started"
        self._closing = False  # set by the teardown: the retry loops end
        self._loop = new_loop(settings.event_loop)
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
            teardown = asyncio.run_coroutine_threadsafe(self._teardown(), self._loop)
            try:
                teardown.result(timeout=_TEARDOWN_BOUND)
            except concurrent.futures.TimeoutError:
                log.warning(
                    "pump teardown did not finish in %.0fs; pending step: %s; tasks still running: %s",
                    _TEARDOWN_BOUND,
                    self._teardown_step,
                    self._pending_tasks(),
                )
                teardown.cancel()
            except Exception:
                log.warning("pump teardown failed at step %s", self._teardown_step, exc_info=True)
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
        if self._metrics is None:
            self._metrics = default_metrics()
        factory = self._processor_factory or redis_processors(
            self.settings,
            transport=self._transport,
            clock=self._clock,
            health=self.health,
            resources=self._resources,
        )
        for lane in self.lanes:
            lane.processor = factory(lane.settings)
            self._tasks.append(asyncio.create_task(self._retry_loop(lane)))

    async def _teardown(self) -> None:
        """Stop the retry loops, then close every resource; each step named for the log.

        A cancellation can be lost on Python 3.11: redis-py sends every command
        under `asyncio.wait_for`, which returns the inner result and drops a
        cancel that arrives as the inner send completes (CPython gh-86296, fixed
        in 3.12). A retry loop that lost its cancel went on claiming and
        sleeping, and this teardown waited for it past its 10 s bound. So the
        loops also stop on a flag, and are cancelled again until they end.
        """
        self._teardown_step = "cancelling the retry loops"
        self._closing = True
        pending = {t for t in self._tasks if not t.done()}
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        for resource in reversed(self._resources):
            self._teardown_step = f"closing {resource!r}"
            await resource.aclose()
        self._teardown_step = "done"

    def _pending_tasks(self) -> str:
        return describe_tasks(self._loop)

    async def _retry_loop(self, lane: Lane) -> None:
        """Claim due retries under a lease and process them like a batch.

        The lease is extended while the batch runs (it may hold its outcomes for
        as long as a store outage lasts), so no other worker claims them again.
        """
        processor = lane.processor
        assert processor is not None
        tenant = lane.settings.tenant
        lease = max(30.0, (self.settings.request_timeout + self.settings.connect_timeout) * 4)
        while not self._closing:
            try:
                members = await processor.claim_retries(self.settings.batch_size, lease)
                if members:
                    keeper = asyncio.create_task(self._keep_leased(processor, members, lease))
                    try:
                        result = await processor.process(members, lease_members=members)
                    finally:
                        keeper.cancel()
                    if result is not None:
                        self._account(result, tenant)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retry batch failed for tenant %s; its lease returns it later", tenant)
            await self._clock.sleep(_RETRY_POLL)

    async def _keep_leased(self, processor: Processor, members: list[bytes], lease: float) -> None:
        """Extend the claimed retries' lease every third of it until cancelled.

        A failure is logged once per change (another worker may claim the
        retries again when the lease runs out: a duplicate call, never a loss);
        an unexpected one with its traceback, and the keeping goes on.
        """
        failing = False
        while True:
            await self._clock.sleep(lease / 3)
            try:
                kept = await processor.keep_leased(members, lease)
            except Exception:
                log.exception("extending the lease of %d claimed retries failed", len(members))
                kept = False
            if not kept and not failing:
                log.warning(
                    "the lease of %d claimed retries could not be extended; they may be claimed"
                    " again %.0fs after the last extension",
                    len(members),
                    lease,
                )
            failing = not kept

    # -- consumer thread -----------------------------------------------------------------

    def _consume(self) -> None:
        failures = 0
        prefetch = self.settings.batch_size * 2
        while not self._stopping.is_set():
            source: Source | None = None
            try:
                source = self._open_source(
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
                    lane.batcher.take()
                self._stopping.wait(delay)
            finally:
                if source is not None:
                    source.close()

    def _serve(self, source: Source) -> None:
        last_restore = self._clock.monotonic()
        while not self._stopping.is_set():
            # While outcomes cannot be recorded, take no new messages and cut no
            # batches (worker.health); settling and upkeep go on.
            healthy = self.health.healthy
            if healthy:
                source.poll(_TICK)
            else:
                self._stopping.wait(_TICK)
            self._settle(source)
            now = self._clock.monotonic()
            for lane in self.lanes:
                batch = lane.batcher.due(now) if healthy else None
                if batch:
                    self._dispatch(lane, batch)
            if now - last_restore >= _RESTORE_EVERY:
                last_restore = now
                source.maintain()
                # Batches in flight (held through a store outage included) must not
                # be handed to another consumer by the visibility-timeout sweep.
                held = [
                    d for done in self._inflight.values() if done.source is source for d in done.deliveries
                ]
                source.keep_alive(held)
        self._drain_on_stop(source)

    def _on_message(self, index: int, delivery: Any) -> None:
        lane = self.lanes[index]
        if notify.cuts_batch(delivery.body):  # a page waits for it: alone and at once
            self._dispatch(lane, [delivery])
            return
        batch = lane.batcher.add(delivery, self._clock.monotonic())
        if batch:
            self._dispatch(lane, batch)

    def _dispatch(self, lane: Lane, batch: list[Any]) -> None:
        assert lane.processor is not None
        raws = [d.body for d in batch]
        future = asyncio.run_coroutine_threadsafe(lane.processor.process(raws), self._loop)
        done = Done(batch, future, lane.settings.tenant, self._source)
        self._inflight[future] = done
        future.add_done_callback(lambda _: self._done.put(done))

    def _settle(self, source: Source) -> None:
        """Ack the deliveries of recorded batches; requeue the others."""
        while True:
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                return
            self._inflight.pop(done.future, None)
            result = None
            if not done.future.cancelled():
                try:
                    result = done.future.result()
                except Exception:
                    log.exception("batch of %d raised; requeueing it", len(done.deliveries))
            if done.source is not source:
                self._settle_stale(done.source, done.deliveries, result, done.tenant)
                continue
            if result is None:
                source.requeue(done.deliveries)
                continue
            source.ack(done.deliveries)
            self._account(result, done.tenant)

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
            source.requeue(lane.batcher.take())
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
        if self._metrics is not None:
            self._metrics.record(tenant, result.counts, result.latencies_ms)
        with self._totals_lock:
            self.totals.add(result)
        if self._on_batch is not None:
            self._on_batch(result)

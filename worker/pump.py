"""The pump: consume the event queue in batches, deliver, ack after recording.

One pump per worker process (each prefork child, or the main process with the
solo/threads pools). It runs two threads:

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
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from kombu import Consumer
from kombu.message import Message

from producers import keys
from producers.broker import connect, event_queue
from producers.settings import Settings, redact_url
from worker import scripts
from worker.batch import BatchProcessor, BatchResult
from worker.delivery import Deliverer, TransportName
from worker.limiter import RedisLimiter

log = logging.getLogger("fashionai.worker")

_TICK = 0.02
_RESTORE_EVERY = 5.0
_RETRY_POLL = 0.5

Done = tuple[list[Message], "concurrent.futures.Future[BatchResult | None]"]


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
        self.totals = BatchResult()
        self._totals_lock = threading.Lock()
        self._transport: TransportName = transport
        self._on_batch = on_batch
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._done: queue.SimpleQueue[Done] = queue.SimpleQueue()
        self._pending: list[Message] = []
        self._pending_since = 0.0
        self._inflight: set[concurrent.futures.Future[BatchResult | None]] = set()
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="fashionai-delivery", daemon=True)
        self._consumer_thread = threading.Thread(target=self._consume, name="fashionai-consumer", daemon=True)
        self._processor: BatchProcessor | None = None
        self._resources: list[Any] = []

    def __repr__(self) -> str:
        return f"<Pump broker={redact_url(self.settings.broker_url)} queue={self.settings.queue}>"

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._loop_thread.start()
        asyncio.run_coroutine_threadsafe(self._setup(), self._loop).result(timeout=30)
        self._consumer_thread.start()
        log.info("pump started: queue=%s batch=%d/%dms concurrency=%d",
                 self.settings.queue, self.settings.batch_size,
                 self.settings.batch_interval_ms, self.settings.concurrency)

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
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.warning("pump teardown did not finish cleanly", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(5)
        self._stopped.set()
        log.info("pump stopped: %s", self.totals.as_counts())

    # -- delivery thread ---------------------------------------------------------------

    async def _setup(self) -> None:
        client = aioredis.Redis.from_url(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        deliverer = Deliverer(self.settings, transport=self._transport)
        limiter = RedisLimiter(client, self.settings)
        self._processor = BatchProcessor(self.settings, deliverer, client, limiter=limiter)
        self._resources = [deliverer, client]
        self._claim = client.register_script(scripts.CLAIM_RETRIES)
        self._retry_task = asyncio.create_task(self._retry_loop())

    async def _teardown(self) -> None:
        self._retry_task.cancel()
        for resource in self._resources:
            await resource.aclose()

    async def _retry_loop(self) -> None:
        """Claim due retries under a lease and process them like a batch."""
        assert self._processor is not None
        tenant = self.settings.tenant
        lease = max(30.0, self.settings.request_timeout * 4)
        while True:
            try:
                members = await self._claim(
                    keys=[keys.retry(tenant), keys.retry_lease(tenant)],
                    args=[self.settings.batch_size, lease],
                )
                if members:
                    result = await self._processor.process(members, lease_members=members)
                    if result is not None:
                        self._account(result)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retry claim failed; will try again")
            await asyncio.sleep(_RETRY_POLL)

    # -- consumer thread -----------------------------------------------------------------

    def _consume(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            conn = connect(self.settings, timeout=max(self.settings.connect_timeout, 5.0), heartbeat=0)
            try:
                conn.ensure_connection(max_retries=0)
                channel = conn.channel()
                channel.basic_qos(0, self.settings.batch_size * 2, False)
                consumer = Consumer(channel, queues=[event_queue(self.settings)],
                                    on_message=self._on_message, no_ack=False)
                consumer.consume()
                failures = 0
                self._serve(conn, channel, consumer)
            except Exception as exc:  # noqa: BLE001 - any broker failure: reconnect
                failures += 1
                delay = min(0.2 * 2**failures, 5.0)
                log.warning("broker %s: %s; reconnecting in %.1fs",
                            redact_url(self.settings.broker_url), type(exc).__name__, delay)
                # Messages of a dead connection cannot be acked; the broker redelivers them.
                self._pending.clear()
                self._stopping.wait(delay)
            finally:
                try:
                    conn.release()
                except Exception:  # noqa: BLE001, S110 - the connection may already be gone
                    pass

    def _serve(self, conn: Any, channel: Any, consumer: Consumer) -> None:
        last_restore = time.monotonic()
        while not self._stopping.is_set():
            try:
                conn.drain_events(timeout=_TICK)
            except (TimeoutError, socket.timeout):
                pass
            self._settle()
            if self._pending and time.monotonic() - self._pending_since >= self.settings.batch_interval_ms / 1000:
                self._dispatch()
            now = time.monotonic()
            if now - last_restore >= _RESTORE_EVERY and hasattr(channel, "qos"):
                last_restore = now
                restore = getattr(channel.qos, "restore_visible", None)
                if restore is not None:
                    restore(num=1000, interval=1)
        self._drain_on_stop(consumer)

    def _on_message(self, message: Message) -> None:
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(message)
        if len(self._pending) >= self.settings.batch_size:
            self._dispatch()

    def _dispatch(self) -> None:
        batch, self._pending = self._pending, []
        assert self._processor is not None
        raws = [m.body for m in batch]
        future = asyncio.run_coroutine_threadsafe(self._processor.process(raws), self._loop)
        self._inflight.add(future)
        future.add_done_callback(lambda f, b=batch: self._done.put((b, f)))  # type: ignore[misc]

    def _settle(self) -> None:
        """Ack the messages of recorded batches; requeue the others."""
        while True:
            try:
                batch, future = self._done.get_nowait()
            except queue.Empty:
                return
            self._inflight.discard(future)
            result = None
            if not future.cancelled():
                try:
                    result = future.result()
                except Exception:
                    log.exception("batch of %d raised; requeueing it", len(batch))
            if result is None:
                for message in batch:
                    message.requeue()
                self._stopping.wait(0.5)
                continue
            for message in batch:
                message.ack()
            self._account(result)

    def _drain_on_stop(self, consumer: Consumer) -> None:
        try:
            consumer.cancel()
        except Exception:  # noqa: BLE001 - cancelling on a broken channel
            log.debug("consumer cancel failed", exc_info=True)
        for message in self._pending:
            message.requeue()
        self._pending.clear()
        deadline = getattr(self, "_stop_deadline", time.monotonic())
        while self._inflight and time.monotonic() < deadline:
            self._settle()
            time.sleep(_TICK)
        self._settle()
        for future in list(self._inflight):
            future.cancel()
        if self._inflight:
            log.warning("shutdown bound reached: %d batch(es) returned to the queue unacked",
                        len(self._inflight))

    def _account(self, result: BatchResult) -> None:
        with self._totals_lock:
            total = self.totals
            for name, n in result.as_counts().items():
                setattr(total, name, getattr(total, name) + n)
        if self._on_batch is not None:
            self._on_batch(result)

"""Publishing storefront events on the request path.

`Publisher` (sync) and `AsyncPublisher` (asyncio) validate an event, wrap it in the wire
envelope (producers.message) and hand it to the broker: on Redis one LPUSH in kombu's message
format, elsewhere kombu's Producer (producers.sink). Both are thin shells over one
`PublisherCore` (producers.publishing), which decides everything that is not I/O.

Guarantees:
- Each publish returns a `Receipt` per event (`.id`, `.outcome`). "published": the broker has
  it (Redis answered the LPUSH; RabbitMQ confirmed it when `amqp_confirm_publish` is on, the
  default).
- Bound: a publish returns within `2 x publish_timeout` of being called (plus the time its
  thread or loop is not scheduled), whatever the broker does: refuses, drops the connection,
  stalls (a stopped Redis, a RabbitMQ memory alarm). Each wait is bounded by
  `publish_timeout` and by what is left of that budget; a connection found dead is replaced
  once within it. The one exception: when a new connection is opened, the steps of redis-py's
  or py-amqp's handshake are bounded one by one, so a broker that answers the first steps and
  stalls in the middle of a handshake can hold that call for one `publish_timeout` per step.
- When the broker does not confirm: `on_broker_down="raise"` (the default) raises
  BrokerUnavailable (nothing of its `message_ids` was queued: the connection failed or was
  refused, or the broker refused the command) or PublishUnknown (sent, no answer within the
  bound: it may be queued; publish again with the same `message_id`). With
  `on_broker_down="drop"` they are returned as `Receipt(outcome="dropped")` and
  `Receipt(outcome="unknown")`, counted in `stats.dropped` and `stats.unknown`, and logged
  once per change of the broker's state (a warning when it first fails, an info line when it
  takes events again), not once per call.
- Nothing is buffered behind the caller's back: a publish returns only after the broker
  answered or the bound passed, so nothing is lost when a process exits or forks. The one
  exception is opt-in: with `spool_dir` set, an event the broker did not take is written to
  the disk spool (producers.spool) and returned as "spooled"; it is on this host's disk until
  the spool's replayer hands it to the broker (or drops it, counted, past `spool_max_age`). After a fork
  (gunicorn --preload, uWSGI, Celery prefork) the child opens its own connection on first use.
- Thread-safe: one connection per publisher, used under a lock.
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, TypedDict, Unpack

from fashionai_pipeline.producers.direct import NOT_READ
from fashionai_pipeline.producers.errors import BrokerUnavailable, PublishError, PublishUnknown
from fashionai_pipeline.producers.event import Event
from fashionai_pipeline.producers.publishing import PublisherCore, PublishStats, Receipt
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.producers.sink import AsyncRedisSink, BlockingSender, Command, is_redis

_live: weakref.WeakSet[Publisher] = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    for publisher in list(_live):
        publisher._sender.forget()
        publisher._replayer.forget()


class _Replayer:
    """The spool's replayer for one publisher: a sender of its own, on the spool's thread.

    Started when the publisher is made and again on the first publish of a forked child, so
    a process that comes back after a restart drains what an earlier one spooled. Nothing
    starts when no spool is configured.
    """

    def __init__(self, core: PublisherCore) -> None:
        self._core = core
        self._sender = BlockingSender(core.settings, core.tuning)

    def ensure(self) -> None:
        self._core.start_replayer(self._send)

    def _send(self, queue: str, messages: list[tuple[str, str]]) -> None:
        self._sender.send(queue, messages, self._core.deadline())

    def forget(self) -> None:
        self._sender.forget()

    def close(self) -> None:
        if self._core.spool is not None:
            self._core.spool.stop_replayer()
        self._sender.close()


os.register_at_fork(after_in_child=_forget_connections_after_fork)

Body = dict[str, Any]


class Options(TypedDict, total=False):
    """The typed helpers' keyword arguments, as publish() takes them."""

    tenant: str | None
    message_id: str | None
    notify: str | None


_OPTIONS: Final = frozenset(Options.__annotations__)


def _check_options(kw: Options) -> None:
    """TypeError for a keyword the typed helpers do not take, as Python raises for any other
    function (`messageid=` would otherwise publish under a new id, unnoticed)."""
    if kw and not kw.keys() <= _OPTIONS:
        unknown = sorted(set(kw) - _OPTIONS)[0]
        raise TypeError(f"unexpected keyword argument {unknown!r} (takes {', '.join(sorted(_OPTIONS))})")


class _Shell:
    """What both shells show of their core."""

    _core: PublisherCore

    def _along(self, read: Command, read_url: str) -> tuple[Command, ...]:
        """`read`, if it can share the publish's round trip (the broker is the Redis it reads),
        else nothing."""
        settings = self._core.settings
        return (read,) if read_url == settings.broker_url and is_redis(settings) else ()

    @staticmethod
    def _one_along(sent: tuple[list[Receipt], list[Any]]) -> tuple[Receipt, Any]:
        receipts, replies = sent
        return receipts[0], replies[0] if replies else NOT_READ

    @property
    def settings(self) -> Settings:
        return self._core.settings

    @property
    def stats(self) -> PublishStats:
        return self._core.stats

    def __repr__(self) -> str:
        return self._core.describe(type(self).__name__)


class Publisher(_Shell):
    """Synchronous publisher for web backends (Django, Flask, any WSGI app)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._core = PublisherCore(settings or Settings())
        self._sender = BlockingSender(self._core.settings, self._core.tuning)
        self._replayer = _Replayer(self._core)
        self._replayer.ensure()  # a process that starts with events spooled by an earlier one drains them
        _live.add(self)

    def publish(
        self, event: Event | Mapping[str, Any], *, tenant: str | None = None, message_id: str | None = None,
        notify: str | None = None,
    ) -> Receipt:  # fmt: skip
        """Validate and publish one event (module doc: bound, outcomes).

        Raises InvalidEvent (names the field: the event's, "tenant", "message_id" or "notify")
        before touching the broker; BrokerUnavailable or PublishUnknown unless
        `on_broker_down="drop"`. `notify` asks the worker to announce the event's ranking once
        it is cached (producers.message; publish-and-wait sets it, producers.serving).
        """
        bodies, ids = PublisherCore.one(event, message_id)
        return self._publish(tenant, bodies, ids, notify)[0]

    def product_view(
        self, session_id: str, product_id: str, user_id: str | None = None, **kw: Unpack[Options]
    ) -> Receipt:
        """Publish a productView; `tenant=` and `message_id=` as for publish()."""
        return self._typed("productView", session_id, product_id, user_id, kw)

    def category_view(
        self, session_id: str, category_id: str, user_id: str | None = None, **kw: Unpack[Options]
    ) -> Receipt:
        return self._typed("categoryView", session_id, category_id, user_id, kw)

    def shop_the_look(
        self, session_id: str, product_id: str, user_id: str | None = None, **kw: Unpack[Options]
    ) -> Receipt:
        return self._typed("shopTheLook", session_id, product_id, user_id, kw)

    def custom_shelf(self, session_id: str, user_id: str | None = None, **kw: Unpack[Options]) -> Receipt:
        return self._typed("customShelf", session_id, "", user_id, kw)

    def publish_many(
        self, events: Iterable[Event | Mapping[str, Any]], *, tenant: str | None = None,
        message_ids: Sequence[str] | None = None, notify: str | None = None,
    ) -> list[Receipt]:  # fmt: skip
        """Validate every event, then publish them all in one round trip; a Receipt per event, in order.

        Raises InvalidEvent (field prefixed with the event's position, e.g. "events[3].data.id",
        or "message_ids[2]") before touching the broker. On Redis the events go in one LPUSH,
        which the broker applies whole or not at all; on RabbitMQ all are sent and their
        confirms awaited together, so a failure part-way leaves some queued: the error's
        `message_ids` (or the receipts) name the others; publish them again with the same ids.
        """
        bodies = PublisherCore.bodies(events)
        return self._publish(tenant, bodies, message_ids, notify) if bodies else []

    def _typed(self, kind: str, session_id: str, item_id: str, user_id: str | None, kw: Options) -> Receipt:
        _check_options(kw)
        bodies, ids = PublisherCore.typed(kind, session_id, item_id, user_id, kw.get("message_id"))
        return self._publish(kw.get("tenant"), bodies, ids, kw.get("notify"))[0]

    def _publish(
        self, tenant: str | None, bodies: list[Body], ids: Sequence[str] | None, notify: str | None
    ) -> list[Receipt]:
        return self._publish_along(tenant, bodies, ids, notify, ())[0]

    def publish_with_read(
        self, event: Event | Mapping[str, Any], read: tuple[str, ...], *, read_url: str,
        tenant: str | None = None,
    ) -> tuple[Receipt, Any]:  # fmt: skip
        """publish(), and the read command `read` in the same round trip when the broker is
        the Redis at `read_url` (one Redis for both): (the Receipt, the read's reply, its
        redis.ResponseError, or NOT_READ when it was not sent along or its reply not read,
        so the caller reads on its own). The page views' one round trip per page
        (producers.integrations); the Receipt and errors are publish()'s."""
        bodies, ids = PublisherCore.one(event, None)
        return self._one_along(self._publish_along(tenant, bodies, ids, None, self._along(read, read_url)))

    def _publish_along(
        self, tenant: str | None, bodies: list[Body], ids: Sequence[str] | None, notify: str | None,
        also: tuple[Command, ...],
    ) -> tuple[list[Receipt], list[Any]]:  # fmt: skip
        core = self._core
        batch = core.prepare(tenant, bodies, ids, notify)
        deadline = core.deadline()
        try:
            self._replayer.ensure()
            skipped = core.skipped(batch)
            if skipped is not None:
                raise skipped
            along = self._sender.send(batch.queue, batch.messages, deadline, also)
        except PublishError as exc:
            if core.spool is None:
                return core.failed(exc, batch.ids), []
            rest = core.unconfirmed(exc, batch.messages, batch.ids)
            stored = core.put_in_spool(batch.queue, rest, deadline - time.monotonic())
            return core.after_spool(exc, batch.ids, stored), []
        return core.published(batch.ids), along

    def close(self) -> None:
        """Close the broker connection (a later publish opens a new one)."""
        self._sender.close()
        self._replayer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncPublisher(_Shell):
    """asyncio publisher (FastAPI, aiohttp, Starlette).

    `await publish(...)` has Publisher's outcomes and bound, counted from the await; the event
    loop never waits on the broker. On Redis it talks from the event loop itself; other brokers
    (kombu, not asyncio) run on one dedicated thread per process. Publishes made while one is
    in flight are sent together in the next (group commit: one LPUSH per queue on Redis); on
    Redis, a publish made while none is in flight is sent from the caller's own task (no
    flusher task, no timer: the transport's budget is the same bound). Each
    caller still gets its own answer within its own bound: a publish that could not even be sent
    before its bound passed (the one before it stalled) is not published (BrokerUnavailable).
    Call `aclose()` before the event loop ends (app shutdown).
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self._core = PublisherCore(settings or Settings())
        self._pid = os.getpid()
        self._waiting: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None
        self._inline: asyncio.Future[PublishError | None] | None = None  # a caller's own send
        self._executor: ThreadPoolExecutor | None = None
        self._blocking: BlockingSender | None = None
        self._redis: AsyncRedisSink | None = None
        self._replayer = _Replayer(self._core)
        self._open()

    async def publish(
        self, event: Event | Mapping[str, Any], *, tenant: str | None = None, message_id: str | None = None,
        notify: str | None = None,
    ) -> Receipt:  # fmt: skip
        """Publisher.publish, awaited."""
        bodies, ids = PublisherCore.one(event, message_id)
        return (await self._publish(tenant, bodies, ids, notify))[0]

    async def product_view(
        self, session_id: str, product_id: str, user_id: str | None = None, **kw: Unpack[Options]
    ) -> Receipt:
        return await self._typed("productView", session_id, product_id, user_id, kw)

    async def category_view(
        self, session_id: str, category_id: str, user_id: str | None = None, **kw: Unpack[Options]
    ) -> Receipt:
        return await self._typed("categoryView", session_id, category_id, user_id, kw)

    async def shop_the_look(
        self, session_id: str, product_id: str, user_id: str | None = None, **kw: Unpack[Options]
    ) -> Receipt:
        return await self._typed("shopTheLook", session_id, product_id, user_id, kw)

    async def custom_shelf(
        self, session_id: str, user_id: str | None = None, **kw: Unpack[Options]
    ) -> Receipt:
        return await self._typed("customShelf", session_id, "", user_id, kw)

    async def publish_many(
        self, events: Iterable[Event | Mapping[str, Any]], *, tenant: str | None = None,
        message_ids: Sequence[str] | None = None, notify: str | None = None,
    ) -> list[Receipt]:  # fmt: skip
        """Publisher.publish_many, awaited."""
        bodies = PublisherCore.bodies(events)
        return await self._publish(tenant, bodies, message_ids, notify) if bodies else []

    async def _typed(
        self, kind: str, session_id: str, item_id: str, user_id: str | None, kw: Options
    ) -> Receipt:
        _check_options(kw)
        bodies, ids = PublisherCore.typed(kind, session_id, item_id, user_id, kw.get("message_id"))
        return (await self._publish(kw.get("tenant"), bodies, ids, kw.get("notify")))[0]

    async def _publish(
        self, tenant: str | None, bodies: list[Body], ids: Sequence[str] | None, notify: str | None
    ) -> list[Receipt]:
        return (await self._publish_along(tenant, bodies, ids, notify, ()))[0]

    async def publish_with_read(
        self, event: Event | Mapping[str, Any], read: tuple[str, ...], *, read_url: str,
        tenant: str | None = None,
    ) -> tuple[Receipt, Any]:  # fmt: skip
        """Publisher.publish_with_read, awaited. The read goes along in whichever round trip
        carries the publish: the caller's own, or the group commit it joins."""
        bodies, ids = PublisherCore.one(event, None)
        also = self._along(read, read_url)
        return self._one_along(await self._publish_along(tenant, bodies, ids, None, also))

    async def _publish_along(
        self, tenant: str | None, bodies: list[Body], ids: Sequence[str] | None, notify: str | None,
        also: tuple[Command, ...],
    ) -> tuple[list[Receipt], list[Any]]:  # fmt: skip
        core = self._core
        batch = core.prepare(tenant, bodies, ids, notify)
        queue, msg_ids = batch.queue, batch.ids
        if self._pid != os.getpid():  # a forked child: nothing of the parent's is ours
            self._pid, self._waiting, self._flusher, self._inline = os.getpid(), [], None, None
            self._replayer.forget()
            self._open()
        loop = asyncio.get_running_loop()
        item = _Waiting(queue, batch.messages, loop.create_future(), also)
        item.deadline = loop.time() + core.budget
        self._replayer.ensure()
        skipped = core.skipped(batch)
        if skipped is not None:
            return await self._spooled(queue, item, skipped, msg_ids, loop), []
        if self._redis is not None and self._flusher is None and self._inline is None:
            error = await self._send_inline(loop, queue, item)
        else:
            item.timer = loop.call_at(item.deadline, _expire, item)
            self._waiting.append(item)
            if self._flusher is None and self._inline is None:  # else its end starts one
                self._flusher = loop.create_task(self._flush())
            error = await item.answer
        if error is None:
            return core.published(msg_ids), item.replies
        if core.spool is None:
            return core.failed(error, msg_ids), []
        return await self._spooled(queue, item, error, msg_ids, loop), []

    async def _send_inline(
        self, loop: asyncio.AbstractEventLoop, queue: str, item: _Waiting
    ) -> PublishError | None:
        """Nobody in flight: one round trip from the caller's task. Publishes made meanwhile
        wait in `_waiting` and go together, by a flusher started when this one ends."""
        self._inline = item.answer
        try:
            await self._flush_queue(loop, queue, [item])
        finally:
            self._inline = None
            if not item.answer.done():  # cancelled: aclose() must not wait for it
                item.answer.cancel()
            if self._waiting and self._flusher is None:
                self._flusher = loop.create_task(self._flush())
        return item.answer.result()

    async def _spooled(
        self,
        queue: str,
        item: _Waiting,
        error: PublishError,
        msg_ids: list[str],
        loop: asyncio.AbstractEventLoop,
    ) -> list[Receipt]:
        """The spool's write off the event loop (SQLite may wait on another process's lock)."""
        core = self._core
        rest = core.unconfirmed(error, item.messages, msg_ids)
        timeout = item.deadline - loop.time()
        stored = await loop.run_in_executor(None, core.put_in_spool, queue, rest, timeout)
        return core.after_spool(error, msg_ids, stored)

    async def aclose(self) -> None:
        """Wait for publishes in flight, then close the broker connection."""
        if self._inline is not None:
            await asyncio.wait((self._inline,))
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()
        if self._executor is not None and self._blocking is not None:
            pool, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(pool, self._blocking.close)
            pool.shutdown(wait=False)
        self._replayer.close()

    def _open(self) -> None:
        settings, tuning = self._core.settings, self._core.tuning
        self._executor = None
        if is_redis(settings):
            self._redis = AsyncRedisSink(settings, tuning)
        else:
            self._blocking = BlockingSender(settings, tuning)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Waiting] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                by_queue: dict[str, list[_Waiting]] = {}
                for item in batch:
                    if not item.expired:
                        by_queue.setdefault(item.queue, []).append(item)
                for queue, items in by_queue.items():
                    await self._flush_queue(loop, queue, items)
        except asyncio.CancelledError:
            for item in (*batch, *self._waiting):
                item.answer.cancel()
            self._waiting = []
            raise
        finally:
            self._flusher = None

    async def _flush_queue(self, loop: asyncio.AbstractEventLoop, queue: str, items: list[_Waiting]) -> None:
        """One round trip for `items`, each caller settled with its own share of the answer
        and the replies of the reads it sent along (producers.sink)."""
        for item in items:
            item.sent = True  # from here on, a caller that gives up does not know
        messages = [message for item in items for message in item.messages]
        reads = [read for item in items for read in item.also]
        try:
            replies = await self._send(loop, queue, messages, min(item.deadline for item in items), reads)
        except PublishError as exc:
            for item in items:
                _settle(item, PublisherCore.share(exc, [msg_id for _, msg_id in item.messages]))
        except Exception as exc:  # ConfigurationError (a URL kombu cannot use)
            for item in items:
                _fail(item, exc)
        else:
            at = 0
            for item in items:
                if item.also:
                    item.replies, at = replies[at : at + len(item.also)], at + len(item.also)
                _settle(item, None)

    async def _send(
        self, loop: asyncio.AbstractEventLoop, queue: str, messages: list[Any], due: float,
        reads: list[Command],
    ) -> list[Any]:  # fmt: skip
        if self._redis is not None:
            return await self._redis.send(queue, messages, reads)
        assert self._blocking is not None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="fashionai-publish")
        deadline = time.monotonic() + (due - loop.time())  # the thread's clock
        await loop.run_in_executor(self._executor, self._blocking.send, queue, messages, deadline)
        return [NOT_READ] * len(reads)


@dataclass(eq=False, slots=True)
class _Waiting:
    queue: str
    messages: list[tuple[str, str]]
    answer: asyncio.Future[PublishError | None]
    also: tuple[Command, ...] = ()  # reads sent along (publish_with_read)
    replies: list[Any] = field(default_factory=list)  # their replies, once sent
    deadline: float = 0.0
    timer: asyncio.TimerHandle | None = None
    sent: bool = False
    expired: bool = False


def _settle(item: _Waiting, error: PublishError | None) -> None:
    if item.timer is not None:
        item.timer.cancel()
    if not item.answer.done():  # the caller gave up (cancelled), or its bound passed
        item.answer.set_result(error)


def _fail(item: _Waiting, error: Exception) -> None:
    if item.timer is not None:
        item.timer.cancel()
    if not item.answer.done():
        # Each caller raises its own copy: one object raised in several tasks would collect
        # all their tracebacks.
        mine = copy.copy(error)
        mine.__cause__ = error.__cause__
        item.answer.set_exception(mine)


def _expire(item: _Waiting) -> None:
    """The caller's bound passed before the broker answered."""
    item.expired = True
    if item.answer.done():
        return
    ids = [msg_id for _, msg_id in item.messages]
    if item.sent:
        item.answer.set_result(PublishUnknown("broker: sent, no answer within the bound", ids))
    else:
        reason = "broker: not sent within the bound (the publish before it held the connection)"
        item.answer.set_result(BrokerUnavailable(reason, ids))

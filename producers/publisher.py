"""Publishing storefront events on the request path.

`Publisher` (sync) and `AsyncPublisher` (asyncio) validate an event, wrap it in
the wire envelope (producers.message) and hand it to the broker: on Redis one
LPUSH in kombu's message format (producers.kombu_redis), elsewhere kombu's
Producer. `publish_many` sends a list in one round trip.

Guarantees:
- When `publish` returns, the broker has the event (Redis answered the LPUSH;
  RabbitMQ confirmed it when `amqp_confirm_publish` is on, the default).
- It never blocks longer than about `publish_timeout` (default 0.5 s) per attempt;
  a dead connection is retried once on a fresh one within the same call. Then it
  raises BrokerUnavailable, or, with `on_broker_down="drop"`, counts a drop in
  `stats.dropped`, logs a warning and returns False.
- Nothing is buffered behind the caller's back: a publish returns only after
  the broker has its event, so nothing is lost when a process exits or forks.
  (AsyncPublisher's callers that publish while a round trip is in flight wait
  together for the next one; each still waits for its own answer.) After a
  fork (gunicorn --preload, uWSGI, Celery prefork) the child opens its own
  connection on first use; the parent's is never shared.
- Thread-safe: one connection per publisher, used under a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from kombu import Producer
from kombu.exceptions import OperationalError

from fashionai_pipeline.producers.broker import connect, event_queue
from fashionai_pipeline.producers.direct import AsyncDirectRedis, DirectRedis
from fashionai_pipeline.producers.errors import BrokerUnavailable, InvalidEvent
from fashionai_pipeline.producers.event import Event, event_body, parse_event
from fashionai_pipeline.producers.kombu_redis import encode_message
from fashionai_pipeline.producers.message import CONTENT_TYPE, encode_text, new_id
from fashionai_pipeline.producers.settings import Settings, redact_url

log = logging.getLogger("fashionai.publisher")

_live: weakref.WeakSet[Publisher] = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    for publisher in list(_live):
        publisher._forget()


os.register_at_fork(after_in_child=_forget_connections_after_fork)


@dataclass
class PublishStats:
    published: int = 0
    dropped: int = 0


class Publisher:
    """Synchronous publisher for web backends (Django, Flask, any WSGI app)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.stats = PublishStats()
        self._lock = threading.Lock()
        self._sink: _Sink | None = None
        self._queues: dict[str, str] = {}
        _live.add(self)

    def __repr__(self) -> str:
        return f"<Publisher broker={redact_url(self.settings.broker_url)} queue={self.settings.queue}>"

    # -- the generic call and one typed helper per event type ---------------------

    def publish(
        self,
        event: Event | Mapping[str, Any],
        *,
        tenant: str | None = None,
        message_id: str | None = None,
        notify: str | None = None,
    ) -> bool:
        """Validate and publish one event. Returns True when the broker has it.

        Raises InvalidEvent (names the field) before touching the broker, and
        BrokerUnavailable when the broker does not take it within the bound
        (unless `on_broker_down="drop"`, then returns False). `message_id`
        (default: a new random id) is the envelope's id; `notify` asks the
        worker to announce the ranking (producers.message; producers.serving).
        """
        body = parse_event(event).body()
        return self.publish_body(body, tenant=tenant, message_id=message_id, notify=notify)

    def product_view(self, session_id: str, product_id: str, user_id: str | None = None) -> bool:
        return self.publish_body(event_body("productView", session_id, product_id, user_id))

    def category_view(self, session_id: str, category_id: str, user_id: str | None = None) -> bool:
        return self.publish_body(event_body("categoryView", session_id, category_id, user_id))

    def shop_the_look(self, session_id: str, product_id: str, user_id: str | None = None) -> bool:
        return self.publish_body(event_body("shopTheLook", session_id, product_id, user_id))

    def custom_shelf(self, session_id: str, user_id: str | None = None) -> bool:
        return self.publish_body(event_body("customShelf", session_id, "", user_id))

    # -- the broker side -----------------------------------------------------------

    def publish_body(
        self,
        body: dict[str, Any],
        *,
        tenant: str | None = None,
        message_id: str | None = None,
        notify: str | None = None,
    ) -> bool:
        """Publish an already validated body (Event.body()). Internal fast path."""
        queue, tenant = self._route(tenant)
        ids = None if message_id is None else [message_id]
        return self._send(queue, _envelopes(tenant, [body], ids, notify))

    def publish_many(
        self,
        events: Iterable[Event | Mapping[str, Any]],
        *,
        tenant: str | None = None,
        message_ids: Sequence[str] | None = None,
        notify: str | None = None,
    ) -> int:
        """Validate every event, then publish them all in one round trip per queue.

        Raises InvalidEvent (field prefixed with the event's position, e.g.
        "events[3].data.id") before touching the broker. On Redis the events go
        in one LPUSH, which the broker applies whole or not at all; on RabbitMQ
        each is confirmed in turn, so a failure part-way leaves the first ones
        queued (publishing the list again is safe: at least once). Returns how
        many the broker has (0 when dropped under `on_broker_down="drop"`);
        raises BrokerUnavailable like `publish`.
        """
        bodies = []
        for i, event in enumerate(events):
            try:
                bodies.append(parse_event(event).body())
            except InvalidEvent as exc:
                raise InvalidEvent(f"events[{i}].{exc.field}", exc.rule) from None
        if not bodies:
            return 0
        if message_ids is not None and len(message_ids) != len(bodies):
            raise ValueError("message_ids: one id per event")
        queue, tenant = self._route(tenant)
        return len(bodies) if self._send(queue, _envelopes(tenant, bodies, message_ids, notify)) else 0

    def _route(self, tenant: str | None) -> tuple[str, str]:
        tenant = tenant or self.settings.tenant
        return self._queues.get(tenant) or self._queue_for(tenant), tenant

    def _send(self, queue: str, messages: list[tuple[str, str]]) -> bool:
        """Hand `messages` (payload, id) to the broker as one unit, within the bound."""
        deadline = time.monotonic() + 2 * self.settings.publish_timeout
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._sink is None:
                        self._sink = _open_sink(self.settings)
                    self._sink.send(queue, messages)
                    self.stats.published += len(messages)
                    return True
                except Exception as exc:  # each transport raises its own errors
                    if not _is_connection_error(self.settings, exc):
                        raise
                    self._discard()
                    if attempt == 2 or time.monotonic() >= deadline:
                        return self._broker_down(exc, len(messages))
        raise AssertionError("unreachable")  # pragma: no cover

    def _queue_for(self, tenant: str) -> str:
        if self.settings.tenants and tenant not in self.settings.tenants:
            known = ", ".join(sorted(self.settings.tenants))
            raise InvalidEvent("tenant", f"unknown tenant {tenant!r} (configured: {known})")
        if not self.settings.tenants and tenant != self.settings.tenant:
            raise InvalidEvent("tenant", f"unknown tenant {tenant!r} (configured: {self.settings.tenant})")
        self._queues[tenant] = queue = self.settings.queue_for(tenant)
        return queue

    def close(self) -> None:
        """Close the broker connection (a later publish opens a new one)."""
        with self._lock:
            self._discard()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _broker_down(self, exc: Exception, events: int = 1) -> bool:
        reason = f"broker {redact_url(self.settings.broker_url)} unavailable: {type(exc).__name__}"
        if self.settings.on_broker_down == "drop":
            self.stats.dropped += events
            what = "event dropped" if events == 1 else f"{events} events dropped"
            log.warning("%s: %s (dropped so far: %d)", what, reason, self.stats.dropped)
            return False
        raise BrokerUnavailable(reason) from exc

    def _discard(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            # Closing a broken connection may fail; it is gone either way.
            with contextlib.suppress(Exception):
                sink.close()

    def _forget(self) -> None:
        # In a forked child the parent's socket must not be used or closed.
        self._sink = None
        self._lock = threading.Lock()


class AsyncPublisher:
    """asyncio publisher (FastAPI, aiohttp, Starlette).

    `await publish(...)` returns once the broker has the event, with the same
    bound and errors as Publisher; the event loop never waits on the broker.
    On Redis it talks from the event loop itself, on a redis.asyncio Connection
    used directly; other brokers (kombu, not asyncio) run on one dedicated
    thread per process. Publishes made while one is in flight are sent together
    in the next (group commit: one LPUSH per queue on Redis), so many
    concurrent requests share round trips instead of queueing one by one. Each
    caller still gets its own answer: True, False (dropped), or the exception.
    Call `aclose()` before the event loop ends (app shutdown).
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self._sync = Publisher(settings)
        self._executor: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self._waiting: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None
        is_redis = self.settings.broker_url.split("://", 1)[0] in ("redis", "rediss")
        self._redis = self._async_redis() if is_redis else None

    @property
    def settings(self) -> Settings:
        return self._sync.settings

    @property
    def stats(self) -> PublishStats:
        return self._sync.stats

    def __repr__(self) -> str:
        return f"<AsyncPublisher broker={redact_url(self.settings.broker_url)}>"

    async def publish(
        self,
        event: Event | Mapping[str, Any],
        *,
        tenant: str | None = None,
        message_id: str | None = None,
        notify: str | None = None,
    ) -> bool:
        """Publisher.publish for asyncio: same validation, bound, errors and keywords."""
        return await self._publish_body(
            parse_event(event).body(), tenant=tenant, message_id=message_id, notify=notify
        )

    async def _publish_body(
        self,
        body: dict[str, Any],
        *,
        tenant: str | None = None,
        message_id: str | None = None,
        notify: str | None = None,
    ) -> bool:
        queue, tenant = self._sync._route(tenant)
        ((payload, msg_id),) = _envelopes(
            tenant, [body], None if message_id is None else [message_id], notify
        )
        if self._pid != os.getpid():  # a forked child: nothing of the parent's is ours
            self._pid, self._executor, self._waiting, self._flusher = os.getpid(), None, [], None
            if self._redis is not None:
                self._redis = self._async_redis()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool] = loop.create_future()
        self._waiting.append(_Waiting(queue, payload, msg_id, answer))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return await answer

    async def product_view(self, session_id: str, product_id: str, user_id: str | None = None) -> bool:
        return await self._publish_body(event_body("productView", session_id, product_id, user_id))

    async def category_view(self, session_id: str, category_id: str, user_id: str | None = None) -> bool:
        return await self._publish_body(event_body("categoryView", session_id, category_id, user_id))

    async def shop_the_look(self, session_id: str, product_id: str, user_id: str | None = None) -> bool:
        return await self._publish_body(event_body("shopTheLook", session_id, product_id, user_id))

    async def custom_shelf(self, session_id: str, user_id: str | None = None) -> bool:
        return await self._publish_body(event_body("customShelf", session_id, "", user_id))

    async def aclose(self) -> None:
        """Wait for publishes in flight, then close the broker connection."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()
        if self._executor is not None:
            pool, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(pool, self._sync.close)
            pool.shutdown(wait=False)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Waiting] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                by_queue: dict[str, list[_Waiting]] = {}
                for item in batch:
                    by_queue.setdefault(item.queue, []).append(item)
                for queue, items in by_queue.items():
                    messages = [(item.payload, item.msg_id) for item in items]
                    try:
                        if self._redis is not None:
                            ok = await self._send_redis(queue, messages)
                        else:
                            ok = await loop.run_in_executor(self._pool(), self._sync._send, queue, messages)
                    except Exception as exc:  # BrokerUnavailable, or the broker refused the command
                        for item in items:
                            _settle(item.answer, error=exc)
                    else:
                        for item in items:
                            _settle(item.answer, result=ok)
        except asyncio.CancelledError:
            for item in (*batch, *self._waiting):
                item.answer.cancel()
            self._waiting = []
            raise
        finally:
            self._flusher = None

    async def _send_redis(self, queue: str, messages: list[tuple[str, str]]) -> bool:
        """Publisher._send's bound and retry, from the event loop."""
        assert self._redis is not None
        timeout = self.settings.publish_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * timeout
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(timeout):
                    await self._redis.execute("LPUSH", queue, *_kombu_framed(queue, messages))
                self.stats.published += len(messages)
                return True
            except redis.ResponseError:
                raise  # the broker refused the command: not a connection problem
            except (redis.RedisError, OSError, TimeoutError) as exc:
                # The failed connection is gone; the next attempt opens a new one.
                if attempt == 2 or loop.time() >= deadline:
                    return self._sync._broker_down(exc, len(messages))
        raise AssertionError("unreachable")  # pragma: no cover

    def _async_redis(self) -> AsyncDirectRedis:
        url, timeout = self.settings.broker_url, self.settings.publish_timeout
        return AsyncDirectRedis(url, timeout=timeout, name="fashionai-publisher", max_connections=1)

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="fashionai-publish")
        return self._executor


@dataclass(frozen=True, slots=True)
class _Waiting:
    queue: str
    payload: str
    msg_id: str
    answer: asyncio.Future[bool]


def _settle(answer: asyncio.Future[bool], *, result: bool = False, error: Exception | None = None) -> None:
    if answer.done():  # the caller gave up (cancelled); the broker may still have it
        return
    if error is None:
        answer.set_result(result)
        return
    # Each caller raises its own copy: one exception object raised in several
    # tasks would collect all their tracebacks.
    try:
        mine = copy.copy(error)
        mine.__cause__ = error.__cause__
    except Exception:
        mine = error
    answer.set_exception(mine)


class _Sink(Protocol):
    def send(self, queue: str, messages: list[tuple[str, str]]) -> None: ...
    def close(self) -> None: ...


class _RedisSink:
    """Redis broker: one LPUSH of a message in kombu's Redis format (producers.kombu_redis).

    kombu's Producer.publish costs ~0.4 ms here (message object, base64 body,
    exchange lookup); the LPUSH alone is one round trip, on a redis-py
    Connection used directly (producers.direct). Consumers see exactly what
    kombu would have written, minus the base64.
    """

    def __init__(self, settings: Settings) -> None:
        self._redis = DirectRedis(
            settings.broker_url,
            timeout=settings.publish_timeout,
            name="fashionai-publisher",
            max_idle=1,
            reply_poll_us=settings.reply_poll_us,
        )

    def send(self, queue: str, messages: list[tuple[str, str]]) -> None:
        # One LPUSH of every message: Redis applies it whole or not at all.
        self._redis.execute("LPUSH", queue, *_kombu_framed(queue, messages))

    def close(self) -> None:
        self._redis.close()


class _KombuSink:
    """Any other kombu transport (RabbitMQ): kombu's Producer, queue declared once."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        conn = connect(settings, timeout=settings.publish_timeout)
        try:
            conn.ensure_connection(max_retries=0)
            self._channel = conn.default_channel
        except Exception:
            conn.release()
            raise
        self._conn = conn
        self._producer = Producer(self._channel)
        self._declared: set[str] = set()

    def send(self, queue: str, messages: list[tuple[str, str]]) -> None:
        if queue not in self._declared:
            event_queue(self._settings, queue)(self._channel).declare()
            self._declared.add(queue)
        # With publisher confirms each publish waits for its confirm; a failure
        # part-way leaves the earlier ones published (the caller may publish
        # them again: at least once).
        for payload, _ in messages:
            self._producer.publish(
                payload.encode(),
                routing_key=queue,
                content_type=CONTENT_TYPE,
                content_encoding="utf-8",
                delivery_mode=2,
                retry=False,
                declare=[],
            )

    def close(self) -> None:
        self._conn.release()


def _envelopes(
    tenant: str,
    bodies: Sequence[dict[str, Any]],
    ids: Sequence[str] | None = None,
    notify: str | None = None,
) -> list[tuple[str, str]]:
    """(payload, id) per validated body: the wire envelope (producers.message) as text, stamped now."""
    now = time.time()
    out = []
    for i, body in enumerate(bodies):
        msg_id = new_id() if ids is None else ids[i]
        out.append((encode_text(msg_id, tenant, now, body, notify=notify), msg_id))
    return out


def _kombu_framed(queue: str, messages: list[tuple[str, str]]) -> list[str]:
    """The messages in kombu's Redis format, their ids as delivery tags."""
    return [encode_message(payload, queue, tag=msg_id) for payload, msg_id in messages]


def _open_sink(settings: Settings) -> _Sink:
    if settings.broker_url.split("://", 1)[0] in ("redis", "rediss"):
        return _RedisSink(settings)
    return _KombuSink(settings)


def _is_connection_error(settings: Settings, exc: Exception) -> bool:
    if isinstance(exc, redis.RedisError | OperationalError | OSError):
        return not isinstance(exc, redis.ResponseError)
    conn = connect(settings, timeout=settings.publish_timeout)
    return isinstance(exc, (*conn.connection_errors, *conn.channel_errors))

"""Publishing storefront events on the request path.

`Publisher` (sync) and `AsyncPublisher` (asyncio) validate an event, wrap it in
the wire envelope (producers.message) and hand it to the broker with kombu.

Guarantees:
- When `publish` returns, the broker has the event (Redis answered the LPUSH;
  RabbitMQ confirmed it when `amqp_confirm_publish` is on, the default).
- It never blocks longer than about `publish_timeout` (default 0.5 s) per attempt;
  a dead connection is retried once on a fresh one within the same call. Then it
  raises BrokerUnavailable, or, with `on_broker_down="drop"`, counts a drop in
  `stats.dropped`, logs a warning and returns False.
- No background thread and no in-process buffer: nothing is lost when a process
  exits or forks. After a fork (gunicorn --preload, uWSGI, Celery prefork) the
  child opens its own connection on first use; the parent's is never shared.
- Thread-safe: one connection per publisher, used under a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Producer
from kombu.exceptions import OperationalError

from producers.broker import connect, event_queue
from producers.errors import BrokerUnavailable, InvalidEvent
from producers.event import Event, make_event, parse_event
from producers.message import CONTENT_TYPE, encode
from producers.settings import Settings, redact_url

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
        self._conn: Connection | None = None
        self._producer: Producer | None = None
        self._publish_kw: dict[str, Any] = {}
        self._queues: dict[str, str] = {}
        self._declared: set[str] = set()
        _live.add(self)

    def __repr__(self) -> str:
        return f"<Publisher broker={redact_url(self.settings.broker_url)} queue={self.settings.queue}>"

    # -- the generic call and one typed helper per event type ---------------------

    def publish(self, event: Event | Mapping[str, Any], *, tenant: str | None = None) -> bool:
        """Validate and publish one event. Returns True when the broker has it.

        Raises InvalidEvent (names the field) before touching the broker, and
        BrokerUnavailable when the broker does not take it within the bound
        (unless `on_broker_down="drop"`, then returns False).
        """
        body = parse_event(event).body()
        return self.publish_body(body, tenant=tenant)

    def product_view(self, session_id: str, product_id: str, user_id: str | None = None) -> bool:
        return self.publish(make_event("productView", session_id, product_id, user_id))

    def category_view(self, session_id: str, category_id: str, user_id: str | None = None) -> bool:
        return self.publish(make_event("categoryView", session_id, category_id, user_id))

    def shop_the_look(self, session_id: str, product_id: str, user_id: str | None = None) -> bool:
        return self.publish(make_event("shopTheLook", session_id, product_id, user_id))

    def custom_shelf(self, session_id: str, user_id: str | None = None) -> bool:
        return self.publish(make_event("customShelf", session_id, "", user_id))

    # -- the broker side -----------------------------------------------------------

    def publish_body(self, body: dict[str, Any], *, tenant: str | None = None) -> bool:
        """Publish an already validated body (Event.body()). Internal fast path."""
        tenant = tenant or self.settings.tenant
        queue = self._queues.get(tenant) or self._queue_for(tenant)
        payload = encode(uuid.uuid4().hex, tenant, time.time(), body)
        deadline = time.monotonic() + 2 * self.settings.publish_timeout
        with self._lock:
            for attempt in (1, 2):
                try:
                    producer = self._ensure()
                    if queue not in self._declared:
                        event_queue(self.settings, queue)(producer.channel).declare()
                        self._declared.add(queue)
                    producer.publish(payload, routing_key=queue, **self._publish_kw)
                    self.stats.published += 1
                    return True
                except Exception as exc:  # kombu raises transport-specific errors
                    if not self._is_connection_error(exc):
                        raise
                    self._discard()
                    if attempt == 2 or time.monotonic() >= deadline:
                        return self._broker_down(exc)
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

    def _ensure(self) -> Producer:
        if self._producer is None:
            timeout = self.settings.publish_timeout
            conn = connect(self.settings, timeout=timeout)
            try:
                conn.ensure_connection(max_retries=0)
                channel = conn.default_channel
            except Exception:
                conn.release()
                raise
            self._conn = conn
            self._producer = Producer(channel)
            self._publish_kw = {
                "content_type": CONTENT_TYPE,
                "content_encoding": "utf-8",
                "delivery_mode": 2,
                "retry": False,
                "declare": [],
            }
        return self._producer

    def _is_connection_error(self, exc: Exception) -> bool:
        conn = self._conn or connect(self.settings, timeout=self.settings.publish_timeout)
        errors = (*conn.connection_errors, *conn.channel_errors, OperationalError, OSError)
        return isinstance(exc, errors)

    def _broker_down(self, exc: Exception) -> bool:
        reason = f"broker {redact_url(self.settings.broker_url)} unavailable: {type(exc).__name__}"
        if self.settings.on_broker_down == "drop":
            self.stats.dropped += 1
            log.warning("event dropped: %s (dropped so far: %d)", reason, self.stats.dropped)
            return False
        raise BrokerUnavailable(reason) from exc

    def _discard(self) -> None:
        conn, self._conn, self._producer = self._conn, None, None
        self._declared.clear()
        if conn is not None:
            # Closing a broken connection may fail; it is gone either way.
            with contextlib.suppress(Exception):
                conn.release()

    def _forget(self) -> None:
        # In a forked child the parent's socket must not be used or closed.
        self._conn = None
        self._producer = None
        self._declared = set()
        self._lock = threading.Lock()


class AsyncPublisher:
    """asyncio publisher (FastAPI, aiohttp, Starlette).

    The kombu call runs in one dedicated thread per process, so the event loop
    never waits on the broker; `await publish(...)` returns once the broker has
    the event, with the same bound and errors as Publisher.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self._sync = Publisher(settings)
        self._executor: ThreadPoolExecutor | None = None
        self._pid = os.getpid()

    @property
    def settings(self) -> Settings:
        return self._sync.settings

    @property
    def stats(self) -> PublishStats:
        return self._sync.stats

    def __repr__(self) -> str:
        return f"<AsyncPublisher broker={redact_url(self.settings.broker_url)}>"

    async def publish(self, event: Event | Mapping[str, Any], *, tenant: str | None = None) -> bool:
        body = parse_event(event).body()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), self._call, body, tenant)

    async def product_view(self, session_id: str, product_id: str, user_id: str | None = None) -> bool:
        return await self.publish(make_event("productView", session_id, product_id, user_id))

    async def category_view(self, session_id: str, category_id: str, user_id: str | None = None) -> bool:
        return await self.publish(make_event("categoryView", session_id, category_id, user_id))

    async def shop_the_look(self, session_id: str, product_id: str, user_id: str | None = None) -> bool:
        return await self.publish(make_event("shopTheLook", session_id, product_id, user_id))

    async def custom_shelf(self, session_id: str, user_id: str | None = None) -> bool:
        return await self.publish(make_event("customShelf", session_id, "", user_id))

    async def aclose(self) -> None:
        if self._executor is not None:
            pool, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(pool, self._sync.close)
            pool.shutdown(wait=False)

    def _call(self, body: dict[str, Any], tenant: str | None) -> bool:
        return self._sync.publish_body(body, tenant=tenant)

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="fashionai-publish")
        return self._executor

"""Where a publisher's messages go: Redis (one LPUSH) or any other kombu transport (RabbitMQ).

A sink takes `(payload, message id)` pairs for one queue and returns once the broker has
all of them, or raises a PublishError naming the ids it does not know to be queued:
BrokerUnavailable when none of those was queued, PublishUnknown when any of them may have
been (it errs on that side: publishing an id again is always safe). Every wait is bounded by the caller's
`deadline` (time.monotonic()) and by `publish_timeout`.

This module is the one boundary where kombu's and py-amqp's exceptions become the package's
own; redis-py's become them in producers.transport.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from kombu import Connection, Producer
from kombu.exceptions import KombuError

from fashionai_pipeline.producers.broker import event_queue, transport_options
from fashionai_pipeline.producers.direct import NOT_READ
from fashionai_pipeline.producers.errors import (
    BrokerUnavailable,
    ConfigurationError,
    PublishError,
    PublishUnknown,
)
from fashionai_pipeline.producers.message import CONTENT_TYPE
from fashionai_pipeline.producers.settings import Settings, redact_url
from fashionai_pipeline.producers.templates import Codec
from fashionai_pipeline.producers.transport import (
    AsyncRedisTransport,
    RedisTransport,
    Tuning,
    broker_failures,
)

Messages = Sequence[tuple[str, str]]  # (payload, message id)
Command = tuple[str, ...]  # a read sent along with a publish (RedisSink.send's `also`)
Reads = Sequence[Command]
MAX_IDLE_PUBLISH = 16  # idle Redis connections a sync publisher keeps for its threads


def is_redis(settings: Settings) -> bool:
    return settings.broker_url.split("://", 1)[0] in ("redis", "rediss")


def _redis_transport(settings: Settings, tuning: Tuning) -> dict[str, Any]:
    url, timeout = settings.broker_url, settings.publish_timeout
    failures = broker_failures(settings)
    return {
        "url": url,
        "timeout": timeout,
        "name": "fashionai-publisher",
        "tuning": tuning,
        "failures": failures,
    }


def _lpush(codec: Codec, queue: str, messages: Messages) -> list[str]:
    """One LPUSH of every message, framed as kombu's Redis transport frames them."""
    return [
        "LPUSH",
        queue,
        *(codec.frame(payload, queue, CONTENT_TYPE, msg_id) for payload, msg_id in messages),
    ]


def _naming(exc: PublishError, messages: Messages) -> PublishError:
    """`exc` naming every message of one LPUSH: Redis applied it whole or not at all."""
    return type(exc)(exc.reason, [msg_id for _, msg_id in messages])


class RedisSink:
    """Redis broker: one LPUSH of every message in kombu's Redis format (producers.kombu_redis).

    kombu's Producer.publish builds a message object, base64-encodes the body and looks up
    the exchange; the LPUSH alone is one round trip, and consumers see exactly what kombu
    would have written, minus the base64. Redis applies the LPUSH whole or not at all.
    """

    def __init__(self, settings: Settings, tuning: Tuning) -> None:
        self._codec = tuning.codec
        # Thread-safe: each call takes an idle connection or opens one (BlockingSender sends
        # without its lock), so up to this many are kept for the threads that publish at once.
        self._redis = RedisTransport(**_redis_transport(settings, tuning), max_idle=MAX_IDLE_PUBLISH)

    def send(self, queue: str, messages: Messages, deadline: float, also: Reads = ()) -> list[Any]:
        """The LPUSH; with `also`, reads sent in the same round trip (the broker is the cache
        too): each its reply, error reply or NOT_READ (producers.direct.execute_along)."""
        # The envelopes carry fixed ids, so sending them twice is safe: the worker drops a
        # recorded id. That lets a connection the server closed while idle be replaced (a read
        # sent with them is safe twice too).
        command = _lpush(self._codec, queue, messages)
        try:
            if not also:
                self._redis.execute(*command, retry_stale=True)
                return []
            return self._redis.execute_along(tuple(command), also, retry_stale=True)[1]
        except (BrokerUnavailable, PublishUnknown) as exc:
            raise _naming(exc, messages) from exc.__cause__

    def close(self) -> None:
        self._redis.close()


class AsyncRedisSink:
    """RedisSink from the event loop, on redis.asyncio Connections."""

    def __init__(self, settings: Settings, tuning: Tuning) -> None:
        self._codec = tuning.codec
        # Group commit sends one LPUSH at a time: one connection is enough.
        self._redis = AsyncRedisTransport(**_redis_transport(settings, tuning), max_idle=1)

    async def send(self, queue: str, messages: Messages, also: Reads = ()) -> list[Any]:
        """RedisSink.send, awaited."""
        command = _lpush(self._codec, queue, messages)
        try:
            if not also:
                await self._redis.execute(*command, retry_stale=True)
                return []
            return (await self._redis.execute_along(tuple(command), also, retry_stale=True))[1]
        except (BrokerUnavailable, PublishUnknown) as exc:
            raise _naming(exc, messages) from exc.__cause__

    async def aclose(self) -> None:
        await self._redis.aclose()


class KombuSink:
    """Any other kombu transport (RabbitMQ): kombu's Producer, queues declared once.

    Publisher confirms (`amqp_confirm_publish`, on by default) are awaited here rather than
    by py-amqp, whose confirm wait restarts its timeout on every frame that arrives (a
    `connection.blocked` during a memory alarm held a publish for several bounds): this wait
    ends at the deadline whatever comes. A connection the broker has blocked (memory or disk
    alarm) publishes nothing more until it is unblocked: BrokerUnavailable at once.
    """

    def __init__(self, settings: Settings, deadline: float) -> None:
        self._settings = settings
        self._what = f"broker {redact_url(settings.broker_url)}"
        self._timeout = settings.publish_timeout
        options = transport_options(settings, timeout=self._timeout)
        # Confirms exist on AMQP only; there they are awaited here (class doc), not by py-amqp.
        self._confirm = settings.amqp_confirm_publish and "confirm_publish" in options
        if "confirm_publish" in options:
            options["confirm_publish"] = False
        wait = self._wait(deadline)
        try:
            conn = Connection(
                settings.broker_url, connect_timeout=wait, heartbeat=0, transport_options=options
            )
        except Exception as exc:  # an unknown transport in the URL: no retry will help
            raise ConfigurationError(f"FASHIONAI_BROKER_URL: kombu cannot use {self._what}") from exc
        try:
            conn.ensure_connection(max_retries=0)
            self._channel = conn.default_channel
            if self._confirm:
                self._channel.confirm_select()
        except Exception as exc:  # kombu, py-amqp and socket errors alike
            conn.release()
            raise BrokerUnavailable(f"{self._what} unavailable: {type(exc).__name__}") from exc
        self._conn = conn
        self._producer = Producer(self._channel)
        self._declared: set[str] = set()
        self._sent = 0  # delivery tags: the channel numbers publishes 1, 2, ... in confirm mode
        self._acked = 0  # every tag up to this one is settled (acked or nacked)
        self._settled: set[int] = set()  # tags settled above the watermark
        self._nacked: set[int] = set()
        self._blocked = False
        if self._confirm:
            self._channel.events["basic_ack"].add(self._on_ack)  # py-amqp's channel callbacks
            self._channel.events["basic_nack"].add(self._on_nack)
        if hasattr(conn.connection, "on_blocked"):  # py-amqp's connection (RabbitMQ)
            conn.connection.on_blocked = self._on_blocked
            conn.connection.on_unblocked = self._on_unblocked

    def send(self, queue: str, messages: Messages, deadline: float) -> None:
        ids = [msg_id for _, msg_id in messages]
        if self._blocked:
            try:
                self._catch_up()
            except Exception as exc:
                raise BrokerUnavailable(f"{self._what} unavailable: {type(exc).__name__}", ids) from exc
        if self._blocked:
            raise BrokerUnavailable(f"{self._what} blocked publishing (memory or disk alarm)", ids)
        try:
            if queue not in self._declared:
                with self._bounded(deadline):
                    event_queue(self._settings, queue)(self._channel).declare()
                self._declared.add(queue)
        except Exception as exc:
            raise BrokerUnavailable(f"{self._what} unavailable: {type(exc).__name__}", ids) from exc
        # Every message is written, then their confirms are awaited together (RabbitMQ
        # confirms a list as fast as one); unconfirmed ones are named in the error.
        first = self._sent + 1
        for i, (payload, _) in enumerate(messages):
            try:
                self._publish(queue, payload, deadline)
            except (PublishUnknown, BrokerUnavailable) as exc:
                # Written before it and not acked yet: their fate is unknown too.
                tags = range(first, first + i)
                unacked = [
                    m for tag, m in zip(tags, ids, strict=False) if self._confirm and not self._acked_tag(tag)
                ]
                cls = PublishUnknown if unacked else type(exc)
                raise cls(exc.reason, unacked + ids[i:]) from exc.__cause__
        if self._confirm:
            self._await_confirms(first, ids, deadline)

    def _publish(self, queue: str, payload: str, deadline: float) -> None:
        try:
            with self._bounded(deadline):
                self._producer.publish(
                    payload.encode(),
                    routing_key=queue,
                    content_type=CONTENT_TYPE,
                    content_encoding="utf-8",
                    delivery_mode=2,
                    retry=False,
                    declare=[],
                )
        except (KombuError, OSError, *self._conn.connection_errors, *self._conn.channel_errors) as exc:
            # A write that timed out may have left a whole frame in the socket's buffer.
            if _timed_out(exc):
                raise PublishUnknown(f"{self._what}: publish timed out while writing") from exc
            raise BrokerUnavailable(f"{self._what} unavailable: {type(exc).__name__}") from exc
        self._sent += 1

    def _acked_tag(self, tag: int) -> bool:
        return tag <= self._acked or tag in self._settled

    def _await_confirms(self, first: int, ids: list[str], deadline: float) -> None:
        """Wait until every tag from `first` on is settled; raise for those not acked."""
        tags = range(first, first + len(ids))
        reason = ""
        while not all(self._acked_tag(tag) for tag in tags):
            if self._blocked:
                reason = f"{self._what} blocked publishing (memory or disk alarm)"
                break
            try:
                self._conn.drain_events(timeout=self._wait(deadline))
            except (BrokerUnavailable, *self._conn.connection_errors, *self._conn.channel_errors, OSError):
                reason = f"{self._what}: sent, no confirm within the bound"
                break
        pending = [msg_id for tag, msg_id in zip(tags, ids, strict=True) if not self._acked_tag(tag)]
        nacked = [msg_id for tag, msg_id in zip(tags, ids, strict=True) if tag in self._nacked]
        self._nacked.difference_update(tags)
        if pending:
            raise PublishUnknown(reason, pending + nacked)  # unknown wins: retrying is safe either way
        if nacked:
            raise BrokerUnavailable(f"{self._what} refused the event (nack)", nacked)

    def _catch_up(self) -> None:
        """Read what the broker sent meanwhile (connection.unblocked, late confirms), never waiting."""
        for _ in range(100):  # a few frames at most: connection.unblocked, late acks
            try:
                self._conn.drain_events(timeout=0)
            except TimeoutError:
                return

    def _wait(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrokerUnavailable(f"{self._what}: the publish's time bound is spent")
        return min(self._timeout, left)

    @contextlib.contextmanager
    def _bounded(self, deadline: float) -> Iterator[None]:
        """Every socket wait inside (py-amqp reads with the socket's own timeout) ends by `deadline`."""
        transport = getattr(self._conn.connection, "transport", None)
        having = getattr(transport, "having_timeout", None)
        if having is None:
            yield
            return
        with having(self._wait(deadline)):
            yield

    def _on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._acked = max(self._acked, tag)
        else:
            self._settled.add(tag)
        while self._acked + 1 in self._settled:  # keep the set small: advance the watermark
            self._acked += 1
            self._settled.discard(self._acked)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        first = self._acked + 1 if multiple else tag
        self._nacked.update(t for t in range(first, tag + 1) if t not in self._settled)
        self._on_ack(tag, multiple)  # settled either way; the nack set says which

    @property
    def blocked(self) -> bool:
        """The broker blocked this connection (memory or disk alarm); it is still open."""
        return self._blocked

    def _on_blocked(self, reason: str = "") -> None:
        self._blocked = True

    def _on_unblocked(self) -> None:
        self._blocked = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.release()


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, socket.timeout | TimeoutError) or "timed out" in str(exc)


class BlockingSender:
    """A sync sink kept open across calls; Publisher's and AsyncPublisher's (on its thread) way
    to a broker. A kombu connection is used under a lock; one that failed is closed (but for one
    the broker blocked, which still works), and when nothing was sent on it a new one is tried
    once within the call, while the deadline allows. Redis connections are the transport's, one
    per call in flight: once open, a Redis sink is sent on without the lock, so threads publishing
    at once never queue behind each other's round trip (a thread holding the lock across its
    round trip waits for the GIL when the reply comes, and every other publisher waits with it)."""

    def __init__(self, settings: Settings, tuning: Tuning) -> None:
        self._settings = settings
        self._tuning = tuning
        self._lock = threading.Lock()
        self._sink: RedisSink | KombuSink | None = None

    def send(self, queue: str, messages: Messages, deadline: float, also: Reads = ()) -> list[Any]:
        """Raises PublishError naming the ids concerned (module doc). `also`: reads for the
        same round trip on a Redis broker (RedisSink.send); each NOT_READ on any other."""
        try:
            return self._send(queue, messages, deadline, also)
        except PublishError as exc:
            if exc.message_ids:
                raise
            raise _naming(exc, messages) from exc.__cause__  # opening the connection failed

    def _send(self, queue: str, messages: Messages, deadline: float, also: Reads) -> list[Any]:
        sink = self._sink
        if isinstance(sink, RedisSink):  # thread-safe (RedisSink): no lock, no queue
            return sink.send(queue, messages, deadline, also)
        with self._lock:
            for attempt in (1, 2):
                fresh = self._sink is None
                try:
                    if self._sink is None:
                        self._sink = self._open(deadline)
                    if isinstance(self._sink, RedisSink):
                        return self._sink.send(queue, messages, deadline, also)
                    self._sink.send(queue, messages, deadline)
                    return [NOT_READ] * len(also)
                except PublishError as exc:
                    if not isinstance(self._sink, KombuSink) or self._sink.blocked:
                        raise  # Redis connections are the transport's; a blocked one still works
                    # The connection may be dead, or hold half a frame after a write timed out:
                    # the next attempt (or the next publish) opens a new one.
                    self._discard()
                    unsent = isinstance(exc, BrokerUnavailable) and len(exc.message_ids) == len(messages)
                    if fresh or attempt == 2 or not unsent or time.monotonic() >= deadline:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _open(self, deadline: float) -> RedisSink | KombuSink:
        if is_redis(self._settings):
            return RedisSink(self._settings, self._tuning)
        return KombuSink(self._settings, deadline)

    def close(self) -> None:
        with self._lock:
            self._discard()

    def forget(self) -> None:
        """In a forked child: the parent's socket must not be used or closed."""
        self._sink = None
        self._lock = threading.Lock()

    def _discard(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                sink.close()

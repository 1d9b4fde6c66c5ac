"""Broker plumbing shared by the publisher and the worker: one queue declaration.

Both sides declare the queue with the same arguments, so whichever starts first
creates it and neither trips over a mismatch. The queue is durable and messages
are persistent: a broker restart keeps the backlog (RabbitMQ; Redis keeps what its
own persistence keeps).
"""

from __future__ import annotations

from typing import Any

from kombu import Connection, Queue

from fashionai_pipeline.producers.settings import Settings


def event_queue(settings: Settings, name: str | None = None) -> Queue:
    """The durable event queue `name` (default: settings.queue)."""
    # The default exchange routes by queue name on RabbitMQ and on kombu's Redis
    # transport alike, so there is no exchange to declare or bind.
    name = name or settings.queue
    return Queue(name, exchange="", routing_key=name, durable=True)


def transport_options(settings: Settings, *, timeout: float) -> dict[str, Any]:
    """kombu transport options bounding every socket operation by `timeout` seconds."""
    scheme = settings.broker_url.split("://", 1)[0]
    if scheme.startswith("redis") or scheme == "rediss":
        return {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "visibility_timeout": settings.visibility_timeout,
            # kombu's restore sweep runs under a Redis lock that a SIGKILLed
            # process keeps until it expires (default 300 s): keep it short, so a
            # crash cannot stall recovery past the 2-minute bound.
            "unacked_mutex_expire": 15,
            "unacked_restore_interval": 5,
            "max_retries": 0,
        }
    if scheme in ("amqp", "pyamqp", "amqps"):
        return {
            "confirm_publish": settings.amqp_confirm_publish,
            "read_timeout": timeout,
            "write_timeout": timeout,
        }
    return {}


def connect(settings: Settings, *, timeout: float, heartbeat: float = 0) -> Connection:
    """A kombu Connection (not yet connected) whose operations are bounded by `timeout`."""
    return Connection(
        settings.broker_url,
        connect_timeout=timeout,
        heartbeat=heartbeat,
        transport_options=transport_options(settings, timeout=timeout),
    )

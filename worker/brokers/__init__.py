"""Where a pump's messages come from: one module per broker family.

Every source gives the pump the same seven operations, all called from the
pump's consumer thread only:

- `poll(timeout)`: hand new messages to `on_message(lane_index, delivery)`;
- `ack(deliveries)` / `requeue(deliveries)`: settle a batch;
- `maintain()`: periodic work (returning dead consumers' messages);
- `keep_alive(deliveries)`: these are still being worked on (a batch in flight,
  or holding its outcomes through a store outage): do not give them to another
  consumer meanwhile;
- `stop_consuming()`: take no more messages (shutdown);
- `close()`: stop; unacked deliveries return to the queue (at once or after the
  visibility timeout, depending on the broker).

`redis` reads kombu's Redis format in batches (one script call per batch, one
pipeline per ack); `kombu_consumer` is plain kombu, used for RabbitMQ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fashionai_pipeline.producers.settings import Settings

OnMessage = Callable[[int, Any], None]


class Source(Protocol):
    def poll(self, timeout: float) -> None: ...
    def ack(self, deliveries: list[Any]) -> None: ...
    def requeue(self, deliveries: list[Any]) -> None: ...
    def maintain(self) -> None: ...
    def keep_alive(self, deliveries: list[Any]) -> None: ...
    def stop_consuming(self) -> None: ...
    def close(self) -> None: ...


def open_source(settings: Settings, queues: list[str], on_message: OnMessage, *, prefetch: int) -> Source:
    """Connect to the broker and start consuming `queues` (one per lane)."""
    scheme = settings.broker_url.split("://", 1)[0]
    if scheme in ("redis", "rediss"):
        from fashionai_pipeline.worker.brokers.redis import RedisSource

        return RedisSource(settings, queues, on_message, prefetch=prefetch)
    from fashionai_pipeline.worker.brokers.kombu_consumer import KombuSource

    return KombuSource(settings, queues, on_message, prefetch=prefetch)

"""A plain kombu consumer (RabbitMQ, and any other kombu transport)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kombu import Consumer
from kombu.message import Message

from fashionai_pipeline.producers.broker import connect, event_queue
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.brokers import OnMessage

log = logging.getLogger("fashionai.worker")


class KombuSource:
    def __init__(
        self, settings: Settings, queues: list[str], on_message: OnMessage, *, prefetch: int
    ) -> None:
        self._conn = connect(settings, timeout=max(settings.connect_timeout, 5.0), heartbeat=0)
        self._conn.ensure_connection(max_retries=0)
        self._consumers = []
        for index, name in enumerate(queues):
            channel = self._conn.channel()
            channel.basic_qos(0, prefetch, False)
            consumer = Consumer(
                channel,
                queues=[event_queue(settings, name)],
                on_message=lambda m, i=index: on_message(i, m),
                no_ack=False,
            )
            consumer.consume()
            self._consumers.append(consumer)

    def poll(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            self._conn.drain_events(timeout=timeout)

    def ack(self, deliveries: list[Message]) -> None:
        for message in deliveries:
            message.ack()

    def requeue(self, deliveries: list[Message]) -> None:
        for message in deliveries:
            message.requeue()

    def maintain(self) -> None:
        # kombu's Redis transport sweeps only when idle; harmless elsewhere.
        qos: Any = getattr(self._consumers[0].channel, "qos", None)
        restore = getattr(qos, "restore_visible", None)
        if restore is not None:
            restore(num=1000, interval=1)

    def keep_alive(self, deliveries: list[Message]) -> None:
        """Nothing to do: RabbitMQ never redelivers what a live consumer holds (until
        its `consumer_timeout`, 5 min in ops/rabbitmq.conf, closes the channel)."""

    def stop_consuming(self) -> None:
        for consumer in self._consumers:
            try:
                consumer.cancel()
            except Exception:
                log.debug("consumer cancel failed", exc_info=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the connection may already be gone
            self._conn.release()

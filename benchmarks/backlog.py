"""Backlogs: N distinct events waiting on the broker before a contender starts.

A backlog is written to a staging list and moved onto the contender's queue in
one atomic RENAME once its workers are idle and ready (`release`), so every
contender starts from the same full backlog and the CPU baseline is taken after
start-up, not in the middle of it. This needs the Redis broker (kombu's Redis
transport keeps a queue as a list named after it).

The project's messages are the Publisher's own: one real `Publisher.publish`
gives the kombu message template and each event is the template with its own
envelope (producers.message.encode) and delivery tag, pushed through a
pipeline. At ~0.6 ms per Publisher call, publishing 200,000 events one by one
would take minutes. The peers' messages go through Celery's `apply_async`.
"""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from benchmarks import peers
from fashionai_pipeline.producers.message import encode, new_id
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.producers.settings import Settings

_CHUNK = 1000


def event_body(tag: str, i: int) -> dict[str, Any]:
    """The i-th distinct event of a backlog (no two share a body: nothing coalesces)."""
    return {"sessionId": f"{tag}-s{i}", "eventType": "productView", "data": {"id": f"p{i % 3000 + 1:04d}"}}


class ProjectMessages:
    """Builds kombu messages byte-compatible with what `Publisher` puts on the queue."""

    def __init__(self, settings: Settings, broker: redis.Redis) -> None:
        self.settings = settings
        staging = f"{settings.queue}.template"
        publisher = Publisher(settings.model_copy(update={"queue": staging}))
        try:
            publisher.publish(event_body("template", 0))
        finally:
            publisher.close()
        raw: bytes | None = broker.rpop(staging)  # type: ignore[assignment]
        broker.delete(staging)
        if raw is None:
            raise RuntimeError("the Publisher's template message did not arrive")
        self._template = json.loads(raw)
        self._template["properties"]["delivery_info"]["routing_key"] = settings.queue
        self._base64 = self._template["properties"].get("body_encoding") == "base64"

    def message(self, body: dict[str, Any], ts: float | None = None) -> str:
        msg_id = new_id()
        payload = encode(msg_id, self.settings.tenant, time.time() if ts is None else ts, body)
        msg = copy.deepcopy(self._template)
        msg["body"] = base64.b64encode(payload).decode() if self._base64 else payload.decode()
        msg["properties"]["delivery_tag"] = msg_id  # as the Publisher tags it
        return json.dumps(msg)

    def push(self, broker: redis.Redis, key: str, bodies: Iterator[dict[str, Any]]) -> int:
        """LPUSH the events' messages onto the list `key`; returns how many."""
        n = 0
        pipe = broker.pipeline(transaction=False)
        for body in bodies:
            pipe.lpush(key, self.message(body))
            n += 1
            if n % _CHUNK == 0:
                pipe.execute()
        pipe.execute()
        return n


def stage_project(settings: Settings, broker: redis.Redis, n: int) -> Callable[[], None]:
    """Stage `n` project events; the returned function puts them on the queue."""
    staging = f"{settings.queue}.staging"
    messages = ProjectMessages(settings, broker)
    messages.push(broker, staging, (event_body(settings.tenant, i) for i in range(n)))
    return lambda: _release(broker, staging, settings.queue, n)


def stage_peer(queue: str, tag: str, broker: redis.Redis, n: int) -> Callable[[], None]:
    """Stage `n` peer tasks with `deliver.apply_async` onto a staging queue."""
    staging = f"{queue}.staging"
    for i in range(n):
        peers.deliver.apply_async((event_body(tag, i),), queue=staging)
    return lambda: _release(broker, staging, queue, n)


def _release(broker: redis.Redis, staging: str, queue: str, n: int) -> None:
    waiting = broker.llen(staging)
    if waiting != n:
        raise RuntimeError(f"staging list {staging} holds {waiting} messages, expected {n}")
    broker.rename(staging, queue)

"""What the service does behind its routes: publishing events, checking readiness.

Both go through the storefront package's public API.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import redis.asyncio as aioredis

from fashionai_pipeline.producers import errors
from fashionai_pipeline.producers.event import Event
from fashionai_pipeline.producers.message import NOTIFY_KEY, new_id
from fashionai_pipeline.producers.publisher import AsyncPublisher, Publisher
from fashionai_pipeline.producers.settings import Settings


async def publish_events(
    publisher: AsyncPublisher,
    batch_publisher: Publisher,
    publishing: Executor,
    tenant: str,
    valid: Sequence[tuple[int, Event]],
    ids: list[str | None],
) -> list[dict[str, Any]]:
    """Publish the valid events (announced on their keys' channels); fill `ids`; return the failures.

    One event goes through the AsyncPublisher (its group commit joins concurrent
    requests into one round trip). A batch goes through the sync Publisher's
    publish_many on the service's one publishing thread: one LPUSH for the
    whole batch on Redis, where 500 separate awaits cost more than the
    round trip (docs/PERFORMANCE.md).
    """
    if not valid:
        return []
    chosen = [new_id() for _ in valid]
    outcomes: list[str]
    try:
        if len(valid) == 1:
            receipt = await publisher.publish(
                valid[0][1], tenant=tenant, message_id=chosen[0], notify=NOTIFY_KEY
            )
            outcomes = [receipt.outcome]
        else:
            loop = asyncio.get_running_loop()
            events = [ev for _, ev in valid]
            batch = functools.partial(
                batch_publisher.publish_many,
                events,
                tenant=tenant,
                message_ids=chosen,
                notify=NOTIFY_KEY,
            )
            outcomes = [r.outcome for r in await loop.run_in_executor(publishing, batch)]
    except errors.PublishError as exc:
        # The error names the ids not known to be queued; the others were confirmed.
        fate = "unknown" if isinstance(exc, errors.PublishUnknown) else "unavailable"
        concerned = set(exc.message_ids) or set(chosen)
        outcomes = [fate if msg_id in concerned else "published" for msg_id in chosen]
    failed = []
    for (index, _), msg_id, outcome in zip(valid, chosen, outcomes, strict=True):
        if outcome in ("published", "spooled"):
            ids[index] = msg_id
        else:
            code = {"unknown": "publish_unknown", "unavailable": "broker_unavailable"}.get(outcome, "dropped")
            failed.append({"index": index, "code": code})
    return failed


async def broker_answers(settings: Settings) -> bool:
    if settings.broker_url.split("://", 1)[0] in ("redis", "rediss"):
        client = aioredis.Redis.from_url(settings.broker_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(await client.ping())
        except Exception:
            return False
        finally:
            await client.aclose()

    def amqp() -> bool:
        from fashionai_pipeline.producers.broker import connect

        conn = connect(settings, timeout=0.5)
        try:
            conn.ensure_connection(max_retries=0)
            return True
        except Exception:
            return False
        finally:
            conn.release()

    try:
        return await asyncio.wait_for(asyncio.to_thread(amqp), 2.0)
    except TimeoutError:
        return False


async def cache_answers(cache: aioredis.Redis) -> bool:
    try:
        return bool(await cache.ping())
    except Exception:
        return False


def word(ok: bool) -> str:
    return "ok" if ok else "unavailable"

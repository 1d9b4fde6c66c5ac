"""Reading cached rankings on the storefront side (page renderers).

A ranking is cached under producers.keys.ranking() as `[enqueued_at_ms, id, ...]`.
`order()` is what a page renderer calls: the ranked ids first, then the rest of
the page's native ordering; the native ordering alone when there is no ranking,
the ranking is empty ("not enough data yet"), or the cache cannot be reached —
a page always renders.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import filterfalse

import redis
import redis.asyncio as aioredis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.direct import AsyncDirectRedis, DirectRedis
from fashionai_pipeline.producers.errors import FashionAIError
from fashionai_pipeline.producers.settings import Settings

log = logging.getLogger("fashionai.reader")


class CacheUnavailable(FashionAIError):
    """The ranking cache did not answer."""


@dataclass(frozen=True, slots=True)
class Ranking:
    """A cached ranking: product ids best first, and when its event was enqueued."""

    products: list[str]
    enqueued_at: float

    @property
    def empty(self) -> bool:
        """True while Fashion.AI lacks data for this shopper (seed: use native ordering)."""
        return not self.products


def decode_ranking(raw: bytes | str) -> Ranking:
    values = json.loads(raw)
    return Ranking(products=values[1:], enqueued_at=values[0] / 1000.0)


def merge(ranked: Sequence[str], native: Sequence[str]) -> list[str]:
    """Ranked ids that the page has, in ranked order, then the rest in native order.

    Ids the storefront does not list in `native` (out of stock, unknown, filtered)
    are left out: the native list is the authority on what can be rendered.
    """
    if not ranked:
        return list(native)
    chosen = set(ranked).intersection(native)  # in C: no set of the (longer) native list
    if not chosen:
        return list(native)
    head = [pid for pid in dict.fromkeys(ranked) if pid in chosen]
    head.extend(filterfalse(chosen.__contains__, native))
    return head


class RankingReader:
    """Synchronous reader. One per process is enough: thread-safe and fork-aware.

    It reads on redis-py Connections directly (producers.direct), one GET per
    call; pass `client` to read through a redis.Redis of your own instead.
    """

    def __init__(self, settings: Settings | None = None, *, client: redis.Redis | None = None) -> None:
        self.settings = settings or Settings()
        self._client = client
        self._direct = (
            None
            if client
            else DirectRedis(
                self.settings.redis_url,
                timeout=0.25,
                name="fashionai-reader",
                reply_poll_us=self.settings.reply_poll_us,
            )
        )

    def get(
        self,
        event_type: str,
        item_id: str,
        session_id: str,
        user_id: str | None = None,
        *,
        tenant: str | None = None,
    ) -> Ranking | None:
        """The cached ranking, or None when there is none. Raises CacheUnavailable."""
        key = keys.ranking(tenant or self.settings.tenant, event_type, item_id, session_id, user_id)
        try:
            if self._direct is not None:
                raw = self._direct.execute("GET", key, idempotent=True)
            else:
                raw = self._client.get(key)  # type: ignore[union-attr]
        except redis.RedisError as exc:
            raise CacheUnavailable(f"ranking cache unavailable: {type(exc).__name__}") from exc
        return None if raw is None else decode_ranking(raw)

    def order(
        self,
        event_type: str,
        item_id: str,
        session_id: str,
        native: Sequence[str],
        user_id: str | None = None,
        *,
        tenant: str | None = None,
    ) -> list[str]:
        """The page's product ids, personalised when a non-empty ranking is cached."""
        try:
            ranking = self.get(event_type, item_id, session_id, user_id, tenant=tenant)
        except CacheUnavailable as exc:
            log.warning("%s; serving native ordering", exc)
            return list(native)
        return list(native) if ranking is None else merge(ranking.products, native)

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        else:
            self._client.close()  # type: ignore[union-attr]

    def __enter__(self) -> RankingReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRankingReader:
    """asyncio twin of RankingReader (FastAPI, aiohttp): redis.asyncio Connections
    used directly, one per concurrent coroutine; pass `client` to use your own."""

    def __init__(self, settings: Settings | None = None, *, client: aioredis.Redis | None = None) -> None:
        self.settings = settings or Settings()
        self._client = client
        self._direct = (
            None
            if client
            else AsyncDirectRedis(self.settings.redis_url, timeout=0.25, name="fashionai-reader")
        )

    async def get(
        self,
        event_type: str,
        item_id: str,
        session_id: str,
        user_id: str | None = None,
        *,
        tenant: str | None = None,
    ) -> Ranking | None:
        key = keys.ranking(tenant or self.settings.tenant, event_type, item_id, session_id, user_id)
        try:
            if self._direct is not None:
                raw = await self._direct.execute("GET", key, idempotent=True)
            else:
                raw = await self._client.get(key)  # type: ignore[union-attr]
        except redis.RedisError as exc:
            raise CacheUnavailable(f"ranking cache unavailable: {type(exc).__name__}") from exc
        return None if raw is None else decode_ranking(raw)

    async def order(
        self,
        event_type: str,
        item_id: str,
        session_id: str,
        native: Sequence[str],
        user_id: str | None = None,
        *,
        tenant: str | None = None,
    ) -> list[str]:
        try:
            ranking = await self.get(event_type, item_id, session_id, user_id, tenant=tenant)
        except CacheUnavailable as exc:
            log.warning("%s; serving native ordering", exc)
            return list(native)
        return list(native) if ranking is None else merge(ranking.products, native)

    async def aclose(self) -> None:
        if self._direct is not None:
            await self._direct.aclose()
        else:
            await self._client.aclose()  # type: ignore[union-attr]

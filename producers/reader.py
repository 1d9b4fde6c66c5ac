"""Reading cached rankings on the storefront side (page renderers).

A ranking is cached under producers.keys.ranking() as `[enqueued_at_ms, id, ...]`.
`order()` is what a page renderer calls: the ranked ids first, then the rest of
the page's native ordering; the native ordering alone when there is no ranking,
the ranking is empty ("not enough data yet"), or the cache cannot be reached —
a page always renders.

`RankingReader` and `AsyncRankingReader` are thin shells over one `ReaderCore` (key,
decode, merge, the fallback); they only do the GET, on the request path's transport
(producers.transport: direct connections by default, polling for the reply in the sync
reader). Each GET waits at most `2 x 0.25 s` (a connection the server closed while idle is
replaced within the call).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import filterfalse
from typing import Any

import redis
import redis.asyncio as aioredis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.errors import CacheUnavailable
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.producers.transport import AsyncRedisTransport, RedisTransport, Tuning, cache_failures

log = logging.getLogger("fashionai.reader")

READ_TIMEOUT = 0.25  # seconds per wait: a page renders without its ranking rather than late

__all__ = ["AsyncRankingReader", "CacheUnavailable", "Ranking", "RankingReader", "decode_ranking", "merge"]


@dataclass(frozen=True, slots=True)
class Ranking:
    """A cached ranking: product ids best first, and when its event was enqueued."""

    products: list[str]
    enqueued_at: float

    @property
    def empty(self) -> bool:
        """True while Fashion.AI lacks data for this shopper (docs/UPSTREAM.md: use native ordering)."""
        return not self.products


def decode_ranking(raw: bytes | str) -> Ranking:
    """A cached value as a Ranking. Raises CacheUnavailable for a value not in the reader's format."""
    try:
        values = json.loads(raw)
        return Ranking(products=[str(p) for p in values[1:]], enqueued_at=values[0] / 1000.0)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise CacheUnavailable("ranking cache holds a value that is not a ranking") from exc


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


class ReaderCore:
    """Sans-I/O: what a read means, around the one GET the shells make."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tuning = Tuning.of(settings)

    def transport(self) -> dict[str, Any]:
        """The reader's transport: the cache, READ_TIMEOUT per wait, CacheUnavailable on every failure."""
        url, name, failures = self.settings.redis_url, "fashionai-reader", cache_failures()
        return {
            "url": url,
            "timeout": READ_TIMEOUT,
            "name": name,
            "tuning": self.tuning,
            "failures": failures,
        }

    def key(
        self, event_type: str, item_id: str, session_id: str, user_id: str | None, tenant: str | None
    ) -> str:
        return keys.ranking(tenant or self.settings.tenant, event_type, item_id, session_id, user_id)

    @staticmethod
    def ranking(raw: bytes | str | None) -> Ranking | None:
        return None if raw is None else decode_ranking(raw)

    @staticmethod
    def ordered(ranking: Ranking | CacheUnavailable | None, native: Sequence[str]) -> list[str]:
        """The page's order: personalised when `ranking` is a non-empty Ranking, else native."""
        if isinstance(ranking, CacheUnavailable):
            log.warning("%s; serving native ordering", ranking)
            return list(native)
        return list(native) if ranking is None else merge(ranking.products, native)


class RankingReader:
    """Synchronous reader. One per process is enough: thread-safe and fork-aware.

    Pass `client` to read through a redis.Redis of your own instead of the reader's
    connections.
    """

    def __init__(self, settings: Settings | None = None, *, client: redis.Redis | None = None) -> None:
        self._core = ReaderCore(settings or Settings())
        self.settings = self._core.settings
        self._redis = RedisTransport(**self._core.transport(), client=client)

    def get(
        self, event_type: str, item_id: str, session_id: str, user_id: str | None = None,
        *, tenant: str | None = None,
    ) -> Ranking | None:  # fmt: skip
        """The cached ranking, or None when there is none. Raises CacheUnavailable."""
        key = self._core.key(event_type, item_id, session_id, user_id, tenant)
        return self._core.ranking(self._redis.execute("GET", key, retry_stale=True))

    def order(
        self, event_type: str, item_id: str, session_id: str, native: Sequence[str],
        user_id: str | None = None, *, tenant: str | None = None,
    ) -> list[str]:  # fmt: skip
        """The page's product ids, personalised when a non-empty ranking is cached. Never raises
        for the cache: an unreachable cache, or a value that is not a ranking, gives `native`."""
        try:
            ranking = self.get(event_type, item_id, session_id, user_id, tenant=tenant)
        except CacheUnavailable as exc:
            return self._core.ordered(exc, native)
        return self._core.ordered(ranking, native)

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> RankingReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRankingReader:
    """asyncio counterpart of RankingReader (FastAPI, aiohttp): redis.asyncio Connections
    used directly, at most 16 at once; pass `client` to use your own redis.asyncio.Redis."""

    def __init__(self, settings: Settings | None = None, *, client: aioredis.Redis | None = None) -> None:
        self._core = ReaderCore(settings or Settings())
        self.settings = self._core.settings
        self._redis = AsyncRedisTransport(**self._core.transport(), client=client)

    async def get(
        self, event_type: str, item_id: str, session_id: str, user_id: str | None = None,
        *, tenant: str | None = None,
    ) -> Ranking | None:  # fmt: skip
        """RankingReader.get, awaited."""
        key = self._core.key(event_type, item_id, session_id, user_id, tenant)
        return self._core.ranking(await self._redis.execute("GET", key, retry_stale=True))

    async def order(
        self, event_type: str, item_id: str, session_id: str, native: Sequence[str],
        user_id: str | None = None, *, tenant: str | None = None,
    ) -> list[str]:  # fmt: skip
        """RankingReader.order, awaited."""
        try:
            return self._core.ordered(
                await self.get(event_type, item_id, session_id, user_id, tenant=tenant), native
            )
        except CacheUnavailable as exc:
            return self._core.ordered(exc, native)

    async def aclose(self) -> None:
        await self._redis.aclose()

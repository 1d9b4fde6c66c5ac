"""Reading cached rankings on the storefront side (page renderers).

A ranking is cached under producers.keys.ranking() as `[enqueued_at_ms, id, ...]`. Three calls,
one concept each:

- `serve(...)` -> `Served`: the page's products in the order to render, and where that order
  came from (producers.attribution: "cached", "crowd", "native", "fallback", "holdout"; publish-
  and-wait adds "fresh"), after the local checks (producers.stock: stock, with a page size
  the gap backfilled from the native ordering; the recommendation settings as a safety net).
  Never raises for the cache, the storefront's Redis or a check: a page always renders.
- `order(...)` -> `list[str]`: `serve(...).products` (kept for the callers it had).
- `get(...)` -> `Ranking | None`: the raw cached ranking; raises CacheUnavailable.

**Reads never hurt the page.** Each read is bounded as a whole by `FASHIONAI_READ_TIMEOUT_MS`
(the figures behind its default: docs/PERFORMANCE.md, "The read bound"): a Redis that is
stopped, refuses, or is frozen gives the fallback within it. (On the plain path,
`FASHIONAI_DIRECT_REDIS=false`, each wait is bounded by it, and opening a connection may add
one more; a `client=` of yours keeps its own timeouts.) A circuit breaker per Redis
(producers.breaker) then keeps later reads from waiting while it stays down, and lets one read
probe every `FASHIONAI_READ_BREAKER_OPEN_MS`, so reads resume by themselves. Every outcome is
counted in `reader.stats` (producers.attribution.ReadStats).

`ReaderCore` (producers.readcore) holds every decision as sans-I/O plans: generators that
yield the I/O they need (`Command` on the cache or the storefront's Redis, `Call` of a stock
check or facts callable) and are sent each answer, or the exception instead of it.
`RankingReader` and `AsyncRankingReader` only run those plans, on the request path's transport
(producers.transport: direct connections by default, polling for the reply in the sync reader).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import redis
import redis.asyncio as aioredis

from fashionai_pipeline.producers.attribution import ReadStats, Served
from fashionai_pipeline.producers.direct import NOT_READ
from fashionai_pipeline.producers.errors import CacheUnavailable
from fashionai_pipeline.producers.readcore import (
    Call,
    Command,
    Filters,
    Plan,
    Prefetched,
    Query,
    Ranking,
    ReaderCore,
    decode_ranking,
    merge,
    run_plan,
)
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.producers.stock import FactsSource, StockCheck
from fashionai_pipeline.producers.transport import AsyncRedisTransport, RedisTransport

__all__ = [
    "AsyncRankingReader",
    "CacheUnavailable",
    "Call",
    "Command",
    "Filters",
    "Query",
    "Ranking",
    "RankingReader",
    "ReaderCore",
    "decode_ranking",
    "merge",
]


_T = TypeVar("_T", RedisTransport, AsyncRedisTransport)


class _Shell(Generic[_T]):
    """What both shells share: the core, its options, and the transports they build."""

    def __init__(
        self, make: Callable[..., _T], client: redis.Redis | aioredis.Redis | None, settings: Settings | None,
        stock: StockCheck | None, facts: FactsSource | None, filters: Filters | None,
    ) -> None:  # fmt: skip
        self._core = ReaderCore(settings or Settings(), stock=stock, facts=facts, filters=filters)
        self.settings = self._core.settings
        self._redis: _T = make(**self._core.transport("cache"), client=client)
        self._own_cache = client is None  # the cache is settings.redis_url, not a client of the caller's
        self._storefront: _T | None = None
        if self.settings.storefront_redis_url:
            self._storefront = make(**self._core.transport("storefront"))

    def _transport(self, request: Command) -> _T:
        """The transport of the Redis `request` is for."""
        transport = self._redis if request.store == "cache" else self._storefront
        assert transport is not None  # ReaderCore refuses a Redis check without its URL
        return transport

    @property
    def stats(self) -> ReadStats:
        """This reader's counts (sources served, read outcomes, checks, breaker trips)."""
        return self._core.stats

    def first_read(self, q: Query) -> tuple[str, ...] | None:
        """The cache command `serve_query(q)` sends first (ReaderCore.first_read), to send
        ahead to `settings.redis_url`; None when it sends none, or reads through a client of
        the caller's (whose server the settings do not name)."""
        return self._core.first_read(q) if self._own_cache else None

    def _ahead(self, ahead: tuple[tuple[str, ...], Any] | None) -> Prefetched | None:
        """`(command, its reply)` sent ahead, as the plan takes it: an error reply translated as
        this reader's transport translates it; a reply not read (NOT_READ) is no prefetch."""
        if ahead is None or ahead[1] is NOT_READ:
            return None
        args, reply = ahead
        if isinstance(reply, Exception):
            error = self._redis.failures.translate(reply)
            error.__cause__ = reply
            reply = error
        return Prefetched(args, reply)

    @property
    def cache_open(self) -> bool:
        """True while the cache's breaker is open: reads are short-circuited."""
        return self._core.breakers["cache"].is_open

    def in_holdout(self, session_id: str) -> bool:
        """Whether this session is in the holdout (for tagging it in the shop's analytics)."""
        return session_id in self._core.holdout


class RankingReader(_Shell[RedisTransport]):
    """Synchronous reader. One per process is enough: thread-safe and fork-aware.

    `stock`, `facts`, `filters`: the local checks every `serve` applies unless the call
    gives its own (producers.stock; by default those the settings configure). Pass
    `client` to read through a redis.Redis of your own instead of the reader's connections.
    Raises ConfigurationError for settings that cannot work.
    """

    def __init__(
        self, settings: Settings | None = None, *, client: redis.Redis | None = None,
        stock: StockCheck | None = None, facts: FactsSource | None = None, filters: Filters | None = None,
    ) -> None:  # fmt: skip
        super().__init__(RedisTransport, client, settings, stock, facts, filters)

    def _do(self, request: Command | Call) -> Any:
        if isinstance(request, Call):
            try:
                return request.fn(request.ids)
            except Exception as exc:  # the caller's code: a failed check removes nothing
                return exc
        try:
            return self._transport(request).execute(*request.args, retry_stale=True)
        except CacheUnavailable as exc:
            return exc

    def get(
        self, event_type: str, item_id: str, session_id: str, user_id: str | None = None,
        *, tenant: str | None = None,
    ) -> Ranking | None:  # fmt: skip
        """The cached ranking, or None when there is none. Raises CacheUnavailable (also at
        once while the breaker is open). Within the read bound."""
        key = self._core.key(event_type, item_id, session_id, user_id, tenant)
        result: Ranking | None = run_plan(self._core.get_plan(key), self._do)
        return result

    def serve(
        self, event_type: str, item_id: str, session_id: str, native: Sequence[str] | None,
        user_id: str | None = None, *, tenant: str | None = None, page_size: int | None = None,
        stock: StockCheck | None = None, facts: FactsSource | None = None, filters: Filters | None = None,
    ) -> Served:  # fmt: skip
        """The page's products in the order to render, and their source (module doc).

        `native`: the page's own ordering (None: the ranking alone, unmerged). `page_size`:
        at most this many products, gaps left by the stock check backfilled in order.
        Never raises for the cache, the storefront's Redis or a check; raises ValueError for
        a bad `page_size`. Within the read bound per Redis command it makes (one for the
        ranking; one or more for a Redis stock check, one for Redis facts).
        """
        q = Query(event_type, item_id, session_id, user_id, tenant, native, page_size, stock, facts, filters)
        return self.serve_query(q)

    def serve_query(self, q: Query, ahead: tuple[tuple[str, ...], Any] | None = None) -> Served:
        """`serve` for a prepared Query (publish-and-wait passes what its notice brought).
        `ahead`: `first_read(q)` and the reply it got, sent with the page's publish."""
        served: Served = run_plan(self._core.serve_plan(q, self._ahead(ahead)), self._do)
        return served

    def order(
        self, event_type: str, item_id: str, session_id: str, native: Sequence[str],
        user_id: str | None = None, *, tenant: str | None = None,
    ) -> list[str]:  # fmt: skip
        """`serve(...).products`: the page's ids, personalised when a non-empty ranking is cached.
        Never raises for the cache."""
        return self.serve(event_type, item_id, session_id, native, user_id, tenant=tenant).products

    def close(self) -> None:
        self._redis.close()
        if self._storefront is not None:
            self._storefront.close()

    def __enter__(self) -> RankingReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRankingReader(_Shell[AsyncRedisTransport]):
    """asyncio counterpart of RankingReader (FastAPI, aiohttp): redis.asyncio Connections
    used directly, at most 16 at once; pass `client` to use your own redis.asyncio.Redis.
    A stock check or facts callable may be sync or a coroutine function."""

    def __init__(
        self, settings: Settings | None = None, *, client: aioredis.Redis | None = None,
        stock: StockCheck | None = None, facts: FactsSource | None = None, filters: Filters | None = None,
    ) -> None:  # fmt: skip
        super().__init__(AsyncRedisTransport, client, settings, stock, facts, filters)

    async def _do(self, request: Command | Call) -> Any:
        if isinstance(request, Call):
            try:
                answer = request.fn(request.ids)
                return (await answer) if inspect.isawaitable(answer) else answer
            except Exception as exc:
                return exc
        try:
            return await self._transport(request).execute(*request.args, retry_stale=True)
        except CacheUnavailable as exc:
            return exc

    async def _run(self, plan: Plan) -> Any:
        try:
            request = next(plan)
            while True:
                request = plan.send(await self._do(request))
        except StopIteration as stop:
            return stop.value

    async def get(
        self, event_type: str, item_id: str, session_id: str, user_id: str | None = None,
        *, tenant: str | None = None,
    ) -> Ranking | None:  # fmt: skip
        """RankingReader.get, awaited."""
        key = self._core.key(event_type, item_id, session_id, user_id, tenant)
        result: Ranking | None = await self._run(self._core.get_plan(key))
        return result

    async def serve(
        self, event_type: str, item_id: str, session_id: str, native: Sequence[str] | None,
        user_id: str | None = None, *, tenant: str | None = None, page_size: int | None = None,
        stock: StockCheck | None = None, facts: FactsSource | None = None, filters: Filters | None = None,
    ) -> Served:  # fmt: skip
        """RankingReader.serve, awaited."""
        q = Query(event_type, item_id, session_id, user_id, tenant, native, page_size, stock, facts, filters)
        return await self.serve_query(q)

    async def serve_query(self, q: Query, ahead: tuple[tuple[str, ...], Any] | None = None) -> Served:
        """RankingReader.serve_query, awaited."""
        served: Served = await self._run(self._core.serve_plan(q, self._ahead(ahead)))
        return served

    async def order(
        self, event_type: str, item_id: str, session_id: str, native: Sequence[str],
        user_id: str | None = None, *, tenant: str | None = None,
    ) -> list[str]:  # fmt: skip
        """RankingReader.order, awaited."""
        return (await self.serve(event_type, item_id, session_id, native, user_id, tenant=tenant)).products

    async def aclose(self) -> None:
        await self._redis.aclose()
        if self._storefront is not None:
            await self._storefront.aclose()

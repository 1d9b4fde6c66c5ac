"""Rankings at render time: publish the shopper's view and wait, briefly, for its ranking.

A page renderer that publishes a view and then reads the cache finds nothing:
the ranking of that view lands tens of milliseconds later (the worker's batch
window plus one upstream call). `RankingServer.view` publishes the event and
waits up to `wait_ms` for the worker to announce *that* event's ranking
(producers.waiters; the worker side is worker/notify.py), then merges it with
the page's native ordering. Past the bound it serves the best older ranking
for the key, else the native ordering; a cache that fails gives the native
ordering too, labelled "fallback". `AsyncRankingServer` is the asyncio twin.

Every answer is a `Served` (producers.attribution), which says where its order
came from. The decisions (what counts as fresh, the crowd and holdout, the
local stock and settings checks) are the reader's sans-I/O core
(producers.reader.ReaderCore), so publish-and-wait, plain reads, the framework
helpers and the HTTP service answer alike; the two classes here only do the
waiting around it. The reader's bound and circuit breaker protect every cache
read made here; while the cache's breaker is open a view publishes its event
and answers at once, without waiting for a notice that cannot come (the worker
writes and announces rankings on that same Redis). A session in the holdout
is published for but never waited for.

"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from fashionai_pipeline.producers.attribution import Served, Source
from fashionai_pipeline.producers.errors import PublishUnknown
from fashionai_pipeline.producers.event import Event, parse_event
from fashionai_pipeline.producers.message import new_id
from fashionai_pipeline.producers.publisher import AsyncPublisher, Publisher
from fashionai_pipeline.producers.publishing import Receipt
from fashionai_pipeline.producers.readcore import check_page_size
from fashionai_pipeline.producers.reader import (
    AsyncRankingReader,
    Filters,
    Query,
    Ranking,
    RankingReader,
    decode_ranking,
)
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.producers.stock import FactsSource, StockCheck
from fashionai_pipeline.producers.waiters import AsyncReplyHub, ReplyHub

__all__ = ["MAX_WAIT_MS", "AsyncRankingServer", "RankingServer", "Served", "Source", "check_wait"]


@dataclass(frozen=True, slots=True)
class _Checks:
    """A call's page size and local checks (producers.stock); None: the reader's own."""

    page_size: int | None = None
    stock: StockCheck | None = None
    facts: FactsSource | None = None
    filters: Filters | None = None

    def query(
        self,
        ev: Event,
        native: Sequence[str] | None,
        tenant: str | None,
        *,
        since_ms: int | None = None,
        notice: Ranking | None = None,
        message_id: str | None = None,
    ) -> Query:
        return Query(
            ev.eventType, ev.data.id, ev.sessionId, ev.userId, tenant, native, self.page_size,
            self.stock, self.facts, self.filters, since_ms, notice, message_id,
        )  # fmt: skip


MAX_WAIT_MS: Final = 5_000  # a page that waits longer than this has gone out anyway


def check_wait(wait_ms: int) -> float:
    """`wait_ms` as seconds; ValueError naming the field outside 0..MAX_WAIT_MS."""
    if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or not 0 <= wait_ms <= MAX_WAIT_MS:
        raise ValueError(f"wait_ms: must be an integer from 0 to {MAX_WAIT_MS}")
    return wait_ms / 1000


_WAITABLE: Final = frozenset({"published", "unknown"})


def _outcome(publish: Callable[[], Receipt]) -> tuple[str, str | None]:
    """(outcome, message id) of a sync publish; PublishUnknown is the outcome "unknown"."""
    try:
        receipt = publish()
    except PublishUnknown as exc:
        return "unknown", exc.message_ids[0] if exc.message_ids else None
    return receipt.outcome, receipt.id


class RankingServer:
    """Publish-and-wait for WSGI backends (Django, Flask). One per process.

    Thread-safe and fork-safe (gunicorn --preload): it shares the process's
    publisher and reader and one subscriber connection (producers.waiters)
    among all threads; a forked child starts its own on first use.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        publisher: Publisher | None = None,
        reader: RankingReader | None = None,
    ) -> None:
        self.settings = settings or (publisher.settings if publisher else Settings())
        self._own = publisher is None, reader is None
        self.publisher = publisher or Publisher(self.settings)
        self.reader = reader or RankingReader(self.settings)
        self._hub = ReplyHub(self.settings.redis_url)

    def view(
        self,
        event: Event | Mapping[str, Any],
        native: Sequence[str] | None,
        *,
        wait_ms: int = 150,
        tenant: str | None = None,
        page_size: int | None = None,
        stock: StockCheck | None = None,
        facts: FactsSource | None = None,
        filters: Filters | None = None,
    ) -> Served:
        """Publish `event`, wait up to `wait_ms` for its ranking, return the page's order.

        Returns within about `wait_ms` plus one bounded cache read (and the publish's
        own bound when the broker is slow); at once, after the publish, for a session in
        the holdout or while the cache's breaker is open. `page_size`, `stock`,
        `facts`, `filters`: as in RankingReader.serve (producers.stock). Raises InvalidEvent
        (before anything is sent) and ValueError for a bad `wait_ms` or page size;
        raises the publisher's BrokerUnavailable when the broker does not take the
        event and `on_broker_down` is "raise" (with "drop" the drop is counted and the
        cached or native order served, `message_id` None). Never raises for a cache
        failure: that is `source="fallback"`. Not idempotent: each call publishes one
        event.
        """
        ev = parse_event(event)
        check_page_size(page_size)
        checks = _Checks(page_size, stock, facts, filters)
        deadline = time.monotonic() + check_wait(wait_ms)
        if self.reader.in_holdout(ev.sessionId) or self.reader.cache_open:
            receipt = _outcome(lambda: self.publisher.publish(ev, tenant=tenant))
            msg_id = receipt[1] if receipt[0] != "dropped" else None
            return self.reader.serve_query(checks.query(ev, native, tenant, message_id=msg_id))
        msg_id = new_id()
        slot = self._hub.expect(msg_id)  # before publishing: a notice can never come too early
        try:
            # The first call in a process waits for Redis to confirm the subscription, for at
            # most half the bound: past that the event is sent anyway, and a notice missed
            # for want of the subscription is made up by the cache read at the bound.
            self._hub.wait_ready((deadline - time.monotonic()) / 2)
            since_ms = int(time.time() * 1000)
            outcome, _ = _outcome(
                lambda: self.publisher.publish(ev, tenant=tenant, message_id=msg_id, notify=self._hub.token)
            )
            shown_id = msg_id if outcome != "dropped" else None
            notice = None
            if outcome in _WAITABLE and slot.event.wait(max(0.0, deadline - time.monotonic())):
                notice = _decoded(slot.value)
            q = checks.query(ev, native, tenant, since_ms=since_ms, notice=notice, message_id=shown_id)
            return self.reader.serve_query(q)
        finally:
            self._hub.forget(msg_id)

    def read(
        self,
        event_type: str,
        item_id: str,
        session_id: str,
        native: Sequence[str] | None,
        user_id: str | None = None,
        *,
        tenant: str | None = None,
        page_size: int | None = None,
        stock: StockCheck | None = None,
        facts: FactsSource | None = None,
        filters: Filters | None = None,
    ) -> Served:
        """The cached order for a key, without publishing: the reader's `serve`."""
        c = _Checks(page_size, stock, facts, filters)
        return self.reader.serve_query(
            Query(
                event_type,
                item_id,
                session_id,
                user_id,
                tenant,
                native,
                c.page_size,
                c.stock,
                c.facts,
                c.filters,
            )
        )

    def close(self) -> None:
        """Stop listening and close what this server opened (not a publisher or reader passed in)."""
        self._hub.close()
        if self._own[0]:
            self.publisher.close()
        if self._own[1]:
            self.reader.close()

    def __enter__(self) -> RankingServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRankingServer:
    """Publish-and-wait for asyncio backends (FastAPI, Starlette, aiohttp), and reads
    that wait for a ranking not cached yet. One per process and event loop."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        publisher: AsyncPublisher | None = None,
        reader: AsyncRankingReader | None = None,
    ) -> None:
        self.settings = settings or (publisher.settings if publisher else Settings())
        self._own = publisher is None, reader is None
        self.publisher = publisher or AsyncPublisher(self.settings)
        self.reader = reader or AsyncRankingReader(self.settings)
        self.hub = AsyncReplyHub(self.settings.redis_url)

    async def view(
        self,
        event: Event | Mapping[str, Any],
        native: Sequence[str] | None,
        *,
        wait_ms: int = 150,
        tenant: str | None = None,
        page_size: int | None = None,
        stock: StockCheck | None = None,
        facts: FactsSource | None = None,
        filters: Filters | None = None,
    ) -> Served:
        """RankingServer.view for asyncio: the same bound, errors and answers."""
        ev = parse_event(event)
        check_page_size(page_size)
        checks = _Checks(page_size, stock, facts, filters)
        deadline = time.monotonic() + check_wait(wait_ms)
        if self.reader.in_holdout(ev.sessionId) or self.reader.cache_open:
            try:
                receipt = await self.publisher.publish(ev, tenant=tenant)
                msg_id = receipt.id if receipt.outcome != "dropped" else None
            except PublishUnknown as exc:
                msg_id = exc.message_ids[0] if exc.message_ids else None
            return await self.reader.serve_query(checks.query(ev, native, tenant, message_id=msg_id))
        msg_id = new_id()
        future = self.hub.expect(msg_id)
        try:
            await self.hub.wait_ready((deadline - time.monotonic()) / 2)  # as in RankingServer.view
            since_ms = int(time.time() * 1000)
            try:
                receipt = await self.publisher.publish(
                    ev, tenant=tenant, message_id=msg_id, notify=self.hub.token
                )
                outcome = receipt.outcome
            except PublishUnknown:
                outcome = "unknown"
            shown_id = msg_id if outcome != "dropped" else None
            notice = _decoded(await _within(future, deadline)) if outcome in _WAITABLE else None
            q = checks.query(ev, native, tenant, since_ms=since_ms, notice=notice, message_id=shown_id)
            return await self.reader.serve_query(q)
        finally:
            self.hub.forget(msg_id)
            future.cancel()

    async def read(
        self,
        event_type: str,
        item_id: str,
        session_id: str,
        native: Sequence[str] | None,
        user_id: str | None = None,
        *,
        wait_ms: int = 0,
        tenant: str | None = None,
        page_size: int | None = None,
        stock: StockCheck | None = None,
        facts: FactsSource | None = None,
        filters: Filters | None = None,
    ) -> Served:
        """The cached order for a key, without publishing.

        With `wait_ms`, a ranking not cached yet is waited for: the key's channel
        is subscribed (confirmed) before the cache is read, so a ranking written
        at any moment after is announced, and the first one is served ("fresh").
        Announced are the rankings of events published with `notify="key"`
        (the HTTP service's ingest); others are found at the bound by the cache
        read. A crowd answer is waited past like a native one (the shopper's own
        ranking is what the caller waits for); a holdout, a fallback or a cache
        whose breaker is open is answered at once. Raises ValueError for a bad
        `wait_ms` or page size; never for a cache failure.
        """
        c = _Checks(page_size, stock, facts, filters)
        deadline = time.monotonic() + check_wait(wait_ms)
        q = Query(
            event_type, item_id, session_id, user_id, tenant, native, c.page_size, c.stock, c.facts, c.filters
        )
        if not wait_ms or self.reader.in_holdout(session_id) or self.reader.cache_open:
            return await self.reader.serve_query(q)
        from fashionai_pipeline.producers import keys

        key = keys.ranking(tenant or self.settings.tenant, event_type, item_id, session_id, user_id)
        future = await self.hub.watch(key, deadline - time.monotonic())
        try:
            served = await self.reader.serve_query(q)
            if served.source not in ("native", "crowd") or future is None:
                return served
            ranking = _decoded(await _within(future, deadline))
            if ranking is None:
                return await self.reader.serve_query(q)
            # Announced during this wait, so written after the read above found none: new.
            return await self.reader.serve_query(replace(q, since_ms=0, notice=ranking))
        finally:
            if future is not None:
                self.hub.unwatch(key, future)

    async def aclose(self) -> None:
        """Stop listening and close what this server opened."""
        await self.hub.aclose()
        if self._own[0]:
            await self.publisher.aclose()
        if self._own[1]:
            await self.reader.aclose()


def _decoded(value: str | None) -> Ranking | None:
    """A notice's ranking value, or None for none or one that does not decode (read the cache then)."""
    if value is None:
        return None
    try:
        return decode_ranking(value)
    except (ValueError, TypeError, IndexError, KeyError):
        return None


async def _within(future: asyncio.Future[str], deadline: float) -> str | None:
    """The future's value if it is set before `deadline` (monotonic), else None."""
    remaining = deadline - time.monotonic()
    if remaining <= 0 and not future.done():
        return None
    try:
        return await asyncio.wait_for(asyncio.shield(future), max(remaining, 0.0))
    except TimeoutError:
        return None

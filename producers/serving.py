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
came from. The decisions of a read (what counts as fresh, the crowd and holdout,
the local stock and settings checks) are the reader's sans-I/O core
(producers.readcore.ReaderCore), so publish-and-wait, plain reads, the framework
helpers and the HTTP service answer alike; those of the waiting around it (the
checks, the deadline, whether to wait, the query served) are publish-and-wait's
own (producers.servercore.ServerCore). The two classes here only do the I/O their
plans ask for. The reader's bound and circuit breaker protect every cache
read made here. A notice cannot come through a cache Redis that is down (the
worker writes and announces rankings on that same Redis), so a view publishes
its event and answers after one bounded read, without waiting, while the
cache's breaker is open, while the hub cannot listen (its connection refused,
failing, lost, or its SUBSCRIBE unanswered), or when the hub has not
subscribed within the read bound and that read fails; a view already waiting
when the hub loses its connection is released to read the cache once
(producers.servercore, producers.waiters). A session in the holdout is
published for but never waited for.

"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from fashionai_pipeline.producers.attribution import Served, Source
from fashionai_pipeline.producers.errors import PublishUnknown
from fashionai_pipeline.producers.event import Event
from fashionai_pipeline.producers.publisher import AsyncPublisher, Publisher
from fashionai_pipeline.producers.publishing import Receipt
from fashionai_pipeline.producers.reader import AsyncRankingReader, Filters, RankingReader
from fashionai_pipeline.producers.servercore import (
    MAX_WAIT_MS,
    Checks,
    Expect,
    Plan,
    Publish,
    Serve,
    ServerCore,
    Wait,
    Watch,
    check_wait,
)
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.producers.stock import FactsSource, StockCheck
from fashionai_pipeline.producers.waiters import AsyncReplyHub, ReplyHub

__all__ = ["MAX_WAIT_MS", "AsyncRankingServer", "RankingServer", "Served", "Source", "check_wait"]

_P = TypeVar("_P", Publisher, AsyncPublisher)
_R = TypeVar("_R", RankingReader, AsyncRankingReader)


class _Shell(Generic[_P, _R]):
    """What both servers share: the publisher and reader (made unless passed in), the core."""

    def __init__(
        self, settings: Settings | None, publisher: _P | None, reader: _R | None,
        make: tuple[Callable[[Settings], _P], Callable[[Settings], _R]],
    ) -> None:  # fmt: skip
        self.settings = settings or (publisher.settings if publisher else Settings())
        self._own = publisher is None, reader is None
        self.publisher: _P = publisher or make[0](self.settings)
        self.reader: _R = reader or make[1](self.settings)
        self._core = ServerCore(self.settings, self.reader)


class RankingServer(_Shell[Publisher, RankingReader]):
    """Publish-and-wait for WSGI backends (Django, Flask). One per process.

    Thread-safe and fork-safe (gunicorn --preload): it shares the process's
    publisher and reader and one subscriber connection (producers.waiters)
    among all threads; a forked child starts its own on first use.
    """

    def __init__(
        self, settings: Settings | None = None, *, publisher: Publisher | None = None,
        reader: RankingReader | None = None,
    ) -> None:  # fmt: skip
        super().__init__(settings, publisher, reader, (Publisher, RankingReader))
        self._hub = ReplyHub(self.settings.redis_url)

    def view(
        self, event: Event | Mapping[str, Any], native: Sequence[str] | None, *, wait_ms: int = 150,
        tenant: str | None = None, page_size: int | None = None, stock: StockCheck | None = None,
        facts: FactsSource | None = None, filters: Filters | None = None,
    ) -> Served:  # fmt: skip
        """Publish `event`, wait up to `wait_ms` for its ranking, return the page's order.

        Returns within about `wait_ms` plus one bounded cache read (and the publish's
        own bound when the broker is slow); after the publish and one bounded read
        (`FASHIONAI_READ_TIMEOUT_MS`), without waiting, for a session in the holdout,
        while the cache's breaker is open or the hub cannot listen (the cache refused,
        failing, silent; for a hub not subscribed yet, after waiting one read bound for
        it); and soon after the hub loses its connection mid-wait. `page_size`, `stock`,
        `facts`, `filters`: as in RankingReader.serve (producers.stock). Raises InvalidEvent
        (before anything is sent) and ValueError for a bad `wait_ms` or page size;
        raises the publisher's BrokerUnavailable when the broker does not take the
        event and `on_broker_down` is "raise" (with "drop" the drop is counted and the
        cached or native order served, `message_id` None). Never raises for a cache
        failure: that is `source="fallback"`. Not idempotent: each call publishes one
        event.
        """
        checks = Checks(page_size, stock, facts, filters)
        return self._run(self._core.view_plan(event, native, wait_ms, tenant, checks, self._hub.token))

    def read(
        self, event_type: str, item_id: str, session_id: str, native: Sequence[str] | None,
        user_id: str | None = None, *, tenant: str | None = None, page_size: int | None = None,
        stock: StockCheck | None = None, facts: FactsSource | None = None, filters: Filters | None = None,
    ) -> Served:  # fmt: skip
        """The cached order for a key, without publishing: the reader's `serve`."""
        checks = Checks(page_size, stock, facts, filters)
        plan = self._core.read_plan(event_type, item_id, session_id, native, user_id, 0, tenant, checks)
        return self._run(plan)

    def _run(self, plan: Plan) -> Served:
        """Do what `plan` asks (producers.servercore); the notice it expected is forgotten at its end."""
        expected: str | None = None
        slot = None
        try:
            request = next(plan)
            while True:
                answer: Any = None
                if isinstance(request, Publish):
                    answer = _answer(self.publisher.publish, request)
                elif isinstance(request, Expect):
                    expected, slot = request.message_id, self._hub.expect(request.message_id)
                elif isinstance(request, Wait) and request.until == "ready":
                    answer = self._hub.wait_ready(request.timeout)
                elif isinstance(request, Wait) and slot is not None:
                    answer = slot.value if slot.event.wait(request.timeout) else None
                elif isinstance(request, Serve):
                    answer = self.reader.serve_query(request.query)
                request = plan.send(answer)
        except StopIteration as stop:
            served: Served = stop.value
            return served
        finally:
            if expected is not None:
                self._hub.forget(expected)

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


class AsyncRankingServer(_Shell[AsyncPublisher, AsyncRankingReader]):
    """Publish-and-wait for asyncio backends (FastAPI, Starlette, aiohttp), and reads
    that wait for a ranking not cached yet. One per process and event loop."""

    def __init__(
        self, settings: Settings | None = None, *, publisher: AsyncPublisher | None = None,
        reader: AsyncRankingReader | None = None,
    ) -> None:  # fmt: skip
        super().__init__(settings, publisher, reader, (AsyncPublisher, AsyncRankingReader))
        self.hub = AsyncReplyHub(self.settings.redis_url)

    async def view(
        self, event: Event | Mapping[str, Any], native: Sequence[str] | None, *, wait_ms: int = 150,
        tenant: str | None = None, page_size: int | None = None, stock: StockCheck | None = None,
        facts: FactsSource | None = None, filters: Filters | None = None,
    ) -> Served:  # fmt: skip
        """RankingServer.view for asyncio: the same bound, errors and answers."""
        checks = Checks(page_size, stock, facts, filters)
        # The hub's token once bound to this loop and process (a new loop or a forked child
        # gets a new one): the channel the notice is published on is the one listened on.
        token = self.hub.bind()
        return await self._run(self._core.view_plan(event, native, wait_ms, tenant, checks, token))

    async def read(
        self, event_type: str, item_id: str, session_id: str, native: Sequence[str] | None,
        user_id: str | None = None, *, wait_ms: int = 0, tenant: str | None = None,
        page_size: int | None = None, stock: StockCheck | None = None, facts: FactsSource | None = None,
        filters: Filters | None = None,
    ) -> Served:  # fmt: skip
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
        checks = Checks(page_size, stock, facts, filters)
        plan = self._core.read_plan(event_type, item_id, session_id, native, user_id, wait_ms, tenant, checks)
        return await self._run(plan)

    async def _run(self, plan: Plan) -> Served:
        """RankingServer._run, awaited; a key watched is unwatched at the plan's end."""
        expected: str | None = None
        watched: str | None = None
        future: asyncio.Future[str | None] | None = None
        try:
            request = next(plan)
            while True:
                answer: Any = None
                if isinstance(request, Publish):
                    try:
                        answer = await self.publisher.publish(
                            request.event, tenant=request.tenant, message_id=request.message_id,
                            notify=request.notify,
                        )  # fmt: skip
                    except PublishUnknown as exc:
                        answer = exc
                elif isinstance(request, Expect):
                    expected, future = request.message_id, self.hub.expect(request.message_id)
                elif isinstance(request, Wait) and request.until == "ready":
                    answer = await self.hub.wait_ready(request.timeout)
                elif isinstance(request, Watch):
                    future = await self.hub.watch(request.key, request.timeout)
                    watched = request.key if future is not None else None
                    answer = future is not None
                elif isinstance(request, Wait) and future is not None:
                    answer = await _within(future, request.timeout)
                elif isinstance(request, Serve):
                    answer = await self.reader.serve_query(request.query)
                request = plan.send(answer)
        except StopIteration as stop:
            served: Served = stop.value
            return served
        finally:
            if expected is not None and future is not None:
                self.hub.forget(expected)
                future.cancel()
            if watched is not None and future is not None:
                self.hub.unwatch(watched, future)

    async def aclose(self) -> None:
        """Stop listening and close what this server opened."""
        await self.hub.aclose()
        if self._own[0]:
            await self.publisher.aclose()
        if self._own[1]:
            await self.reader.aclose()


def _answer(publish: Callable[..., Receipt], r: Publish) -> Receipt | PublishUnknown:
    """What a sync publish answers `r`: its receipt, or the PublishUnknown it raised."""
    try:
        return publish(r.event, tenant=r.tenant, message_id=r.message_id, notify=r.notify)
    except PublishUnknown as exc:
        return exc


async def _within(future: asyncio.Future[str | None], timeout: float) -> str | None:
    """The future's value if it is set within `timeout` seconds (None: the hub's connection
    was lost), else None."""
    if timeout <= 0 and not future.done():
        return None
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout)
    except TimeoutError:
        return None

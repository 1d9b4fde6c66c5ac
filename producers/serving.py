"""Rankings at render time: publish the shopper's view and wait, briefly, for its ranking.

A page renderer that publishes a view and then reads the cache finds nothing:
the ranking of that view lands tens of milliseconds later (the worker's batch
window plus one upstream call). `RankingServer.view` publishes the event and
waits up to `wait_ms` for the worker to announce *that* event's ranking
(producers.waiters; the worker side is worker/notify.py), then merges it with
the page's native ordering. Past the bound it serves the best older ranking
for the key, else the native ordering; a cache that fails gives the native
ordering too, labelled "fallback". `AsyncRankingServer` is the asyncio twin.

Every answer is a `Served`, which says where its order came from. The
decisions (what counts as fresh, how an answer is built) are in the sans-I/O
function `served_from`; the two classes only do the I/O around it.

Freshness without the event's timestamp: the publisher stamps the envelope
with `time.time()` during `publish`, so a cached ranking whose enqueue time is
not before the moment the call began publishing is this event's ranking (or
that of a later event for the same key, which is as fresh). That is how a
ranking is still recognised as fresh when its notice was lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from fashionai_pipeline.producers.errors import CacheUnavailable, PublishUnknown
from fashionai_pipeline.producers.event import Event, parse_event
from fashionai_pipeline.producers.message import new_id
from fashionai_pipeline.producers.publisher import AsyncPublisher, Publisher
from fashionai_pipeline.producers.reader import (
    AsyncRankingReader,
    Ranking,
    RankingReader,
    decode_ranking,
    merge,
)
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.producers.waiters import AsyncReplyHub, ReplyHub

Source = Literal["fresh", "cached", "crowd", "native", "fallback", "holdout"]
MAX_WAIT_MS: Final = 5_000  # a page that waits longer than this has gone out anyway


@dataclass(frozen=True, slots=True)
class Served:
    """What a page renders, and where its order came from.

    `source`: "fresh" the ranking of this very event (or a newer one for the
    key); "cached" an older ranking for the key; "native" no ranking, or an
    empty one (Fashion.AI lacks data yet); "fallback" the cache failed, so the
    native ordering. ("crowd" and "holdout" are reserved for later sources.)
    `age_ms`: how old the ranking used is (since its event was enqueued), for
    fresh/cached/crowd; else None. `message_id`: the published event's id
    (publish-and-wait), None when nothing was published.
    """

    products: list[str]
    source: Source
    age_ms: int | None
    message_id: str | None = None


def served_from(
    ranking: Ranking | None,
    native: Sequence[str] | None,
    *,
    since_ms: int | None,
    now: float,
    message_id: str | None = None,
) -> Served:
    """The answer for a ranking found (or not) in the cache or in a notice. Pure.

    `since_ms`: the ms timestamp at which the call began publishing (None for a
    plain read); a ranking enqueued at or after it is "fresh". `native` None:
    the ranking itself, not merged (a caller that has no native list yet).
    """
    if ranking is None or ranking.empty:
        return Served(list(native or ()), "native", None, message_id)
    enqueued_ms = round(ranking.enqueued_at * 1000)
    age = max(0, round(now * 1000) - enqueued_ms)
    fresh = since_ms is not None and enqueued_ms >= since_ms
    products = list(dict.fromkeys(ranking.products)) if native is None else merge(ranking.products, native)
    return Served(products, "fresh" if fresh else "cached", age, message_id)


def fallback(native: Sequence[str] | None, message_id: str | None = None) -> Served:
    """The answer when the cache failed: the native ordering, labelled so."""
    return Served(list(native or ()), "fallback", None, message_id)


def check_wait(wait_ms: int) -> float:
    """`wait_ms` as seconds; ValueError naming the field outside 0..MAX_WAIT_MS."""
    if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or not 0 <= wait_ms <= MAX_WAIT_MS:
        raise ValueError(f"wait_ms: must be an integer from 0 to {MAX_WAIT_MS}")
    return wait_ms / 1000


_WAITABLE: Final = frozenset({"published", "unknown"})


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
    ) -> Served:
        """Publish `event`, wait up to `wait_ms` for its ranking, return the page's order.

        Returns within about `wait_ms` plus one cache read (and the publish's
        own bound when the broker is slow). Raises InvalidEvent (before
        anything is sent) and ValueError for a bad `wait_ms`; raises the
        publisher's BrokerUnavailable when the broker does not take the event
        and `on_broker_down` is "raise" (with "drop" the drop is counted and
        the cached or native order served, `message_id` None). Never raises
        for a cache failure: that is `source="fallback"`. Not idempotent: each
        call publishes one event.
        """
        ev = parse_event(event)
        deadline = time.monotonic() + check_wait(wait_ms)
        msg_id = new_id()
        slot = self._hub.expect(msg_id)  # before publishing: a notice can never come too early
        try:
            # The first call in a process waits for Redis to confirm the subscription, for at
            # most half the bound: past that the event is sent anyway, and a notice missed
            # for want of the subscription is made up by the cache read at the bound.
            self._hub.wait_ready((deadline - time.monotonic()) / 2)
            since_ms = int(time.time() * 1000)
            try:
                receipt = self.publisher.publish(ev, tenant=tenant, message_id=msg_id, notify=self._hub.token)
                outcome = receipt.outcome
            except PublishUnknown:
                outcome = "unknown"
            shown_id = msg_id if outcome != "dropped" else None
            if outcome in _WAITABLE and slot.event.wait(max(0.0, deadline - time.monotonic())):
                ranking = _decoded(slot.value)
                if ranking is not None:
                    return served_from(
                        ranking, native, since_ms=since_ms, now=time.time(), message_id=shown_id
                    )
            return self._read(ev, native, tenant, since_ms, shown_id)
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
    ) -> Served:
        """The cached order for a key, without publishing: "cached", "native" or "fallback"."""
        return self._read_parts(event_type, item_id, session_id, user_id, native, tenant, None, None)

    def _read(
        self,
        ev: Event,
        native: Sequence[str] | None,
        tenant: str | None,
        since_ms: int | None,
        msg_id: str | None,
    ) -> Served:
        return self._read_parts(
            ev.eventType, ev.data.id, ev.sessionId, ev.userId, native, tenant, since_ms, msg_id
        )

    def _read_parts(
        self,
        event_type: str,
        item_id: str,
        session_id: str,
        user_id: str | None,
        native: Sequence[str] | None,
        tenant: str | None,
        since_ms: int | None,
        msg_id: str | None,
    ) -> Served:
        try:
            ranking = self.reader.get(event_type, item_id, session_id, user_id, tenant=tenant)
        except CacheUnavailable:
            return fallback(native, msg_id)
        return served_from(ranking, native, since_ms=since_ms, now=time.time(), message_id=msg_id)

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
    ) -> Served:
        """RankingServer.view for asyncio: the same bound, errors and answers."""
        ev = parse_event(event)
        deadline = time.monotonic() + check_wait(wait_ms)
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
            if outcome in _WAITABLE:
                ranking = _decoded(await _within(future, deadline))
                if ranking is not None:
                    return served_from(
                        ranking, native, since_ms=since_ms, now=time.time(), message_id=shown_id
                    )
            return await self._read(
                ev.eventType, ev.data.id, ev.sessionId, ev.userId, native, tenant, since_ms, shown_id
            )
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
    ) -> Served:
        """The cached order for a key, without publishing.

        With `wait_ms`, a ranking not cached yet is waited for: the key's channel
        is subscribed (confirmed) before the cache is read, so a ranking written
        at any moment after is announced, and the first one is served ("fresh").
        Announced are the rankings of events published with `notify="key"`
        (the HTTP service's ingest); others are found at the bound by the cache
        read. Raises ValueError for a bad `wait_ms`; never for a cache failure.
        """
        deadline = time.monotonic() + check_wait(wait_ms)
        key_args = (event_type, item_id, session_id, user_id, native, tenant)
        if not wait_ms:
            return await self._read(*key_args, None, None)
        from fashionai_pipeline.producers import keys

        key = keys.ranking(tenant or self.settings.tenant, event_type, item_id, session_id, user_id)
        future = await self.hub.watch(key, deadline - time.monotonic())
        try:
            served = await self._read(*key_args, None, None)
            if served.source != "native" or future is None:
                return served
            ranking = _decoded(await _within(future, deadline))
            if ranking is None:
                return await self._read(*key_args, None, None)
            # Announced during this wait, so written after the read above found none: new.
            return served_from(ranking, native, since_ms=0, now=time.time())
        finally:
            if future is not None:
                self.hub.unwatch(key, future)

    async def _read(
        self,
        event_type: str,
        item_id: str,
        session_id: str,
        user_id: str | None,
        native: Sequence[str] | None,
        tenant: str | None,
        since_ms: int | None,
        msg_id: str | None,
    ) -> Served:
        try:
            ranking = await self.reader.get(event_type, item_id, session_id, user_id, tenant=tenant)
        except CacheUnavailable:
            return fallback(native, msg_id)
        return served_from(ranking, native, since_ms=since_ms, now=time.time(), message_id=msg_id)

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

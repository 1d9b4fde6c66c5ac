"""What the framework integrations share: who the shopper is, and one page view.

The shopper's **session id** is a random, opaque id in a first-party cookie the
integration owns (`fashionai_sid` by default), not the framework's own session:

- Django's session key *is* the login credential: whoever holds it is logged in
  as the shopper. It must never leave the server, yet a session id is sent to
  Fashion.AI and written into cache keys, logs and dead letters.
- Django rotates its session key at login (`cycle_key`), which would cut a
  shopper's browsing history in two at the moment it matters most.
- Flask's and Starlette's sessions are signed cookies with no id at all.

So one cookie, the same in all three frameworks: minted on a shopper's first page,
`HttpOnly`, `SameSite=Lax`, `Secure` on HTTPS, lasting for the browser session.
A cookie value that is not one of ours (wrong shape or length) is replaced, so a
hostile client cannot push an odd or huge id upstream. The **user id** comes
from the framework's own authentication (each module says how) and is left out
for an anonymous shopper, as the API reference asks (docs/UPSTREAM.md).

`PageViews.serve` / `AsyncPageViews.serve` is the one call site every page goes
through: publish the page's event and order the page (`personalize` is its
`.products`). By default it publishes, then reads what is cached
(`RankingReader.serve`); with `wait_ms` it is publish-and-wait
(`RankingServer.view`: the page waits up to that long for this view's own
ranking). Either way the answer is a `Served` whose `source` says what ordered
the page, after the local checks the views were built with (`stock`, `facts`,
`filters`; producers.stock) and the call's `page_size`. The frameworks'
helpers call `personalize`; for the source, call `serve` on their `views`.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Generic, Literal, TypeVar

from fashionai_pipeline.producers.attribution import Served
from fashionai_pipeline.producers.errors import FashionAIError
from fashionai_pipeline.producers.event import EventType
from fashionai_pipeline.producers.publisher import AsyncPublisher, Publisher
from fashionai_pipeline.producers.publishing import Receipt
from fashionai_pipeline.producers.readcore import Query
from fashionai_pipeline.producers.reader import AsyncRankingReader, Filters, RankingReader
from fashionai_pipeline.producers.serving import AsyncRankingServer, RankingServer
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.producers.stock import FactsSource, StockCheck

log = logging.getLogger("fashionai.integrations")

SESSION_COOKIE: Final = "fashionai_sid"
# 32 hex digits is what we mint; accept a little more latitude (our own past
# formats, a shop's own ids) but nothing that could not be an opaque token.
_SESSION_ID: Final = re.compile(r"[A-Za-z0-9_-]{16,128}")

PageKind = Literal["product", "category", "look", "shelf"]
PAGE_EVENTS: Final[dict[str, EventType]] = {
    "product": "productView",
    "category": "categoryView",
    "look": "shopTheLook",
    "shelf": "customShelf",
}


def new_session_id() -> str:
    """A fresh shopper session id: 128 random bits as 32 hex digits."""
    return secrets.token_hex(16)


def session_from_cookie(value: str | None) -> tuple[str, bool]:
    """(session id, is new) for a cookie value: the value if it is one of ours, else a new id."""
    if value is not None and _SESSION_ID.fullmatch(value):
        return value, False
    return new_session_id(), True


@dataclass(frozen=True, slots=True)
class Shopper:
    """Who is looking at the page: the session cookie's id and, when logged in, the user id."""

    session_id: str
    user_id: str | None = None
    new_session: bool = False


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """How the session cookie is written. `secure=None`: Secure exactly when the request is HTTPS."""

    name: str = SESSION_COOKIE
    secure: bool | None = None
    samesite: Literal["Lax", "Strict", "None"] = "Lax"
    domain: str | None = None
    path: str = "/"

    def is_secure(self, request_is_https: bool) -> bool:
        return request_is_https if self.secure is None else self.secure


def event_for(kind: PageKind | EventType, item_id: str) -> tuple[EventType, str]:
    """The event type and id a page publishes: a page kind ("product", ...) or an event type."""
    event_type = PAGE_EVENTS.get(kind, kind)
    return event_type, ("" if event_type == "customShelf" else item_id)  # type: ignore[return-value]


def event_mapping(event_type: EventType, item_id: str, shopper: Shopper) -> dict[str, object]:
    """The Fashion.AI body of a page view; Publisher.publish validates it (InvalidEvent names the field)."""
    body: dict[str, object] = {
        "sessionId": shopper.session_id,
        "eventType": event_type,
        "data": {"id": item_id},
    }
    if shopper.user_id is not None:
        body["userId"] = shopper.user_id
    return body


@dataclass
class PageStats:
    """What the page views of this process did (approximate under threads: plain counters)."""

    published: int = 0
    not_published: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def counted(self, published: bool) -> None:
        if published:
            self.published += 1
        else:
            self.not_published += 1  # dropped: on_broker_down="drop", already logged

    def failed(self, exc: BaseException) -> None:
        self.not_published += 1
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


_P = TypeVar("_P", Publisher, AsyncPublisher)
_R = TypeVar("_R", RankingReader, AsyncRankingReader)
_S = TypeVar("_S", RankingServer, AsyncRankingServer)

# A call the page-view shells make (awaited in AsyncPageViews), and what it answers.
_Call = Callable[[], Any]
_Answer = Served | Receipt | FashionAIError


class _Views(Generic[_P, _R, _S]):
    """What both page-view classes share: their parts (made unless passed in), counts and decisions."""

    def __init__(
        self, settings: Settings | None, publisher: _P | None, reader: _R | None,
        checks: tuple[StockCheck | None, FactsSource | None, Filters | None], wait_ms: int,
        make: tuple[Callable[[Settings], _P], Callable[..., _R], Callable[..., _S]],
    ) -> None:  # fmt: skip
        stock, facts, filters = checks
        self.settings = settings or (publisher.settings if publisher else Settings())
        self.publisher: _P = publisher or make[0](self.settings)
        self.reader: _R = reader or make[1](self.settings, stock=stock, facts=facts, filters=filters)
        self.wait_ms = wait_ms
        self._server: _S | None = None
        if wait_ms:
            self._server = make[2](self.settings, publisher=self.publisher, reader=self.reader)
        self.stats = PageStats()

    def _page(
        self, kind: PageKind | EventType, item_id: str, shopper: Shopper, native: Sequence[str],
        page_size: int | None,
    ) -> tuple[_Call, Callable[[_Answer], Served | _Call]]:  # fmt: skip
        """`serve`'s decisions (PageViews.serve): the call that publishes the page's event (the
        server's view with `wait_ms`), and what follows from its answer or the FashionAIError it
        raised (counted in `stats`): that answer, or the read that gives it."""
        event_type, event_id = event_for(kind, item_id)
        body = event_mapping(event_type, event_id, shopper)
        read = partial(
            self.reader.serve, event_type, event_id, shopper.session_id, native, shopper.user_id,
            page_size=page_size,
        )  # fmt: skip

        def then(answer: _Answer) -> Served | _Call:
            if isinstance(answer, FashionAIError):
                self._failed(event_type, answer)
            elif isinstance(answer, Served):
                self._count(answer.message_id is not None)
                return answer
            else:
                self._count(bool(answer))
            return read

        if self._server is not None:
            return partial(self._server.view, body, native, wait_ms=self.wait_ms, page_size=page_size), then
        # One round trip for the publish and the read when the broker is the cache's Redis:
        # the read goes along with the publish (Publisher.publish_with_read), and the
        # reader's plan takes its reply (or reads on its own when it was not read).
        q = Query(event_type, event_id, shopper.session_id, shopper.user_id, None, native, page_size)
        first = self.reader.first_read(q)
        if first is None:
            return partial(self.publisher.publish, body), then
        along = partial(
            self.publisher.publish_with_read, body, first, read_url=self.reader.settings.redis_url
        )

        def then_along(answer: _Answer | tuple[Receipt, Any]) -> Served | _Call:
            if not isinstance(answer, tuple):
                then(answer)  # a FashionAIError: counted and logged
                return partial(self.reader.serve_query, q)
            receipt, reply = answer
            self._count(bool(receipt))
            return partial(self.reader.serve_query, q, (first, reply))

        return along, then_along

    def _count(self, published: bool) -> None:
        self.stats.counted(published)

    def _failed(self, event_type: str, exc: FashionAIError) -> None:
        self.stats.failed(exc)
        log.warning("page view not published (%s): %s", event_type, exc)


class PageViews(_Views[Publisher, RankingReader, RankingServer]):
    """The sync page-view call (Django, Flask). One per process: fork-safe and thread-safe,
    because Publisher and RankingReader are (each opens its own connections in a forked child).

    `stock`, `facts`, `filters`: the local checks of every page (producers.stock; by
    default those the settings configure), given to the reader this builds (a `reader`
    passed in keeps its own). `wait_ms`: 0 publishes and reads what is cached; more waits
    up to that long for the view's own ranking (publish-and-wait).
    """

    def __init__(
        self, settings: Settings | None = None, *, publisher: Publisher | None = None,
        reader: RankingReader | None = None, stock: StockCheck | None = None,
        facts: FactsSource | None = None, filters: Filters | None = None, wait_ms: int = 0,
    ) -> None:  # fmt: skip
        make = Publisher, RankingReader, RankingServer
        super().__init__(settings, publisher, reader, (stock, facts, filters), wait_ms, make)

    def serve(
        self, kind: PageKind | EventType, item_id: str, shopper: Shopper, native: Sequence[str],
        *, page_size: int | None = None,
    ) -> Served:  # fmt: skip
        """Publish the page's event and return `native` in the order to render, with its source.

        Never raises for the pipeline's sake: a broker that is down or an id the
        contract refuses (say, a 600-character product slug) is logged and counted
        in `stats`, and the page still renders; a cache that does not answer gives
        the native order (`source="fallback"`, within the reader's bound). Raises
        ValueError for a bad `page_size`. Call it once per page view.
        """
        call, then = self._page(kind, item_id, shopper, native, page_size)
        try:
            answer = call()
        except FashionAIError as exc:
            answer = exc
        after = then(answer)
        return after if isinstance(after, Served) else after()

    def personalize(
        self, kind: PageKind | EventType, item_id: str, shopper: Shopper, native: Sequence[str]
    ) -> list[str]:
        """`serve(...).products`: the page's product ids in the order to render."""
        return self.serve(kind, item_id, shopper, native).products

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.publisher.close()
        self.reader.close()


class AsyncPageViews(_Views[AsyncPublisher, AsyncRankingReader, AsyncRankingServer]):
    """The asyncio twin (FastAPI, Starlette): AsyncPublisher and AsyncRankingReader.

    Create it anywhere; it connects on first use. Call `aclose()` at application
    shutdown, on the event loop that used it. Options as in PageViews.
    """

    def __init__(
        self, settings: Settings | None = None, *, publisher: AsyncPublisher | None = None,
        reader: AsyncRankingReader | None = None, stock: StockCheck | None = None,
        facts: FactsSource | None = None, filters: Filters | None = None, wait_ms: int = 0,
    ) -> None:  # fmt: skip
        make = AsyncPublisher, AsyncRankingReader, AsyncRankingServer
        super().__init__(settings, publisher, reader, (stock, facts, filters), wait_ms, make)

    async def serve(
        self, kind: PageKind | EventType, item_id: str, shopper: Shopper, native: Sequence[str],
        *, page_size: int | None = None,
    ) -> Served:  # fmt: skip
        """PageViews.serve, awaited: the event loop never waits on the broker or cache."""
        call, then = self._page(kind, item_id, shopper, native, page_size)
        try:
            answer = await call()
        except FashionAIError as exc:
            answer = exc
        after = then(answer)
        return after if isinstance(after, Served) else await after()

    async def personalize(
        self, kind: PageKind | EventType, item_id: str, shopper: Shopper, native: Sequence[str]
    ) -> list[str]:
        """`serve(...).products`, awaited."""
        return (await self.serve(kind, item_id, shopper, native)).products

    async def aclose(self) -> None:
        if self._server is not None:
            await self._server.aclose()  # its hub; the publisher and reader are ours
        await self.publisher.aclose()
        await self.reader.aclose()

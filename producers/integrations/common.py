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
for an anonymous shopper, as the seed asks.

`PageViews.personalize` / `AsyncPageViews.personalize` is the one call site
every page goes through: publish the page's event, then read the ranking and
merge it with the page's native ordering. A later publish-and-wait call
replaces these two lines in one place.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from fashionai_pipeline.producers.errors import FashionAIError
from fashionai_pipeline.producers.event import EventType
from fashionai_pipeline.producers.publisher import AsyncPublisher, Publisher
from fashionai_pipeline.producers.reader import AsyncRankingReader, RankingReader
from fashionai_pipeline.producers.settings import Settings

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
    """The seed body of a page view; Publisher.publish validates it (InvalidEvent names the field)."""
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

    def failed(self, exc: BaseException) -> None:
        self.not_published += 1
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


class PageViews:
    """The sync page-view call (Django, Flask). One per process: fork-safe and thread-safe,
    because Publisher and RankingReader are (each opens its own connections in a forked child).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        publisher: Publisher | None = None,
        reader: RankingReader | None = None,
    ) -> None:
        self.settings = settings or (publisher.settings if publisher else Settings())
        self.publisher = publisher or Publisher(self.settings)
        self.reader = reader or RankingReader(self.settings)
        self.stats = PageStats()

    def personalize(
        self, kind: PageKind | EventType, item_id: str, shopper: Shopper, native: Sequence[str]
    ) -> list[str]:
        """Publish the page's event, then return `native` in the shopper's ranked order.

        Never raises for the pipeline's sake: a broker that is down or an id the
        contract refuses (say, a 600-character product slug) is logged and counted
        in `stats`, and the page still renders; a cache that does not answer gives
        the native order (RankingReader.order). Call it once per page view.
        """
        event_type, event_id = event_for(kind, item_id)
        try:
            if self.publisher.publish(event_mapping(event_type, event_id, shopper)):
                self.stats.published += 1
            else:
                self.stats.not_published += 1  # dropped: on_broker_down="drop", already logged
        except FashionAIError as exc:
            self.stats.failed(exc)
            log.warning("page view not published (%s): %s", event_type, exc)
        return self.reader.order(event_type, event_id, shopper.session_id, native, shopper.user_id)

    def close(self) -> None:
        self.publisher.close()
        self.reader.close()


class AsyncPageViews:
    """The asyncio twin (FastAPI, Starlette): AsyncPublisher and AsyncRankingReader.

    Create it anywhere; it connects on first use. Call `aclose()` at application
    shutdown, on the event loop that used it.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        publisher: AsyncPublisher | None = None,
        reader: AsyncRankingReader | None = None,
    ) -> None:
        self.settings = settings or (publisher.settings if publisher else Settings())
        self.publisher = publisher or AsyncPublisher(self.settings)
        self.reader = reader or AsyncRankingReader(self.settings)
        self.stats = PageStats()

    async def personalize(
        self, kind: PageKind | EventType, item_id: str, shopper: Shopper, native: Sequence[str]
    ) -> list[str]:
        """PageViews.personalize, awaited: the event loop never waits on the broker or cache."""
        event_type, event_id = event_for(kind, item_id)
        try:
            if await self.publisher.publish(event_mapping(event_type, event_id, shopper)):
                self.stats.published += 1
            else:
                self.stats.not_published += 1
        except FashionAIError as exc:
            self.stats.failed(exc)
            log.warning("page view not published (%s): %s", event_type, exc)
        return await self.reader.order(event_type, event_id, shopper.session_id, native, shopper.user_id)

    async def aclose(self) -> None:
        await self.publisher.aclose()
        await self.reader.aclose()

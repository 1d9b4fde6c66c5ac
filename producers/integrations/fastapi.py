"""FastAPI and Starlette: an ASGI middleware that knows the shopper, and a dependency.

::

    from fashionai_pipeline.producers.integrations.fastapi import FashionAI, FashionAIMiddleware, Page

    fashionai = FashionAI(user_id=lambda request: request.session.get("user_id"))
    app = FastAPI(lifespan=fashionai.lifespan)
    app.add_middleware(FashionAIMiddleware, cookie=fashionai.cookie)

    @app.get("/products/{product_id}")
    async def product(product_id: str, page: Page = Depends(fashionai.page)):
        ordered = await page.personalize("product", product_id, similar_ids(product_id))
        ...

The session cookie is set by the middleware, not by the dependency: FastAPI drops
headers a dependency sets on its `Response` parameter when the endpoint returns
a Response of its own (a TemplateResponse, say), and a middleware also serves
plain Starlette apps. It is pure ASGI (no BaseHTTPMiddleware), so it adds no task
or body buffering per request. The user id comes from `user_id`, a callable
`(request) -> str | None` (or awaitable); by default Starlette's
AuthenticationMiddleware user (`request.user.identity` when authenticated), else
absent. Uses the asyncio twins (AsyncPublisher, AsyncRankingReader): the event
loop never waits on the broker or the cache. One FashionAI per process; its
`lifespan` (or `aclose()` at shutdown) closes the connections.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import Request, cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fashionai_pipeline.producers.event import EventType
from fashionai_pipeline.producers.integrations.common import (
    AsyncPageViews,
    CookiePolicy,
    PageKind,
    Shopper,
    session_from_cookie,
)
from fashionai_pipeline.producers.settings import Settings

UserIdLoader = Callable[[Request], str | Awaitable[str | None] | None]
_STATE = "fashionai_session"


class FashionAIMiddleware:
    """Reads (or mints) the shopper's session cookie; sets it on the response when new. No I/O."""

    def __init__(self, app: ASGIApp, *, cookie: CookiePolicy | None = None) -> None:
        self.app = app
        self.cookie = cookie or CookiePolicy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = b"; ".join(v for k, v in scope["headers"] if k == b"cookie")
        value = cookie_parser(raw.decode("latin-1")).get(self.cookie.name) if raw else None
        session_id, new = session_from_cookie(value)
        scope.setdefault("state", {})[_STATE] = (session_id, new)
        if not new:
            await self.app(scope, receive, send)
            return
        header = self._set_cookie(session_id, scope.get("scheme") == "https")

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("set-cookie", header)
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _set_cookie(self, session_id: str, https: bool) -> str:
        jar: SimpleCookie = SimpleCookie()
        jar[self.cookie.name] = session_id
        morsel = jar[self.cookie.name]
        morsel["path"] = self.cookie.path
        morsel["httponly"] = True
        morsel["samesite"] = self.cookie.samesite
        if self.cookie.domain:
            morsel["domain"] = self.cookie.domain
        if self.cookie.is_secure(https):
            morsel["secure"] = True
        return morsel.OutputString()


def starlette_user_id(request: Request) -> str | None:
    """Starlette's AuthenticationMiddleware user's identity when authenticated, else None."""
    if "user" not in request.scope:
        return None
    user: Any = request.scope["user"]
    return str(user.identity) if getattr(user, "is_authenticated", False) else None


@dataclass(frozen=True, slots=True)
class Page:
    """One page view's context, given by the `FashionAI.page` dependency."""

    views: AsyncPageViews
    shopper: Shopper

    async def personalize(self, kind: PageKind | EventType, item_id: str, native: Sequence[str]) -> list[str]:
        """Publish this page's event and return `native` in the shopper's ranked order.

        `kind`: "product", "category", "look" (the main piece's id) or "shelf"
        (`item_id` ignored), or an event type. Never raises for the pipeline's
        sake (AsyncPageViews.personalize).
        """
        return await self.views.personalize(kind, item_id, self.shopper, native)


class FashionAI:
    """The per-process integration: dependencies `shopper` and `page`, and `lifespan`."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        page_views: AsyncPageViews | None = None,
        user_id: UserIdLoader | None = None,
        cookie: CookiePolicy | None = None,
    ) -> None:
        self.views = page_views or AsyncPageViews(settings)
        self.user_id = user_id or starlette_user_id
        self.cookie = cookie or CookiePolicy()

    async def shopper(self, request: Request) -> Shopper:
        """Dependency: the request's shopper. Raises RuntimeError without FashionAIMiddleware
        (every page would otherwise be a new session)."""
        try:
            session_id, new = request.scope["state"][_STATE]
        except KeyError:
            raise RuntimeError("add FashionAIMiddleware to the app (app.add_middleware)") from None
        user = self.user_id(request)
        if inspect.isawaitable(user):
            user = await user
        return Shopper(session_id, user, new)

    async def page(self, request: Request) -> Page:
        """Dependency: a Page whose `personalize` publishes and orders this page's products."""
        return Page(self.views, await self.shopper(request))

    async def aclose(self) -> None:
        await self.views.aclose()

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """A lifespan for FastAPI/Starlette that closes the connections at shutdown."""
        try:
            yield
        finally:
            await self.aclose()

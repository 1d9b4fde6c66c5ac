"""Flask: an extension that knows the shopper and publishes each page's view.

::

    from fashionai_pipeline.producers.integrations.flask import FashionAI

    fashionai = FashionAI(app, user_id=lambda: session.get("user_id"))

    @app.get("/products/<product_id>")
    def product(product_id):
        ordered = fashionai.personalize("product", product_id, similar_ids(product_id))
        ...

or the factory pattern: `fashionai = FashionAI()` then `fashionai.init_app(app)`.

The session id is the extension's own cookie (common.py says why), read before
each request and set on the response when it was minted. The user id comes from
`user_id`, a callable run inside the request (`() -> str | None`); by default
Flask-Login's `current_user.get_id()` when Flask-Login is installed and the user
is authenticated, else absent. One PageViews per process, built in `init_app`
(connecting to nothing): with gunicorn `--preload` the master builds it and each
worker opens its own connections after the fork.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask, Response, current_app, g, request

from fashionai_pipeline.producers.event import EventType
from fashionai_pipeline.producers.integrations.common import (
    CookiePolicy,
    PageKind,
    PageViews,
    Shopper,
    session_from_cookie,
)
from fashionai_pipeline.producers.settings import Settings

UserIdLoader = Callable[[], str | None]
_EXTENSION = "fashionai"


def flask_login_user_id() -> str | None:
    """Flask-Login's authenticated user's id, or None (also when Flask-Login is not installed)."""
    try:
        from flask_login import current_user  # type: ignore[import-not-found]
    except ImportError:
        return None
    user: Any = current_user
    return str(user.get_id()) if user is not None and user.is_authenticated else None


class FashionAI:
    """The extension. `personalize` works inside a request of an app it was initialised on."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        settings: Settings | None = None,
        page_views: PageViews | None = None,
        user_id: UserIdLoader | None = None,
        cookie: CookiePolicy | None = None,
    ) -> None:
        self._settings = settings
        self._views = page_views
        self.user_id = user_id or flask_login_user_id
        self.cookie = cookie or CookiePolicy()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the request hooks on `app` (idempotent per app) and build the PageViews."""
        if app.extensions.get(_EXTENSION) is self:
            return
        if self._views is None:
            self._views = PageViews(self._settings)
        app.extensions[_EXTENSION] = self
        app.before_request(self._before)
        app.after_request(self._after)

    @property
    def views(self) -> PageViews:
        if self._views is None:
            raise RuntimeError("FashionAI.init_app(app) has not been called")
        return self._views

    def shopper(self) -> Shopper:
        """The current request's shopper (session cookie, user id)."""
        session_id, new = g.get("_fashionai_session") or self._session()
        return Shopper(session_id, self.user_id(), new)

    def personalize(self, kind: PageKind | EventType, item_id: str, native: Sequence[str]) -> list[str]:
        """Publish the current page's event and return `native` in the shopper's ranked order.

        `kind`: "product", "category", "look" (the main piece's id) or "shelf"
        (`item_id` ignored), or an event type. Never raises for the pipeline's sake
        (PageViews.personalize).
        """
        return self.views.personalize(kind, item_id, self.shopper(), native)

    def _session(self) -> tuple[str, bool]:
        found = session_from_cookie(request.cookies.get(self.cookie.name))
        g._fashionai_session = found
        return found

    def _before(self) -> None:
        self._session()

    def _after(self, response: Response) -> Response:
        found = g.get("_fashionai_session")
        if found is not None and found[1]:
            response.set_cookie(
                self.cookie.name,
                found[0],
                secure=self.cookie.is_secure(request.is_secure),
                httponly=True,
                samesite=self.cookie.samesite,
                domain=self.cookie.domain,
                path=self.cookie.path,
            )
        return response


def fashionai() -> FashionAI:
    """The extension of the current app (inside an app or request context)."""
    ext = current_app.extensions.get(_EXTENSION)
    if not isinstance(ext, FashionAI):
        raise RuntimeError("no FashionAI extension on this app: call FashionAI(app) or init_app(app)")
    return ext

"""Django: a middleware that knows the shopper, and a view helper for the page view.

In settings.py, after Django's AuthenticationMiddleware::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "fashionai_pipeline.producers.integrations.django.FashionAIMiddleware",
    ]

In a (sync) view::

    from fashionai_pipeline.producers.integrations.django import personalize

    ordered = personalize(request, "product", product.id, [p.id for p in similar])

The session id is the integration's own cookie (common.py says why not Django's
session key, which is a login credential). The user id is `str(request.user.pk)`
when Django's auth says the user is authenticated, else absent; a project can
point the setting `FASHIONAI_USER_ID` at a callable `(request) -> str | None` to
send another id (a customer number, say).

Optional settings: `FASHIONAI_SETTINGS` (a `Settings`; default: built once from
the FASHIONAI_* environment), `FASHIONAI_COOKIE` (a `CookiePolicy`).
One PageViews per process, built on first use under a lock; with gunicorn
`--preload` it may be built in the master and is then fork-safe (each worker
opens its own connections).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

from fashionai_pipeline.producers.event import EventType
from fashionai_pipeline.producers.integrations.common import (
    CookiePolicy,
    PageKind,
    PageViews,
    Shopper,
    session_from_cookie,
)

_ATTR = "fashionai_shopper"
_lock = threading.Lock()
_views: PageViews | None = None


def page_views() -> PageViews:
    """The process's PageViews (built on first call; idempotent, thread-safe)."""
    global _views
    if _views is None:
        with _lock:
            if _views is None:
                _views = PageViews(getattr(django_settings, "FASHIONAI_SETTINGS", None))
    return _views


def configure(views: PageViews | None) -> None:
    """Use `views` for this process instead of one built from settings (None: rebuild on next use)."""
    global _views
    with _lock:
        _views = views


def _cookie_policy() -> CookiePolicy:
    policy = getattr(django_settings, "FASHIONAI_COOKIE", None)
    return policy if isinstance(policy, CookiePolicy) else CookiePolicy()


def _user_id_hook() -> Callable[[HttpRequest], str | None] | None:
    hook = getattr(django_settings, "FASHIONAI_USER_ID", None)
    if hook is None:
        return None
    return import_string(hook) if isinstance(hook, str) else hook  # type: ignore[no-any-return]


def default_user_id(request: HttpRequest) -> str | None:
    """`str(request.user.pk)` for an authenticated user, None otherwise (or without auth)."""
    user: Any = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return str(user.pk)


class FashionAIMiddleware:
    """Reads (or mints) the shopper's session cookie, and sets it on the response when new.

    Cheap: no I/O. It does not publish anything; pages do, through `personalize`.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.cookie = _cookie_policy()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session_id, new = session_from_cookie(request.COOKIES.get(self.cookie.name))
        setattr(request, _ATTR, (session_id, new))
        response = self.get_response(request)
        if new:
            response.set_cookie(
                self.cookie.name,
                session_id,
                secure=self.cookie.is_secure(request.is_secure()),
                httponly=True,
                samesite=self.cookie.samesite,
                domain=self.cookie.domain,
                path=self.cookie.path,
            )
        return response


def shopper(request: HttpRequest) -> Shopper:
    """Who is looking: the cookie's session id and the user id. Raises ImproperlyConfigured
    when FashionAIMiddleware is not installed (every page would otherwise be a new session)."""
    try:
        session_id, new = getattr(request, _ATTR)
    except AttributeError:
        raise ImproperlyConfigured(
            "add 'fashionai_pipeline.producers.integrations.django.FashionAIMiddleware' to MIDDLEWARE"
        ) from None
    hook = _user_id_hook() or default_user_id
    return Shopper(session_id, hook(request), new)


def personalize(
    request: HttpRequest, kind: PageKind | EventType, item_id: str, native: Sequence[str]
) -> list[str]:
    """Publish this page's event and return `native` in the shopper's ranked order.

    `kind` is "product", "category", "look" (shop the look: the main piece's id) or
    "shelf" (custom shelf: `item_id` is ignored), or the event type itself. Never
    raises for the pipeline's sake (PageViews.personalize); raises ImproperlyConfigured
    without the middleware.
    """
    return page_views().personalize(kind, item_id, shopper(request), native)

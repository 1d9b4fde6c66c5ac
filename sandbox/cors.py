"""Browser calls and CORS, as docs/UPSTREAM.md ("Security and CORS") describes Fashion.AI's.

Fashion.AI blocks direct browser calls so a token never has to sit in a page:
a request carrying an ``Origin`` header gets no CORS headers, and the browser
refuses it, unless that origin's domain was authorised for the storefront. The
sandbox plays the same rule:

- a domain entry is either an origin (``https://shop.example:8443``: that
  scheme, host and port exactly; default ports may be left out) or a bare host
  (``shop.example``: that host on any scheme and port). ``Origin: null`` and
  anything that does not parse never match;
- a **preflight** (``OPTIONS`` with ``Origin``) carries no token, so it is
  allowed when *any* storefront authorised the origin; the actual request is
  then checked against the domains of *its* token;
- an answer to an allowed origin carries ``Access-Control-Allow-Origin: <origin>``
  and ``Vary: Origin``; a refused one carries no CORS header at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
ALLOWED_METHODS: Final = "POST"
ALLOWED_HEADERS: Final = "Content-Type, X-FashionAI-APP-Token"
MAX_AGE_S: Final = "600"


def _parts(origin: str) -> tuple[str, str, int] | None:
    try:
        split = urlsplit(origin.strip().lower())
        port = split.port
    except ValueError:
        return None
    if split.scheme not in _DEFAULT_PORTS or not split.hostname or split.path not in {"", "/"}:
        return None
    if split.query or split.fragment or split.username or split.password:
        return None
    return split.scheme, split.hostname, port if port is not None else _DEFAULT_PORTS[split.scheme]


def origin_allowed(origin: str, domains: Iterable[str]) -> bool:
    """Whether browser ``origin`` matches one of ``domains`` (entries as above). Pure."""
    parts = _parts(origin)
    if parts is None:
        return False
    _, host, port = parts
    for domain in domains:
        if "://" in domain:
            if _parts(domain) == parts:
                return True
        else:
            name, _, wanted = domain.partition(":")
            if name == host and (not wanted or int(wanted) == port):
                return True
    return False


def allow_headers(origin: str) -> dict[str, str]:
    """Headers that let the browser read an answer to ``origin``."""
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": "Retry-After",
        "Vary": "Origin",
    }


def preflight_headers(origin: str) -> dict[str, str]:
    """Headers of an allowed preflight answer."""
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": ALLOWED_METHODS,
        "Access-Control-Allow-Headers": ALLOWED_HEADERS,
        "Access-Control-Max-Age": MAX_AGE_S,
        "Vary": "Origin",
    }

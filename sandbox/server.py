"""The sandbox's aiohttp app: Fashion.AI's recommendation endpoint, played locally.

``POST /api/v1/products/protected/recommendation`` answers in this order, each
step's refusal ending the request:

1. ``X-FashionAI-APP-Token`` must be a storefront's token -> else 401
2. a browser ``Origin`` must be authorised for that storefront -> else 403
   without CORS headers (:mod:`sandbox.cors`)
3. ``Content-Type`` must be ``application/json`` (charset utf-8 if given) -> else 415
4. the body must satisfy :mod:`sandbox.contract` -> else 400 naming the field
5. the hard requests/s limit (:mod:`sandbox.limits`) may answer 429
6. failure injection (:mod:`sandbox.fault`) may answer 429 / 5xx / 504-after-sleep
7. otherwise rank with the storefront's settings (:mod:`sandbox.ranking`),
   record into session and user history, sleep ``latency``, answer 200
   ``{"products": [...]}``

``OPTIONS`` with an ``Origin`` is a CORS preflight: 204 with CORS headers when
some storefront authorised the origin, else 403 without them; ``OPTIONS``
without ``Origin`` answers 204 with ``Allow``. Every request on that path,
whatever its outcome, goes into the request log (:mod:`sandbox.request_log`)
when its outcome is decided, before any sleep. Other methods get 405. The
``/_sandbox/`` control routes are in :mod:`sandbox.control`; they exist only
in the sandbox, never upstream.

The path is kept lean on purpose (pre-encoded error bodies, settings compiled
when saved, no per-request logging, no access log) because benchmarks push
thousands of req/s through it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Final

from aiohttp import hdrs, web

from fashionai_pipeline.sandbox.config import SandboxConfig
from fashionai_pipeline.sandbox.contract import ContractError, Event, decode_json, validate
from fashionai_pipeline.sandbox.control import add_control_routes
from fashionai_pipeline.sandbox.cors import allow_headers, preflight_headers
from fashionai_pipeline.sandbox.ranking import RankingEngine
from fashionai_pipeline.sandbox.state import STATE, SandboxState
from fashionai_pipeline.sandbox.storefronts import Storefront

RECOMMENDATION_PATH: Final = "/api/v1/products/protected/recommendation"
TOKEN_HEADER: Final = "X-FashionAI-APP-Token"  # noqa: S105 - a header name
MAX_BODY_BYTES: Final = 64 * 1024  # real bodies are < 1 KB; this bounds log memory
JSON: Final = "application/json"


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


_UNAUTHORIZED: Final = _error(f"invalid or missing {TOKEN_HEADER}")
_UNSUPPORTED: Final = _error("Content-Type: must be application/json")
_BAD_CHARSET: Final = _error("Content-Type: charset must be utf-8")
_NOT_ALLOWED: Final = _error("method not allowed: use POST")
_ORIGIN_REFUSED: Final = _error(
    "Origin: browser calls are not authorised for this domain; call from your server, "
    "or have the domain authorised (sandbox: --authorize-domain)"
)
_RATE_LIMITED: Final = _error("rate limited: over the sandbox's requests/s limit (rate_limit_rps)")
_ALLOW: Final = "POST, OPTIONS"
_TOO_LARGE: Final = _error(f"body: larger than {MAX_BODY_BYTES} bytes")


def _reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type=JSON, headers=headers)


class _Refused(Exception):
    """Steps 1-3 refused the request: answer ``status``/``reply``."""

    def __init__(self, status: int, reply: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.reply = reply


def _accept(request: web.Request, raw: bytes | None, store: Storefront | None, origin: str | None) -> Event:
    """Steps 1-4: return the event or raise :class:`_Refused`."""
    if raw is None:
        raise _Refused(413, _TOO_LARGE)
    if store is None:
        raise _Refused(401, _UNAUTHORIZED)
    if origin is not None and not store.allows(origin):
        raise _Refused(403, _ORIGIN_REFUSED)
    if request.content_type != JSON:
        raise _Refused(415, _UNSUPPORTED)
    charset = request.charset
    if charset is not None and charset.lower().replace("-", "") != "utf8":
        raise _Refused(415, _BAD_CHARSET)
    try:
        return validate(decode_json(raw))
    except ContractError as exc:
        raise _Refused(400, _error(exc.reason)) from exc


async def _recommend(request: web.Request) -> web.Response:
    arrived = time.time()
    state = request.app[STATE]
    state.sync_log_limit()
    headers = request.headers
    content_type = headers.get(hdrs.CONTENT_TYPE)
    origin = headers.get(hdrs.ORIGIN)
    store = state.storefront(headers.get(TOKEN_HEADER))
    token_ok = store is not None
    raw: bytes | None
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raw = None
    try:
        event = _accept(request, raw, store, origin)
    except _Refused as refused:
        state.log.append(arrived, refused.status, raw, content_type=content_type, token_ok=token_ok)
        cors = allow_headers(origin) if origin is not None and refused.status not in (401, 403) else None
        return _reply(refused.status, refused.reply, cors)
    assert store is not None  # _accept refused a missing storefront
    cors = allow_headers(origin) if origin is not None else None

    if event.item_id and event.item_id in state.config.refuse_ids:
        reason = _error(f"data.id: {event.item_id!r} is unknown to the catalog")
        state.log.append(arrived, 400, raw, content_type=content_type, token_ok=True)
        return _reply(400, reason, cors)

    retry_after = state.limit.admit(state.config.rate_limit_rps)
    if retry_after is not None:
        state.log.append(arrived, 429, raw, content_type=content_type, token_ok=True)
        return _reply(429, _RATE_LIMITED, {**(cors or {}), hdrs.RETRY_AFTER: str(retry_after)})

    fault = state.faults.draw()
    if fault is not None:
        state.log.append(arrived, fault.status, raw, content_type=content_type, token_ok=True)
        delay = fault.sleep_s if fault.status == 504 else state.faults.latency_s()
        if delay:
            await asyncio.sleep(delay)
        return _reply(fault.status, fault.body, {**(cors or {}), **fault.headers})

    products = state.engine.rank(event, store.filters)
    state.engine.record(event)
    state.log.append(arrived, 200, raw, content_type=content_type, token_ok=True, products=products)
    delay = state.faults.latency_s()
    if delay:
        await asyncio.sleep(delay)
    return _reply(200, json.dumps({"products": products}, separators=(",", ":")).encode(), cors)


async def _preflight(request: web.Request) -> web.Response:
    state = request.app[STATE]
    origin = request.headers.get(hdrs.ORIGIN)
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    token_ok = state.token_ok(request.headers.get(TOKEN_HEADER))
    if origin is None:  # not a preflight: say what the path supports
        state.log.append(time.time(), 204, None, content_type=content_type, token_ok=token_ok)
        return web.Response(status=204, headers={hdrs.ALLOW: _ALLOW})
    if not state.storefronts.any_allows(origin):
        state.log.append(time.time(), 403, None, content_type=content_type, token_ok=token_ok)
        return _reply(403, _ORIGIN_REFUSED)
    state.log.append(time.time(), 204, None, content_type=content_type, token_ok=token_ok)
    return web.Response(status=204, headers=preflight_headers(origin))


async def _method_not_allowed(request: web.Request) -> web.Response:
    state = request.app[STATE]
    token_ok = state.token_ok(request.headers.get(TOKEN_HEADER))
    raw = await request.read() if request.can_read_body else b""
    state.log.append(
        time.time(),
        405,
        raw or None,
        content_type=request.headers.get(hdrs.CONTENT_TYPE),
        token_ok=token_ok,
    )
    return _reply(405, _NOT_ALLOWED, {hdrs.ALLOW: _ALLOW})


def create_app(
    config: SandboxConfig | None = None, *, engine: RankingEngine | None = None
) -> web.Application:
    """Build the sandbox app around ``config`` (shared, live) and ``engine`` (demo catalog by default).

    Starts nothing; run it with ``run_sandbox``, ``SandboxServer`` or any
    aiohttp runner. The app's :class:`SandboxState` is ``app[STATE]``.
    """
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    state = SandboxState(
        config if config is not None else SandboxConfig(),
        engine if engine is not None else RankingEngine(config=config),
    )
    app[STATE] = state
    app.router.add_post(RECOMMENDATION_PATH, _recommend)
    app.router.add_route("OPTIONS", RECOMMENDATION_PATH, _preflight)
    # "*" after POST: aiohttp tries routes in order, so only non-POST lands here
    app.router.add_route("*", RECOMMENDATION_PATH, _method_not_allowed)
    add_control_routes(app)
    return app

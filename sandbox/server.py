"""The sandbox's aiohttp app: Fashion.AI's recommendation endpoint, played locally.

``POST /api/v1/products/protected/recommendation`` answers in this order, each
step's refusal ending the request:

0. the body must arrive whole: over 64 KiB -> 413, not within
   ``body_timeout_s`` -> 408 and the connection closed (:mod:`sandbox.bodies`)
1. ``X-FashionAI-APP-Token`` must be a storefront's token -> else 401
2. a browser ``Origin`` must be authorised for that storefront -> else 403
   without CORS headers (:mod:`sandbox.cors`)
3. ``Content-Type`` must be ``application/json`` (charset utf-8 if given) -> else 415
4. the body must satisfy :mod:`sandbox.contract` -> else 400 naming the field
5. the hard requests/s limit (:mod:`sandbox.limits`) may answer 429
6. failure injection (:mod:`sandbox.fault`) may answer 429 / 5xx / 504-after-sleep
7. otherwise rank with the storefront's settings (:mod:`sandbox.ranking`),
   record into session and user history, answer 200 ``{"products": [...]}``

``OPTIONS`` with an ``Origin`` is a CORS preflight: 204 with CORS headers when
some storefront authorised the origin, else 403 without them; ``OPTIONS``
without ``Origin`` answers 204 with ``Allow``. Other methods get 405.

Every answer on that path sleeps ``latency_ms`` (+ jitter) first, refusals
included, as the real API's latency applies to every answer; the exceptions are
an injected 504, which sleeps ``timeout_sleep_s`` instead, and a 408. Every
answer to an origin that is authorised carries the CORS headers, errors
included: authorised for the request's storefront when its token matched, else
(a missing or wrong token, a preflight) by any storefront. A refused origin
gets none, whatever the status. Every request on that path, whatever its
outcome, goes into the request log (:mod:`sandbox.request_log`) when its
outcome is decided, before any sleep. The ``/_sandbox/`` control routes are in
:mod:`sandbox.control`; they exist only in the sandbox, never upstream.

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

from fashionai_pipeline.sandbox.bodies import (
    DEFAULT_BODY_TIMEOUT_S,
    MAX_BODY_BYTES,
    BodyRefused,
    answer_and_close,
    check_timeout,
    read_body,
)
from fashionai_pipeline.sandbox.config import SandboxConfig
from fashionai_pipeline.sandbox.contract import ContractError, Event, decode_json, validate
from fashionai_pipeline.sandbox.control import add_control_routes
from fashionai_pipeline.sandbox.cors import allow_headers, preflight_headers
from fashionai_pipeline.sandbox.ranking import RankingEngine
from fashionai_pipeline.sandbox.state import STATE, SandboxState
from fashionai_pipeline.sandbox.storefronts import Storefront

RECOMMENDATION_PATH: Final = "/api/v1/products/protected/recommendation"
TOKEN_HEADER: Final = "X-FashionAI-APP-Token"  # noqa: S105 - a header name
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


def _reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type=JSON, headers=headers)


class _Refused(Exception):
    """Steps 1-3 refused the request: answer ``status``/``reply``."""

    def __init__(self, status: int, reply: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.reply = reply


def _accept(request: web.Request, raw: bytes, store: Storefront | None, origin: str | None) -> Event:
    """Steps 1-4: return the event or raise :class:`_Refused`."""
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


def _cors(state: SandboxState, store: Storefront | None, origin: str | None) -> dict[str, str] | None:
    """CORS headers for an answer to ``origin``, or ``None`` when it is not authorised.

    With a matching token, ``store``'s domains decide; without one, any
    storefront's (the preflight rule), so a page can read its own 401.
    """
    if origin is None:
        return None
    allowed = store.allows(origin) if store is not None else state.storefronts.any_allows(origin)
    return allow_headers(origin) if allowed else None


async def _answer(
    state: SandboxState, status: int, body: bytes, headers: dict[str, str] | None = None
) -> web.Response:
    """Sleep the configured latency (+ jitter), then answer: every answer on the API path does."""
    delay = state.faults.latency_s()
    if delay:
        await asyncio.sleep(delay)
    return _reply(status, body, headers)


async def _recommend(request: web.Request) -> web.Response:
    arrived = time.time()
    state = request.app[STATE]
    state.sync_log_limit()
    headers = request.headers
    content_type = headers.get(hdrs.CONTENT_TYPE)
    origin = headers.get(hdrs.ORIGIN)
    store = state.storefront(headers.get(TOKEN_HEADER))
    token_ok = store is not None
    try:
        raw = await read_body(request, state.body_timeout_s)
    except BodyRefused as refused:
        state.log.append(arrived, refused.status, None, content_type=content_type, token_ok=token_ok)
        cors = _cors(state, store, origin)
        if refused.status == 408:
            return await answer_and_close(request, _reply(408, refused.reply, cors))
        return await _answer(state, refused.status, refused.reply, cors)
    try:
        event = _accept(request, raw, store, origin)
    except _Refused as refused:
        state.log.append(arrived, refused.status, raw, content_type=content_type, token_ok=token_ok)
        cors = None if refused.status == 403 else _cors(state, store, origin)
        return await _answer(state, refused.status, refused.reply, cors)
    assert store is not None  # _accept refused a missing storefront
    cors = allow_headers(origin) if origin is not None else None

    if event.item_id and event.item_id in state.config.refuse_ids:
        reason = _error(f"data.id: {event.item_id!r} is unknown to the catalog")
        state.log.append(arrived, 400, raw, content_type=content_type, token_ok=True)
        return await _answer(state, 400, reason, cors)

    retry_after = state.limit.admit(state.config.rate_limit_rps)
    if retry_after is not None:
        state.log.append(arrived, 429, raw, content_type=content_type, token_ok=True)
        return await _answer(state, 429, _RATE_LIMITED, {**(cors or {}), hdrs.RETRY_AFTER: str(retry_after)})

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
    body = json.dumps({"products": products}, separators=(",", ":")).encode()
    return await _answer(state, 200, body, cors)


async def _preflight(request: web.Request) -> web.Response:
    state = request.app[STATE]
    origin = request.headers.get(hdrs.ORIGIN)
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    token_ok = state.token_ok(request.headers.get(TOKEN_HEADER))
    if origin is None:  # not a preflight: say what the path supports
        state.log.append(time.time(), 204, None, content_type=content_type, token_ok=token_ok)
        response = web.Response(status=204, headers={hdrs.ALLOW: _ALLOW})
    elif not state.storefronts.any_allows(origin):
        state.log.append(time.time(), 403, None, content_type=content_type, token_ok=token_ok)
        response = _reply(403, _ORIGIN_REFUSED)
    else:
        state.log.append(time.time(), 204, None, content_type=content_type, token_ok=token_ok)
        response = web.Response(status=204, headers=preflight_headers(origin))
    delay = state.faults.latency_s()
    if delay:
        await asyncio.sleep(delay)
    return response


async def _method_not_allowed(request: web.Request) -> web.Response:
    state = request.app[STATE]
    arrived = time.time()
    store = state.storefront(request.headers.get(TOKEN_HEADER))
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    headers = {**(_cors(state, store, request.headers.get(hdrs.ORIGIN)) or {}), hdrs.ALLOW: _ALLOW}
    raw: bytes | None = None
    if request.can_read_body:
        try:
            raw = await read_body(request, state.body_timeout_s)
        except BodyRefused as refused:
            if refused.status == 408:
                state.log.append(arrived, 408, None, content_type=content_type, token_ok=store is not None)
                return await answer_and_close(request, _reply(408, refused.reply, headers))
            # too large: the method is still what is wrong; the body is not kept
    state.log.append(arrived, 405, raw or None, content_type=content_type, token_ok=store is not None)
    return await _answer(state, 405, _NOT_ALLOWED, headers)


def create_app(
    config: SandboxConfig | None = None,
    *,
    engine: RankingEngine | None = None,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
) -> web.Application:
    """Build the sandbox app around ``config`` (shared, live) and ``engine`` (demo catalog by default).

    A request body that has not fully arrived within ``body_timeout_s`` is
    answered 408 and its connection closed. Starts nothing; run it with
    ``run_sandbox``, ``SandboxServer`` or any aiohttp runner. The app's
    :class:`SandboxState` is ``app[STATE]``. Raises ``ConfigError`` (a
    ``ValueError``) for a bad ``body_timeout_s``.
    """
    timeout_s = check_timeout("body_timeout_s", body_timeout_s)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    state = SandboxState(
        config if config is not None else SandboxConfig(),
        engine if engine is not None else RankingEngine(config=config),
    )
    state.body_timeout_s = timeout_s
    app[STATE] = state
    app.router.add_post(RECOMMENDATION_PATH, _recommend)
    app.router.add_route("OPTIONS", RECOMMENDATION_PATH, _preflight)
    # "*" after POST: aiohttp tries routes in order, so only non-POST lands here
    app.router.add_route("*", RECOMMENDATION_PATH, _method_not_allowed)
    add_control_routes(app)
    return app

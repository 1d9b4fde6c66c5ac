"""The sandbox's aiohttp app: Fashion.AI's recommendation endpoint, played locally.

``POST /api/v1/products/protected/recommendation`` answers in this order, each
step's refusal ending the request:

1. ``X-FashionAI-APP-Token`` must equal ``config.token`` -> else 401
2. ``Content-Type`` must be ``application/json`` (charset utf-8 if given) -> else 415
3. the body must satisfy :mod:`sandbox.contract` -> else 400 naming the field
4. failure injection (:mod:`sandbox.fault`) may answer 429 / 5xx / 504-after-sleep
5. otherwise rank, record into session history, sleep ``latency``, answer 200
   ``{"products": [...]}``

Every request on that path, whatever its outcome, goes into the request log
(:mod:`sandbox.request_log`) when its outcome is decided, before any sleep.
Other methods get 405. The ``/_sandbox/`` control routes are in
:mod:`sandbox.control`; they exist only in the sandbox, never upstream.

The path is kept lean on purpose (pre-encoded error bodies, no per-request
logging, no access log) because benchmarks push thousands of req/s through it.
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
from fashionai_pipeline.sandbox.ranking import RankingEngine
from fashionai_pipeline.sandbox.state import STATE, SandboxState

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
_TOO_LARGE: Final = _error(f"body: larger than {MAX_BODY_BYTES} bytes")


def _reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type=JSON, headers=headers)


class _Refused(Exception):
    """Steps 1-3 refused the request: answer ``status``/``reply``."""

    def __init__(self, status: int, reply: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.reply = reply


def _accept(request: web.Request, raw: bytes | None, token_ok: bool) -> Event:
    """Steps 1-3: return the event or raise :class:`_Refused`."""
    if raw is None:
        raise _Refused(413, _TOO_LARGE)
    if not token_ok:
        raise _Refused(401, _UNAUTHORIZED)
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
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    token_ok = state.token_ok(request.headers.get(TOKEN_HEADER))
    raw: bytes | None
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raw = None
    try:
        event = _accept(request, raw, token_ok)
    except _Refused as refused:
        state.log.append(arrived, refused.status, raw, content_type=content_type, token_ok=token_ok)
        return _reply(refused.status, refused.reply)

    if event.item_id and event.item_id in state.config.refuse_ids:
        reason = _error(f"data.id: {event.item_id!r} is unknown to the catalog")
        state.log.append(arrived, 400, raw, content_type=content_type, token_ok=True)
        return _reply(400, reason)

    fault = state.faults.draw()
    if fault is not None:
        state.log.append(arrived, fault.status, raw, content_type=content_type, token_ok=True)
        delay = fault.sleep_s if fault.status == 504 else state.faults.latency_s()
        if delay:
            await asyncio.sleep(delay)
        return _reply(fault.status, fault.body, fault.headers)

    products = state.engine.rank(event)
    state.engine.record(event)
    state.log.append(arrived, 200, raw, content_type=content_type, token_ok=True, products=products)
    delay = state.faults.latency_s()
    if delay:
        await asyncio.sleep(delay)
    return _reply(200, json.dumps({"products": products}, separators=(",", ":")).encode())


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
    return _reply(405, _NOT_ALLOWED, {hdrs.ALLOW: "POST"})


def create_app(
    config: SandboxConfig | None = None, *, engine: RankingEngine | None = None
) -> web.Application:
    """Build the sandbox app around ``config`` (shared, live) and ``engine``.

    Starts nothing; run it with ``run_sandbox``, ``SandboxServer`` or any
    aiohttp runner. The app's :class:`SandboxState` is ``app[STATE]``.
    """
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    state = SandboxState(
        config if config is not None else SandboxConfig(),
        engine if engine is not None else RankingEngine(),
    )
    app[STATE] = state
    app.router.add_post(RECOMMENDATION_PATH, _recommend)
    # "*" after POST: aiohttp tries routes in order, so only non-POST lands here
    app.router.add_route("*", RECOMMENDATION_PATH, _method_not_allowed)
    add_control_routes(app)
    return app

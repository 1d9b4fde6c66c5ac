"""``/_sandbox/`` control routes, for tests, the demo and users' CI. They exist only in the sandbox.

No token is needed: the sandbox binds to loopback by default and these routes
are how a test reads what a producer sent and turns the knobs. Routes that
concern one storefront pick it by the ``X-FashionAI-APP-Token`` header, else
by ``?storefront=NAME``, else the default storefront; an unknown one is 404
(the token is never echoed). docs/openapi/sandbox.json describes every route.

- ``GET /_sandbox/health`` -> ``{"ok": true}``
- ``GET /_sandbox/requests[?since=N]`` -> ``{"count": C, "requests": [...]}``:
  the request log (see :mod:`sandbox.request_log`) from index N on; ``count``
  is the number recorded since the last clear, so passing it back as ``since``
  polls for only the new ones
- ``DELETE /_sandbox/requests`` -> clears the log, indexes restart at 0
- ``GET /_sandbox/config`` -> the knobs (tokens redacted)
- ``PATCH /_sandbox/config`` with ``{"knob": value, ...}`` -> applies all or
  none; 400 naming the knob for an unknown knob or a bad value. Sending
  ``seed`` (even unchanged) restarts the failure-injection sequence.
- ``DELETE /_sandbox/sessions`` -> forgets every session's and user's history
- ``POST /_sandbox/reset`` -> a fresh start, knobs aside: histories, every
  storefront's settings, the request log, the fault sequence, the rate window
- ``GET /_sandbox/settings`` -> the storefront's three types
- ``GET|PUT|DELETE /_sandbox/settings/{type}`` -> read, save (the whole type,
  validated by :mod:`fashionai_pipeline.producers.recsettings`), clear one type
- ``POST /_sandbox/explain`` with a recommendation body -> why its ranking is
  what it is (:mod:`sandbox.explain`); records nothing
- ``GET /_sandbox/catalog`` -> product counts per category;
  ``GET /_sandbox/products/{id}`` -> one product
- ``GET /_sandbox/openapi.json`` -> the OpenAPI description of all of this

Bodies are read as on the API path (:mod:`sandbox.bodies`): over 64 KiB is a
413, not arrived within ``body_timeout_s`` a 408 on a closed connection, and
they are parsed strictly (:func:`sandbox.contract.decode_json`): not JSON,
nested too deeply for the parser, NaN/Infinity or a duplicate key is a 400
(``body: not valid JSON``, ``discount: duplicate key``), as on the API path.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from fashionai_pipeline.producers.recsettings import REC_TYPES, RecType, SettingsError, parse_type_settings
from fashionai_pipeline.sandbox.bodies import BodyRefused, answer_and_close, read_body
from fashionai_pipeline.sandbox.config import ConfigError
from fashionai_pipeline.sandbox.contract import ContractError, decode_json, validate
from fashionai_pipeline.sandbox.explain import explain
from fashionai_pipeline.sandbox.openapi import openapi
from fashionai_pipeline.sandbox.state import STATE
from fashionai_pipeline.sandbox.storefronts import Storefront

PREFIX: Final = "/_sandbox"
_TOKEN_HEADER: Final = "X-FashionAI-APP-Token"  # noqa: S105 - a header name


class _NotFound(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _not_found(message: str) -> web.Response:
    return web.json_response({"error": message}, status=404)


def _storefront(request: web.Request) -> Storefront:
    storefronts = request.app[STATE].storefronts
    presented = request.headers.get(_TOKEN_HEADER)
    if presented is not None:
        store = storefronts.for_token(presented)
        if store is None:
            raise _NotFound(f"{_TOKEN_HEADER}: no storefront has this token")
        return store
    name = request.query.get("storefront", "default")
    store = storefronts.named(name)
    if store is None:
        raise _NotFound(
            f"storefront: no storefront is called {name!r} (known: {', '.join(storefronts.names())})"
        )
    return store


class _BadBody(Exception):
    """The body could not be read or parsed; ``response`` says why."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


async def _json_body(request: web.Request) -> tuple[bytes, object]:
    """``(raw, parsed)``: the body read within bounds and parsed strictly; raises :class:`_BadBody`."""
    try:
        raw = await read_body(request, request.app[STATE].body_timeout_s)
    except BodyRefused as refused:
        response = web.Response(status=refused.status, body=refused.reply, content_type="application/json")
        if refused.status == 408:
            await answer_and_close(request, response)
        raise _BadBody(response) from None
    try:
        return raw, decode_json(raw)
    except ContractError as exc:
        raise _BadBody(_bad_request(exc.reason)) from None


def _rec_type(request: web.Request) -> RecType:
    name = request.match_info["type"]
    for rec_type in REC_TYPES:
        if name == rec_type:
            return rec_type
    raise _NotFound(f"type: must be one of {', '.join(REC_TYPES)}")


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _requests(request: web.Request) -> web.Response:
    raw_since = request.query.get("since", "0")
    try:
        since = int(raw_since)
    except ValueError:
        return _bad_request("since: must be a non-negative integer")
    if since < 0:
        return _bad_request("since: must be a non-negative integer")
    count, entries = request.app[STATE].log.snapshot(since)
    return web.json_response({"count": count, "requests": entries})


async def _clear_requests(request: web.Request) -> web.Response:
    request.app[STATE].log.clear()
    return web.json_response({"ok": True})


async def _config(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].config.public())


async def _patch_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        _, changes = await _json_body(request)
    except _BadBody as bad:
        return bad.response
    if not isinstance(changes, dict):
        return _bad_request("body: must be a JSON object of knob -> value")
    try:
        state.config.update(changes)
    except ConfigError as exc:
        return _bad_request(str(exc))
    if "seed" in changes:
        state.faults.reseed()
    state.sync_log_limit()
    return web.json_response(state.config.public())


async def _clear_sessions(request: web.Request) -> web.Response:
    cleared = request.app[STATE].engine.clear()
    return web.json_response({"ok": True, "cleared": cleared})


async def _reset(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "cleared": request.app[STATE].reset()})


def _settings_view(store: Storefront) -> dict[str, object]:
    return {"storefront": store.name, "settings": store.settings.model_dump(mode="json")}


def _type_view(store: Storefront, rec_type: RecType) -> dict[str, object]:
    return {
        "storefront": store.name,
        "type": rec_type,
        "settings": store.settings.of(rec_type).model_dump(mode="json"),
    }


async def _all_settings(request: web.Request) -> web.Response:
    try:
        return web.json_response(_settings_view(_storefront(request)))
    except _NotFound as missing:
        return _not_found(missing.message)


async def _get_settings(request: web.Request) -> web.Response:
    try:
        store, rec_type = _storefront(request), _rec_type(request)
    except _NotFound as missing:
        return _not_found(missing.message)
    return web.json_response(_type_view(store, rec_type))


async def _save_settings(request: web.Request) -> web.Response:
    try:
        store, rec_type = _storefront(request), _rec_type(request)
    except _NotFound as missing:
        return _not_found(missing.message)
    try:
        # parsed here first only to refuse what pydantic lets through (a duplicate key keeps the
        # last value there); the schema then reads the same bytes as always
        raw, _ = await _json_body(request)
    except _BadBody as bad:
        return bad.response
    try:
        settings = parse_type_settings(raw)
    except SettingsError as exc:
        return _bad_request(str(exc))
    request.app[STATE].storefronts.save(store, rec_type, settings)
    return web.json_response(_type_view(store, rec_type))


async def _clear_settings(request: web.Request) -> web.Response:
    try:
        store, rec_type = _storefront(request), _rec_type(request)
    except _NotFound as missing:
        return _not_found(missing.message)
    request.app[STATE].storefronts.clear(store, rec_type)
    return web.json_response(_type_view(store, rec_type))


async def _explain(request: web.Request) -> web.Response:
    try:
        store = _storefront(request)
    except _NotFound as missing:
        return _not_found(missing.message)
    try:
        _, body = await _json_body(request)
        event = validate(body)
    except _BadBody as bad:
        return bad.response
    except ContractError as exc:
        return _bad_request(exc.reason)
    return web.json_response(explain(request.app[STATE].engine, event, store))


async def _catalog(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].engine.catalog.summary())


async def _product(request: web.Request) -> web.Response:
    product = request.app[STATE].engine.catalog.get(request.match_info["id"])
    if product is None:
        return _not_found("id: no product with this id in the catalog")
    return web.json_response(product.public())


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi())


def add_control_routes(app: web.Application) -> None:
    """Register the ``/_sandbox/`` routes on ``app`` (which must hold ``STATE``)."""
    router = app.router
    router.add_get(f"{PREFIX}/health", _health)
    router.add_get(f"{PREFIX}/requests", _requests)
    router.add_delete(f"{PREFIX}/requests", _clear_requests)
    router.add_get(f"{PREFIX}/config", _config)
    router.add_patch(f"{PREFIX}/config", _patch_config)
    router.add_delete(f"{PREFIX}/sessions", _clear_sessions)
    router.add_post(f"{PREFIX}/reset", _reset)
    router.add_get(f"{PREFIX}/settings", _all_settings)
    router.add_get(PREFIX + "/settings/{type}", _get_settings)
    router.add_put(PREFIX + "/settings/{type}", _save_settings)
    router.add_delete(PREFIX + "/settings/{type}", _clear_settings)
    router.add_post(f"{PREFIX}/explain", _explain)
    router.add_get(f"{PREFIX}/catalog", _catalog)
    router.add_get(PREFIX + "/products/{id}", _product)
    router.add_get(f"{PREFIX}/openapi.json", _openapi)

"""``/_sandbox/`` control routes, for tests and the demo. They exist only in the sandbox.

No token is needed: the sandbox binds to loopback by default and these routes
are how a test reads what a producer sent and turns the failure knobs.

- ``GET /_sandbox/health`` -> ``{"ok": true}``
- ``GET /_sandbox/requests[?since=N]`` -> ``{"count": C, "requests": [...]}``:
  the request log (see :mod:`sandbox.request_log`) from index N on; ``count``
  is the number recorded since the last clear, so passing it back as ``since``
  polls for only the new ones
- ``DELETE /_sandbox/requests`` -> clears the log, indexes restart at 0
- ``GET /_sandbox/config`` -> the knobs (token redacted)
- ``PATCH /_sandbox/config`` with ``{"knob": value, ...}`` -> applies all or
  none; 400 naming the knob for an unknown knob or a bad value. Sending
  ``seed`` (even unchanged) restarts the failure-injection sequence.
- ``DELETE /_sandbox/sessions`` -> forgets every session's history
"""

from __future__ import annotations

import json

from aiohttp import web

from fashionai_pipeline.sandbox.config import ConfigError
from fashionai_pipeline.sandbox.state import STATE

PREFIX = "/_sandbox"


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


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
        changes = json.loads(await request.read())
    except ValueError:
        return _bad_request("body: not valid JSON")
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
    engine = request.app[STATE].engine
    cleared = engine.session_count()
    engine.clear()
    return web.json_response({"ok": True, "cleared": cleared})


def add_control_routes(app: web.Application) -> None:
    """Register the ``/_sandbox/`` routes on ``app`` (which must hold ``STATE``)."""
    app.router.add_get(f"{PREFIX}/health", _health)
    app.router.add_get(f"{PREFIX}/requests", _requests)
    app.router.add_delete(f"{PREFIX}/requests", _clear_requests)
    app.router.add_get(f"{PREFIX}/config", _config)
    app.router.add_patch(f"{PREFIX}/config", _patch_config)
    app.router.add_delete(f"{PREFIX}/sessions", _clear_sessions)

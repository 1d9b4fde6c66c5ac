"""The HTTP service: aiohttp routes over the storefront API (docs/SERVICE.md).

    POST /v1/events      ingest key   one event or {"events": [...]}; 202 / 207 / 422 / 503
    GET  /v1/rankings    either key   the cached ranking; wait_ms waits (notified) for one
    POST /v1/rankings    either key   the same, merged with a native list
    POST /v1/views       ingest key   publish-and-wait for one page view
    GET  /metrics        ingest key   the reads' counters (sources, outcomes), Prometheus text
    GET  /openapi.json, /healthz, /readyz
    (every GET answers HEAD too; a POST body is application/json, identity or gzip, bounded
    in size and in time: http.read_json)

A read with a publishable read key needs the shopper's signature (signing.py);
CORS headers are given only on the read paths, only to listed origins, and
never to a request made with an ingest key. Every error body is JSON
`{"error": {"code", "message", "field"?}}`; a secret is never echoed or logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Literal

import redis.asyncio as aioredis
from aiohttp import web

from fashionai_pipeline.producers import errors
from fashionai_pipeline.producers.attribution import prometheus_text
from fashionai_pipeline.producers.errors import InvalidEvent
from fashionai_pipeline.producers.event import Event, parse_event
from fashionai_pipeline.producers.message import compact_json
from fashionai_pipeline.producers.publisher import AsyncPublisher, Publisher
from fashionai_pipeline.producers.reader import AsyncRankingReader
from fashionai_pipeline.producers.service.backend import broker_answers, cache_answers, publish_events, word
from fashionai_pipeline.producers.service.config import Keys, ServiceSettings
from fashionai_pipeline.producers.service.http import (
    ApiError,
    facts_of,
    json_response,
    native_list,
    page_size_of,
    problem,
    query_of,
    read_json,
    served_json,
    shopper_key,
    stock_of,
    wait_ms_of,
)
from fashionai_pipeline.producers.service.openapi import VIEW_WAIT_MS, spec
from fashionai_pipeline.producers.service.signing import verify_shopper
from fashionai_pipeline.producers.serving import AsyncRankingServer
from fashionai_pipeline.producers.settings import Settings

log = logging.getLogger("fashionai.service")

READ_PATHS: Final = frozenset({"/v1/rankings"})
READ_FIELDS: Final = frozenset(
    {"eventType", "id", "sessionId", "userId", "native", "wait_ms", "shopper", "page_size", "stock", "facts"}
)
KeyKind = Literal["ingest", "read"]
PROMETHEUS: Final = {"x-content-type-options": "nosniff"}  # text/plain; version=0.0.4 is the format's type


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    kind: KeyKind


Handler = Callable[[web.Request, list[Caller]], Awaitable[web.Response]]


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class Service:
    """The state one service process shares between requests (built in the app's lifespan)."""

    def __init__(self, settings: Settings, service: ServiceSettings, keys: Keys) -> None:
        self.settings = settings
        self.service = service
        self.keys = keys
        self.origins = service.origins()
        # Keys are compared as SHA-256 digests: equal length, so compare_digest leaks nothing.
        ingest: KeyKind = "ingest"
        read: KeyKind = "read"
        self._keys = [(_digest(k), t, ingest) for k, t in keys.ingest] + [
            (_digest(k), t, read) for k, t in keys.read
        ]
        self.spec = spec(max_events=service.serve_max_events, max_wait_ms=service.serve_max_wait_ms)
        self.publisher: AsyncPublisher | None = None
        self.batch_publisher = Publisher(settings)  # used only on `publishing`, its one thread
        self.publishing = ThreadPoolExecutor(1, thread_name_prefix="fashionai-ingest")
        self.server: AsyncRankingServer | None = None
        self.cache: aioredis.Redis | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.publisher = AsyncPublisher(self.settings)
        self.server = AsyncRankingServer(
            self.settings, publisher=self.publisher, reader=AsyncRankingReader(self.settings)
        )
        self.cache = aioredis.Redis.from_url(
            self.settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.aclose()
            await self.server.reader.aclose()
        if self.publisher is not None:
            await self.publisher.aclose()
        if self.cache is not None:
            await self.cache.aclose()
        await asyncio.get_running_loop().run_in_executor(self.publishing, self.batch_publisher.close)
        self.publishing.shutdown(wait=False)

    # -- auth --------------------------------------------------------------------------

    def caller(self, request: web.Request, *, allow_read: bool) -> Caller:
        """Who is calling, from `Authorization: Bearer <key>`. Raises ApiError 401/403."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "Authorization: Bearer <key> required")
        presented = _digest(token.strip().encode("utf-8", "surrogateescape"))
        found: tuple[str, KeyKind] | None = None
        for digest, tenant, kind in self._keys:  # every key compared: no early exit
            if hmac.compare_digest(digest, presented):
                found = (tenant, kind)
        if found is None:
            raise ApiError(401, "unauthorized", "the key is not valid")
        if found[1] == "read" and not allow_read:
            raise ApiError(403, "forbidden", "a read key may only read rankings (/v1/rankings)")
        return Caller(*found)

    def check_shopper(self, caller: Caller, token: str | None, session_id: str, user_id: str | None) -> None:
        """A read key reads only the shopper its page was signed for. Raises ApiError 403."""
        if caller.kind != "read":
            return
        secrets = self.keys.signing.get(caller.tenant, ())
        verdict = verify_shopper(secrets, token, caller.tenant, session_id, user_id)
        if verdict != "ok":
            raise ApiError(403, f"shopper_signature_{verdict}", f"shopper signature {verdict}", "shopper")

    def cors(self, request: web.Request, caller: Caller | None) -> dict[str, str]:
        """CORS headers for a listed origin on a read path, unless the caller used an ingest key."""
        origin = request.headers.get("origin")
        if origin is None or origin not in self.origins or request.path not in READ_PATHS:
            return {}
        if caller is not None and caller.kind == "ingest":
            return {}
        return {"access-control-allow-origin": origin, "vary": "Origin"}


# -- the app -----------------------------------------------------------------------------


class Routes:
    """The request handlers; each raises ApiError for any answer but success."""

    def __init__(self, state: Service) -> None:
        self.state = state
        self.service = state.service

    async def events(self, request: web.Request, box: list[Caller]) -> web.Response:
        state, service = self.state, self.service
        caller = state.caller(request, allow_read=False)
        box.append(caller)
        data = await read_json(request, service.serve_max_body, service.serve_body_timeout)
        batch = isinstance(data, dict) and "events" in data
        if batch:
            items = data["events"]
            if not isinstance(items, list) or set(data) != {"events"}:
                raise ApiError(
                    422, "invalid_request", "must be a list of events (and the only field)", "events"
                )
        else:
            items = [data]
        if len(items) > service.serve_max_events:
            raise ApiError(413, "too_many_events", f"at most {service.serve_max_events} events", "events")
        if not items:
            raise ApiError(422, "invalid_request", "must hold at least one event", "events")
        valid: list[tuple[int, Event]] = []
        refused: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                where = f"events[{i}]" if batch else "body"
                refused.append({"index": i, "field": where, "message": "must be an event object"})
                continue
            try:
                valid.append((i, parse_event(item)))
            except InvalidEvent as exc:
                refused.append({"index": i, "field": exc.field, "message": exc.rule})
        ids: list[str | None] = [None] * len(items)
        assert state.publisher is not None
        failed = await publish_events(
            state.publisher, state.batch_publisher, state.publishing, caller.tenant, valid, ids
        )
        accepted = len(valid) - len(failed)
        body: dict[str, Any] = {"accepted": accepted, "ids": ids, "refused": refused, "failed": failed}
        if accepted == len(items):
            return json_response(202, body)
        if accepted:
            return json_response(207, body)
        if failed:
            body.update(problem(ApiError(503, failed[0]["code"], "the broker took none of the events")))
            return json_response(503, body)
        first = refused[0]
        body.update(problem(ApiError(422, "invalid_event", first["message"], first["field"])))
        return json_response(422, body)

    async def rankings(self, request: web.Request, box: list[Caller]) -> web.Response:
        state = self.state
        if request.method == "OPTIONS":
            return self.preflight(request)
        caller = state.caller(request, allow_read=True)
        box.append(caller)
        params: dict[str, Any]
        native: list[str] | None = None
        query = request.method != "POST"  # GET, or HEAD: the same answer without its body
        if not query:
            params = await read_json(request, self.service.serve_max_body, self.service.serve_body_timeout)
            if not isinstance(params, dict):
                raise ApiError(422, "invalid_request", "must be a JSON object", "body")
            unknown = set(params) - READ_FIELDS
            if unknown:
                raise ApiError(422, "invalid_request", "unknown field", sorted(unknown)[0])
            native = native_list(params.get("native", []))
            stock, facts = stock_of(params), facts_of(params)
        else:
            params = query_of(request)
            stock, facts = None, None
        event_type, item_id, session_id, user_id = shopper_key(params)
        wait_ms = wait_ms_of(params.get("wait_ms", 0), self.service, query=query)
        shopper = params.get("shopper")
        if "shopper" in params and (not isinstance(shopper, str) or len(shopper) > 100):
            raise ApiError(422, "invalid_request", "must be a string of at most 100 characters", "shopper")
        state.check_shopper(caller, shopper, session_id, user_id)
        assert state.server is not None
        page_size = page_size_of(params, query=query)
        served = await state.server.read(
            event_type, item_id, session_id, native, user_id, wait_ms=wait_ms, tenant=caller.tenant,
            page_size=page_size, stock=stock, facts=facts,
        )  # fmt: skip
        return json_response(200, served_json(served), state.cors(request, caller))

    def preflight(self, request: web.Request) -> web.Response:
        headers = self.state.cors(request, None)
        method = request.headers.get("access-control-request-method", "")
        if not headers or method not in ("GET", "POST"):
            raise ApiError(403, "cors_refused", "this origin or method may not call this path")
        headers.update(
            {
                "access-control-allow-methods": "GET, POST",
                "access-control-allow-headers": "Authorization, Content-Type",
                "access-control-max-age": "600",
            }
        )
        return web.Response(status=204, headers=headers)

    async def views(self, request: web.Request, box: list[Caller]) -> web.Response:
        state = self.state
        caller = state.caller(request, allow_read=False)
        box.append(caller)
        data = await read_json(request, self.service.serve_max_body, self.service.serve_body_timeout)
        if not isinstance(data, dict):
            raise ApiError(422, "invalid_request", "must be a JSON object", "body")
        unknown = set(data) - {"event", "native", "wait_ms", "page_size", "stock", "facts"}
        if unknown:
            raise ApiError(422, "invalid_request", "unknown field", sorted(unknown)[0])
        if "event" not in data:
            raise ApiError(422, "invalid_request", "required", "event")
        if not isinstance(data["event"], dict):
            raise ApiError(422, "invalid_event", "must be an event object", "event")
        try:
            event = parse_event(data["event"])
        except InvalidEvent as exc:
            raise ApiError(422, "invalid_event", exc.rule, f"event.{exc.field}") from None
        native = native_list(data.get("native"))
        default = min(VIEW_WAIT_MS, self.service.serve_max_wait_ms)
        wait_ms = wait_ms_of(data.get("wait_ms", default), self.service)
        page_size = page_size_of(data)
        stock, facts = stock_of(data), facts_of(data)
        assert state.server is not None
        try:
            served = await state.server.view(
                event,
                native,
                wait_ms=wait_ms,
                tenant=caller.tenant,
                page_size=page_size,
                stock=stock,
                facts=facts,
            )
        except errors.PublishError as exc:
            raise ApiError(503, "broker_unavailable", "the broker did not take the event") from exc
        if served.message_id is None:  # FASHIONAI_ON_BROKER_DOWN=drop dropped it: not taken either
            raise ApiError(503, "broker_unavailable", "the broker did not take the event (dropped)")
        return json_response(200, served_json(served, with_id=True))

    async def refuse_preflight(self, request: web.Request, box: list[Caller]) -> web.Response:
        raise ApiError(403, "cors_refused", "this path is not open to browsers")

    async def metrics(self, request: web.Request, box: list[Caller]) -> web.Response:
        """The reads' counters (producers.attribution) in Prometheus' text format; an ingest key."""
        box.append(self.state.caller(request, allow_read=False))
        assert self.state.server is not None
        text = prometheus_text(self.state.server.reader.stats)
        return web.Response(text=text, content_type="text/plain", charset="utf-8", headers=PROMETHEUS)

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response(200, {"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        assert self.state.cache is not None
        broker, cache = await asyncio.gather(
            broker_answers(self.state.settings), cache_answers(self.state.cache)
        )
        ok = broker and cache
        verdict = {"status": "ready" if ok else "unready", "broker": word(broker), "cache": word(cache)}
        return json_response(200 if ok else 503, verdict)


def server_options(service: ServiceSettings) -> dict[str, Any]:
    """The options of aiohttp's server (web.run_app, AppRunner) that create_app's app needs.

    `auto_decompress=False`: a body is decoded by http.read_json, within the body bound and
    only for the encodings the service takes (identity, gzip). `keepalive_timeout`: aiohttp
    arms it when a connection opens and after each answer, and closes a connection still
    without a complete request when it fires, so it bounds slow or unfinished headers too.
    """
    return {"auto_decompress": False, "keepalive_timeout": service.serve_idle_timeout}


def create_app(settings: Settings, service: ServiceSettings) -> web.Application:
    """The aiohttp app. Raises ServiceConfigError for bad keys before anything listens.

    Serve it with `server_options(service)` (run.serve does).
    """
    state = Service(settings, service, Keys.from_settings(service, settings))
    routes = Routes(state)
    openapi_body = compact_json(state.spec).encode()

    def guarded(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def run(request: web.Request) -> web.Response:
            caller_box: list[Caller] = []
            try:
                return await handler(request, caller_box)
            except ApiError as exc:
                headers = state.cors(request, caller_box[0] if caller_box else None)
                if exc.status == 401:
                    headers["www-authenticate"] = "Bearer"
                response = json_response(exc.status, problem(exc), headers)
                if exc.status == 408:
                    response.force_close()  # the rest of the body may still be on its way
                return response

        return run

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=openapi_body, content_type="application/json")

    @web.middleware
    async def json_errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """aiohttp's own answers (404, 405, 413 …) as JSON error bodies, keeping `Allow`."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
                exc.status, "http_error"
            )
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            return json_response(exc.status, problem(ApiError(exc.status, code, exc.reason)), headers)
        except Exception as exc:  # anything unforeseen: a JSON 500, and a log line without the request
            log.error(
                "unhandled %s on %s %s", type(exc).__name__, request.method, request.path, exc_info=True
            )
            return json_response(500, problem(ApiError(500, "internal", "internal error")))

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        await state.start()
        yield
        await state.stop()

    async def server_header(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = "fashionai-pipeline"  # not the framework and its version

    # client_max_size above our own bound: `_body` answers 413 itself, as JSON.
    app = web.Application(middlewares=[json_errors], client_max_size=service.serve_max_body + 1)
    app.cleanup_ctx.append(lifespan)
    app.on_response_prepare.append(server_header)
    app.router.add_post("/v1/events", guarded(routes.events))
    app.router.add_route("OPTIONS", "/v1/events", guarded(routes.refuse_preflight))
    app.router.add_get("/v1/rankings", guarded(routes.rankings))
    app.router.add_post("/v1/rankings", guarded(routes.rankings))
    app.router.add_route("OPTIONS", "/v1/rankings", guarded(routes.rankings))
    app.router.add_post("/v1/views", guarded(routes.views))
    app.router.add_route("OPTIONS", "/v1/views", guarded(routes.refuse_preflight))
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/metrics", guarded(routes.metrics))
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_get("/readyz", routes.readyz)
    app[SERVICE] = state
    return app


SERVICE: Final = web.AppKey("service", Service)

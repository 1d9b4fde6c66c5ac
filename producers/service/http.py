"""Reading requests and writing answers for the service: bounds, fields, JSON errors.

Every refusal is an ApiError carrying the status, a stable code, a message
and the field at fault; the app turns it into `{"error": {...}}`.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from fashionai_pipeline.producers.errors import InvalidEvent
from fashionai_pipeline.producers.event import MAX_LEN, make_event
from fashionai_pipeline.producers.message import compact_json
from fashionai_pipeline.producers.recsettings import ProductFacts
from fashionai_pipeline.producers.service.config import ServiceSettings
from fashionai_pipeline.producers.service.openapi import MAX_NATIVE
from fashionai_pipeline.producers.serving import Served
from fashionai_pipeline.producers.stock import (
    FactsCallable,
    StockCallable,
    counts_check,
    facts_from_json,
    facts_map,
)


class ApiError(Exception):
    """An answer other than success: status, a stable code, a message, maybe the field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


async def read_json(request: web.Request, limit: int) -> Any:
    """The JSON body, at most `limit` bytes. Raises ApiError 413 / 400."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, "too_large", f"the body is larger than {limit} bytes", "body")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(65_536):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the body is larger than {limit} bytes", "body")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON", "body") from None


def wait_ms_of(value: object, service: ServiceSettings) -> int:
    if isinstance(value, str):
        value = int(value) if value.isdigit() and len(value) <= 6 else None
    elif isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema counts 24.0 as an integer
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= service.serve_max_wait_ms:
        raise ApiError(
            422, "invalid_request", f"must be an integer from 0 to {service.serve_max_wait_ms}", "wait_ms"
        )
    return value


def native_list(value: object) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_NATIVE:
        raise ApiError(422, "invalid_request", f"must be a list of at most {MAX_NATIVE} ids", "native")
    for i, pid in enumerate(value):
        if not isinstance(pid, str) or len(pid) > MAX_LEN:
            raise ApiError(
                422, "invalid_request", f"must be a string of at most {MAX_LEN} characters", f"native[{i}]"
            )
    return value


def page_size_of(params: dict[str, Any], *, query: bool = False) -> int | None:
    """The optional `page_size`: a whole number from 1 to MAX_NATIVE (in a query string, its digits)."""
    if "page_size" not in params:
        return None
    value = params["page_size"]
    if isinstance(value, str) and query:
        value = int(value) if value.isdigit() and len(value) <= 6 else None
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NATIVE:
        raise ApiError(422, "invalid_request", f"must be an integer from 1 to {MAX_NATIVE}", "page_size")
    return value


def stock_of(params: dict[str, Any]) -> StockCallable | None:
    """The optional `stock`: units in stock per product id (an id not in it has none)."""
    if "stock" not in params:
        return None
    value = params["stock"]
    if not isinstance(value, dict) or len(value) > MAX_NATIVE:
        raise ApiError(422, "invalid_request", f"must map at most {MAX_NATIVE} ids to units", "stock")
    for pid, units in value.items():
        if len(pid) > MAX_LEN or isinstance(units, bool) or not isinstance(units, int):
            raise ApiError(
                422, "invalid_request", "must be a whole number of units", f"stock.{pid[:MAX_LEN]}"
            )
    return counts_check(value)


def facts_of(params: dict[str, Any]) -> FactsCallable | None:
    """The optional `facts`: per product id, its price, discount and units per size."""
    if "facts" not in params:
        return None
    value = params["facts"]
    if not isinstance(value, dict) or len(value) > MAX_NATIVE:
        raise ApiError(422, "invalid_request", f"must map at most {MAX_NATIVE} ids to facts", "facts")
    parsed: dict[str, ProductFacts] = {}
    for pid, obj in value.items():
        try:
            if len(pid) > MAX_LEN:
                raise ValueError(f"id: at most {MAX_LEN} characters")
            parsed[pid] = facts_from_json(obj)
        except ValueError as exc:
            where, _, rule = str(exc).partition(": ")
            raise ApiError(422, "invalid_request", rule or where, f"facts.{pid[:MAX_LEN]}.{where}") from None
    return facts_map(parsed)


def shopper_key(params: dict[str, Any]) -> tuple[str, str, str, str | None]:
    """(eventType, id, sessionId, userId), validated by the event contract's rules."""
    for name in ("eventType", "id", "sessionId", "userId"):
        if name in params and not isinstance(params[name], str):
            raise ApiError(422, "invalid_request", "must be a string", name)
    event_type = params.get("eventType")
    if event_type is None:
        raise ApiError(422, "invalid_request", "required", "eventType")
    session_id = params.get("sessionId")
    if session_id is None:
        raise ApiError(422, "invalid_request", "required", "sessionId")
    try:
        ev = make_event(event_type, session_id, params.get("id", ""), params.get("userId"))
    except InvalidEvent as exc:
        field = "id" if exc.field == "data.id" else exc.field
        raise ApiError(422, "invalid_request", exc.rule, field) from None
    return ev.eventType, ev.data.id, ev.sessionId, ev.userId


def json_response(status: int, payload: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=compact_json(payload).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def served_json(served: Served, *, with_id: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"products": served.products, "source": served.source, "age_ms": served.age_ms}
    if with_id:
        out["message_id"] = served.message_id
    return out


def problem(exc: ApiError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.field is not None:
        error["field"] = exc.field
    return {"error": error}

"""Reading requests and writing answers for the service: bounds, fields, JSON errors.

Every refusal is an ApiError carrying the status, a stable code, a message
and the field at fault; the app turns it into `{"error": {...}}`.
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from typing import Any, Final

from aiohttp import ClientPayloadError, web

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


JSON_TYPE: Final = "application/json"
ENCODINGS: Final = frozenset({"identity", "gzip", "x-gzip"})  # what a request body may be sent as
_DIGITS = re.compile(r"[0-9]{1,6}")  # a whole number in a query string: ASCII digits only


def check_body_headers(request: web.Request) -> str:
    """The body's encoding ("identity" or "gzip"), from its headers alone, before any byte is read.

    Content-Type: absent or application/json (any parameters), else 415 `unsupported_media_type`.
    Content-Encoding: absent, identity or gzip (one coding), else 415 `unsupported_encoding`.
    """
    types = request.headers.getall("content-type", [])
    if types and (len(types) > 1 or types[0].partition(";")[0].strip().lower() != JSON_TYPE):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the body must be sent as Content-Type: {JSON_TYPE}",
            "Content-Type",
        )
    codings = [
        c.strip().lower() for h in request.headers.getall("content-encoding", []) for c in h.split(",")
    ]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return "identity"
    if len(codings) > 1 or codings[0] not in ENCODINGS:
        raise ApiError(
            415,
            "unsupported_encoding",
            "a body may be sent as Content-Encoding: identity or gzip, nothing else",
            "Content-Encoding",
        )
    return "gzip"


async def read_json(request: web.Request, limit: int, timeout: float) -> Any:
    """The JSON body: at most `limit` bytes (sent and decoded), in at most `timeout` seconds.

    Raises ApiError 415 (check_body_headers), 413 (too large), 408 (not in time), 400 (not
    JSON, a broken gzip stream, or a body the connection cut short).
    """
    encoding = check_body_headers(request)
    length = request.headers.get("content-length")
    if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_chunked(65_536):
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            408, "body_timeout", f"the body did not arrive in full within {timeout:g} s", "body"
        ) from None
    except (web.RequestPayloadError, ClientPayloadError, ConnectionError):
        raise ApiError(400, "invalid_body", "the body is cut short or badly framed", "body") from None
    raw = b"".join(chunks)
    if encoding == "gzip":
        raw = _gunzip(raw, limit)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON", "body") from None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the body is larger than {limit} bytes", "body")


def _gunzip(data: bytes, limit: int) -> bytes:
    """A gzip body (one member or several) decoded to at most `limit` bytes. Raises ApiError 400/413."""
    out: list[bytes] = []
    size = 0
    while True:
        stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            part = stream.decompress(data, limit + 1 - size)
        except zlib.error:
            raise ApiError(400, "invalid_body", "the body is not a valid gzip stream", "body") from None
        size += len(part)
        if size > limit or stream.unconsumed_tail:
            raise _too_large(limit)
        if not stream.eof:
            raise ApiError(400, "invalid_body", "the gzip stream is cut short", "body")
        out.append(part)
        data = stream.unused_data
        if not data:
            return b"".join(out)


def query_of(request: web.Request) -> dict[str, str]:
    """The query string as a dict; a parameter given twice is refused (400), never guessed."""
    params: dict[str, str] = {}
    for name, value in request.query.items():
        if name in params:
            raise ApiError(400, "duplicate_parameter", "given more than once", name[:MAX_LEN])
        params[name] = value
    return params


def _whole(value: object, *, query: bool) -> object:
    """A whole number as JSON has it (an integer; 24.0 counts, as in JSON Schema), or in a
    query string its ASCII digits; anything else is returned as is, for the caller to refuse."""
    if query and isinstance(value, str):
        return int(value) if _DIGITS.fullmatch(value) else None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def wait_ms_of(value: object, service: ServiceSettings, *, query: bool = False) -> int:
    value = _whole(value, query=query)
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
    value = _whole(params["page_size"], query=query)
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

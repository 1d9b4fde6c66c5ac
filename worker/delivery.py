"""One upstream call per event: POST the event's body (docs/UPSTREAM.md), classify the answer.

`Deliverer.send` never raises for an upstream problem; it returns an Outcome:

- Delivered(products)            2xx with a valid {"products": [...]}
- Failed(retryable=True, ...)    timeout, connection error, 408, 429, 5xx
- Failed(retryable=False, ...)   400, 403, 404, 422, other 4xx, a 2xx with a bad body,
                                 an answer larger than `max_response_bytes`
- Failed(auth=True, ...)         401: the deployment's token is wrong (not the event)

Size bounds: the answer is read up to `max_response_bytes` (default 1 MiB) and
no further; a ranking keeps its first `max_ranking_items` ids (default 500), and
an id longer than the event contract's own id bound makes the answer malformed.

The token is set once as a default header on the client; it is never part of an
Outcome, a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import httpx

from fashionai_pipeline.producers.event import MAX_LEN
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.producers.transport import Tuning

USER_AGENT = "fashionai-pipeline/0.1"
_BODY_LIMIT = 2000  # characters of an error body kept in an Outcome
_TIMEOUTS = (TimeoutError, aiohttp.ServerTimeoutError, httpx.TimeoutException)


@dataclass(frozen=True, slots=True)
class Delivered:
    products: list[str]
    status: int = 200


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str
    retryable: bool
    status: int | None = None
    body: str = ""
    retry_after: float | None = None
    auth: bool = False


Outcome = Delivered | Failed


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(status: int, content: bytes, retry_after: str | None, *, max_items: int = 500) -> Outcome:
    """Turn an HTTP answer into an Outcome (pure; unit-tested without a server)."""
    text = content[:_BODY_LIMIT].decode("utf-8", "replace")
    if 200 <= status < 300:
        try:
            products = json.loads(content)["products"]
        except (ValueError, KeyError, TypeError):
            return Failed("unexpected response body: no products list", False, status, text)
        if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
            return Failed("unexpected response body: products is not a list of ids", False, status, text)
        if any(len(p) > MAX_LEN for p in products):
            reason = f"unexpected response body: a product id over {MAX_LEN} characters"
            return Failed(reason, False, status, text)
        return Delivered(products[:max_items], status)
    if status == 401:
        return Failed("upstream refused the app token (HTTP 401)", True, status, text, auth=True)
    if status == 429:
        return Failed("rate limited (HTTP 429)", True, status, text, parse_retry_after(retry_after))
    if status >= 500 or status == 408:
        return Failed(f"upstream error (HTTP {status})", True, status, text, parse_retry_after(retry_after))
    if 400 <= status < 500:
        return Failed(f"refused by upstream (HTTP {status})", False, status, text)
    return Failed(f"unexpected status (HTTP {status})", True, status, text)


class _TooLarge(Exception):
    def __init__(self, head: bytes) -> None:
        self.head = head


def network_failure(exc: BaseException, budget: float) -> Failed:
    """Name what went wrong on the wire, from the exception or its cause.

    The httpx-aiohttp transport maps every `aiohttp.ClientConnectionError`
    (a reset, an EOF, a refused connection) to `httpx.ConnectTimeout`; the
    original is its `__cause__`, so a reset is reported as a reset, not as a
    timeout it never was.
    """
    cause = exc.__cause__ if isinstance(exc, httpx.HTTPError) else None
    if isinstance(cause, aiohttp.ClientError):
        exc = cause  # the transport's mapping hid what happened
    if isinstance(exc, _TIMEOUTS):
        return Failed(f"timeout after {budget:g}s", True)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return Failed("connection closed by upstream before an answer", True)
    return Failed(f"connection error: {type(exc).__name__}", True)


TransportName = Literal["aiohttp", "httpcore"]


class Deliverer:
    """Owns one httpx transport; create and close it on the same event loop.

    `transport="aiohttp"` (default) keeps the httpx API over the httpx-aiohttp
    transport, because httpcore's pool degrades above ~20 concurrent requests
    (encode/httpx#3215; docs/PERFORMANCE.md); "httpcore" is httpx's own transport.

    Requests go straight to the transport (`handle_async_request`, httpx's
    public transport API) rather than through `AsyncClient.post`: the client's
    per-request layers (auth, redirects, cookies, event hooks, header merging)
    do nothing for one fixed POST and were ~30% of the worker's CPU in a
    py-spy profile (docs/PERFORMANCE.md).
    """

    def __init__(self, settings: Settings, *, transport: TransportName = "aiohttp") -> None:
        self.settings = settings
        # The request body as the storefront side writes it (FASHIONAI_JSON_TEMPLATES decides how).
        self._body_json = Tuning.of(settings).codec.body
        self.url = settings.api_url
        self._timeout = settings.request_timeout + settings.connect_timeout
        self._max_bytes = settings.max_response_bytes
        self._max_items = settings.max_ranking_items
        limit = settings.concurrency
        headers = {
            "Content-Type": "application/json",
            "X-FashionAI-APP-Token": settings.app_token.get_secret_value(),
            "User-Agent": USER_AGENT,
        }
        self._headers = httpx.Headers(headers)
        self._url_obj = httpx.URL(self.url)
        timeout = httpx.Timeout(settings.request_timeout, connect=settings.connect_timeout)
        self._extensions = {"timeout": timeout.as_dict()}
        limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        self._transport: httpx.AsyncBaseTransport
        if transport == "aiohttp":
            from httpx_aiohttp import AiohttpTransport

            connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, keepalive_timeout=30)
            session = aiohttp.ClientSession(connector=connector)
            self._transport = AiohttpTransport(client=session)
        else:
            self._transport = httpx.AsyncHTTPTransport(limits=limits)

    def __repr__(self) -> str:
        return f"<Deliverer url={self.url}>"

    async def send(self, body: dict[str, Any]) -> Outcome:
        """POST one event body. Never raises for upstream or network trouble."""
        payload = self._body_json(body).encode()
        try:
            async with asyncio.timeout(self._timeout):
                request = httpx.Request(
                    "POST", self._url_obj, headers=self._headers, content=payload, extensions=self._extensions
                )
                response = await self._transport.handle_async_request(request)
                try:
                    content = await self._read(response)
                finally:
                    await response.aclose()
        except _TooLarge as big:
            return Failed(
                f"upstream answer larger than {self._max_bytes} bytes",
                False,
                response.status_code,
                big.head[:_BODY_LIMIT].decode("utf-8", "replace"),
            )
        except (TimeoutError, httpx.TransportError, aiohttp.ClientError, OSError) as exc:
            return network_failure(exc, self._timeout)
        return classify(
            response.status_code, content, response.headers.get("retry-after"), max_items=self._max_items
        )

    async def _read(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise _TooLarge(b"")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            size += len(chunk)
            if size > self._max_bytes:
                raise _TooLarge(b"".join(chunks))
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self._transport.aclose()

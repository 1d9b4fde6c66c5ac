"""Reading request bodies with bounds: size (413), time (408), and the connection timeouts.

Every route that reads a body (the recommendation path, the 405 answer, the
control routes) reads it with :func:`read_body`, so a body over
:data:`MAX_BODY_BYTES` is a JSON 413 and a body that does not arrive within
the app's ``body_timeout_s`` — a client that sent ``Content-Length: 100``, four
bytes and then nothing — is a JSON 408 on a closed connection
(:func:`answer_and_close`), never a handler waiting forever.

The idle timeout (``idle_timeout_s``) is aiohttp's ``keepalive_timeout``
(runner.py): in aiohttp 3.14 it starts when a connection opens and again after
each answer, and closes a connection that has not sent a complete request head
by then. It does not cover a body being read, hence the body timeout.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Final

from aiohttp import web

from fashionai_pipeline.sandbox.config import ConfigError

MAX_BODY_BYTES: Final = 64 * 1024  # real bodies are < 1 KB; this bounds log memory
DEFAULT_BODY_TIMEOUT_S: Final = 10.0
DEFAULT_IDLE_TIMEOUT_S: Final = 75.0
MAX_TIMEOUT_S: Final = 3600.0
TOO_LARGE: Final = json.dumps({"error": f"body: larger than {MAX_BODY_BYTES} bytes"}).encode()


def check_timeout(name: str, value: object) -> float:
    """``value`` as seconds in (0, :data:`MAX_TIMEOUT_S`]; raises :class:`ConfigError` naming ``name``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= MAX_TIMEOUT_S
    ):
        raise ConfigError(f"{name}: must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}")
    return float(value)


class BodyRefused(Exception):
    """The body was too large (413) or too slow (408); answer ``status`` with ``reply``."""

    def __init__(self, status: int, reply: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.reply = reply


def _too_slow(timeout_s: float) -> bytes:
    return json.dumps({"error": f"body: not received within {timeout_s:g} s"}).encode()


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """The whole body, within ``MAX_BODY_BYTES`` and ``timeout_s``; raises :class:`BodyRefused`."""
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyRefused(413, TOO_LARGE) from None
    except TimeoutError:
        raise BodyRefused(408, _too_slow(timeout_s)) from None


async def answer_and_close(request: web.Request, response: web.Response) -> web.Response:
    """Send ``response`` now and close the connection (the rest of a body will not come).

    aiohttp would otherwise linger, reading the unfinished body for up to ten
    seconds more, before closing.
    """
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response

"""Running the service: `fashionai-pipeline serve [--host H] [--port P]` (worker/cli.py)."""

from __future__ import annotations

import asyncio
import logging
import sys

from pydantic import ValidationError

from fashionai_pipeline.producers.service.config import ServiceConfigError, ServiceSettings
from fashionai_pipeline.producers.settings import Settings

log = logging.getLogger("fashionai.service")


def serve(settings: Settings, *, host: str, port: int) -> int:
    """Serve until SIGINT/SIGTERM. Returns 2 (and prints why) when the settings are wrong.

    On SIGTERM aiohttp stops accepting, lets requests in flight finish (at most
    10 s), then closes the publisher and the subscriber. A connection without a
    complete request is closed after FASHIONAI_SERVE_IDLE_TIMEOUT; a body is read
    within FASHIONAI_SERVE_BODY_TIMEOUT (app.server_options, http.read_json).
    """
    try:
        from aiohttp import web

        from fashionai_pipeline.producers.service.app import create_app, server_options
    except ImportError as exc:
        print(
            f"error: serve needs the extra: pip install 'fashionai-pipeline[serve]' ({exc.name})",
            file=sys.stderr,
        )
        return 2
    try:
        service = ServiceSettings()
        app = create_app(settings, service)
    except ServiceConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        # Only the named fields and rules, never the values (pydantic echoes input).
        names = ", ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors())
        print(f"error: service settings: {names}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.server").addFilter(_MalformedRequests())
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,  # query strings carry shopper signatures; not worth a line per request
        print=lambda _: log.info("serving on http://%s:%d", host, port),
        shutdown_timeout=10,
        loop=_loop(),
        **server_options(service),
    )
    return 0


class _MalformedRequests(logging.Filter):
    """A request that is not valid HTTP is the client's fault: one INFO line, no traceback.

    aiohttp logs each at ERROR with its traceback (and answers 400 before any
    route runs), which would let any client fill the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args, record.exc_info = (
                "refused a malformed request (%s)",
                (type(exc).__name__,),
                None,
            )
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (the serve extra brings it where it exists), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()

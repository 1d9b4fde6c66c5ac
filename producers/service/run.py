"""Running the service: `fashionai-pipeline serve [--host H] [--port P]` (worker/cli.py)."""

from __future__ import annotations

import importlib.util
import logging
import sys

from pydantic import ValidationError

from fashionai_pipeline.producers.service.config import ServiceConfigError, ServiceSettings
from fashionai_pipeline.producers.settings import Settings


def serve(settings: Settings, *, host: str, port: int) -> int:
    """Serve until SIGINT/SIGTERM. Returns 2 (and prints why) when the settings are wrong."""
    try:
        import uvicorn

        from fashionai_pipeline.producers.service.app import create_app
    except ImportError as exc:
        print(
            f"error: serve needs the extra: pip install 'fashionai-pipeline[serve]' ({exc.name})",
            file=sys.stderr,
        )
        return 2
    try:
        app = create_app(settings, ServiceSettings())
    except ServiceConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        # Only the named fields, never the values (pydantic echoes input).
        names = ", ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors())
        print(f"error: service settings: {names}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        app,
        host=host,
        port=port,
        # uvloop and httptools when installed (the serve extra brings both): the
        # fastest pair measured (docs/PERFORMANCE.md); uvicorn's pure-Python ones otherwise.
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        log_level=settings.log_level.lower(),
        access_log=False,  # query strings carry shopper signatures; not worth a line per request
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    return 0

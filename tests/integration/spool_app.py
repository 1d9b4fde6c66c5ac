"""A WSGI page that publishes one productView per request: the spool test's server app.

`GET /?s=<session>` answers `<outcome> <message id>` (the Receipt), so the test sees what
each publish became. Settings come from FASHIONAI_* (spool_dir among them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from fashionai_pipeline.producers import Publisher, Settings

publisher = Publisher(Settings())  # built in the gunicorn master with --preload, used in its workers


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    session = parse_qs(environ.get("QUERY_STRING", ""))["s"][0]
    receipt = publisher.product_view(session, "p0001")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{receipt.outcome} {receipt.id}".encode()]

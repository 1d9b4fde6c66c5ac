"""Running the service: `fashionai-pipeline serve [--host H] [--port P]` (worker/cli.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

from pydantic import ValidationError

from fashionai_pipeline.producers.redaction import redact
from fashionai_pipeline.producers.service.config import ServiceConfigError, ServiceSettings
from fashionai_pipeline.producers.settings import Settings, explain

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
        # Only the variables and rules, never the values (pydantic echoes input).
        print(f"error: configuration: {redact(str(explain(exc)), settings.secrets())}", file=sys.stderr)
        return 2
    try:
        socks = listen(host, port)
    except ListenError as exc:
        print(f"error: serve: {exc}", file=sys.stderr)
        return exc.status
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.server").addFilter(_MalformedRequests())
    where = ", ".join(_url(sock) for sock in socks)
    web.run_app(
        app,
        sock=socks,  # bound here, so a failure names --host/--port, and --port 0 logs the real port
        access_log=None,  # query strings carry shopper signatures; not worth a line per request
        print=lambda _: log.info("serving on %s", where),
        shutdown_timeout=10,
        loop=_loop(),
        **server_options(service),
    )
    return 0


class ListenError(Exception):
    """`--host`/`--port` cannot be listened on; the message names them. `status`: the exit code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address `host` resolves to, on `port`, as asyncio's create_server
    binds them (SO_REUSEADDR; an IPv6 socket IPv6-only). An empty host: every interface.

    Raises ListenError: status 2 for a port outside 0-65535 or a host that does not resolve
    (the option is wrong), 1 when the system refuses the bind (the port in use, a privileged
    port, an address not on this host), with the OS's reason.
    """
    if not 0 <= port <= 65535:
        raise ListenError(f"--port {port}: not a TCP port (0-65535; 0: any free port)", 2)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, ValueError) as exc:  # gaierror; UnicodeError or a NUL in the name
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ListenError(
            f"--host {host!r}: does not resolve to an address to listen on ({reason})", 2
        ) from None
    socks: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in socks:
            sock.close()
        reason = exc.strerror or str(exc)
        raise ListenError(
            f"--host {host!r} --port {port}: cannot listen on {address[0]}: {reason}", 1
        ) from None
    return socks


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


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

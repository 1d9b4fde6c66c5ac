"""Ways to run the sandbox: blocking in the foreground, or in a background thread.

- :func:`run_sandbox` serves until SIGINT/SIGTERM and announces the bound port
  on stdout as ``sandbox listening on http://HOST:PORT`` (flushed), so a parent
  process can start it with ``--port 0`` and parse the line.
- :class:`SandboxServer` runs it on its own event loop in a daemon thread, for
  tests and the demo inside one process.

Both take ``body_timeout_s`` (default 10: a request body that has not fully
arrived by then is answered 408 and its connection closed) and
``idle_timeout_s`` (default 75: a connection that has not sent a complete
request head within that long of opening, or of its last answer, is closed;
aiohttp's ``keepalive_timeout``). See :mod:`sandbox.bodies`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, TextIO

from aiohttp import web

from fashionai_pipeline.sandbox.bodies import DEFAULT_BODY_TIMEOUT_S, DEFAULT_IDLE_TIMEOUT_S, check_timeout
from fashionai_pipeline.sandbox.config import ConfigError, SandboxConfig
from fashionai_pipeline.sandbox.ranking import RankingEngine
from fashionai_pipeline.sandbox.server import RECOMMENDATION_PATH, create_app
from fashionai_pipeline.sandbox.state import STATE, SandboxState

_BACKLOG: Final = 1024  # benchmarks open hundreds of connections at once
_SHUTDOWN_S: Final = 1.0  # an injected 30 s "timeout" must not hold up shutdown


def check_port(port: object) -> int:
    """``port`` if it is an integer from 0 to 65535; raises :class:`ConfigError` naming ``port``."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError("port: must be an integer from 0 to 65535 (0 picks a free one)")
    return port


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    on_ready: Callable[[int], None],
    stop: asyncio.Event,
    idle_timeout_s: float,
) -> None:
    # access_log=None: a log line per request would cost more than the ranking
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=_SHUTDOWN_S,
        keepalive_timeout=idle_timeout_s,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=_BACKLOG)
        await site.start()
        bound = runner.addresses[0][1]
        on_ready(int(bound))
        await stop.wait()
    finally:
        await runner.cleanup()


def run_sandbox(
    config: SandboxConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    engine: RankingEngine | None = None,
    out: TextIO | None = None,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
) -> None:
    """Serve the sandbox until SIGINT or SIGTERM; blocks. Port 0 picks a free port.

    Prints ``sandbox listening on <base url>`` to ``out`` (default stdout) once
    bound. Raises ``ConfigError`` (a ``ValueError``) for a port outside 0-65535
    or a bad timeout, ``OSError`` if the address cannot be bound (in use, a
    host that does not resolve: ``socket.gaierror``). Must run in the main
    thread for signals to be handled (elsewhere, only KeyboardInterrupt is).
    """
    stream = out if out is not None else sys.stdout
    check_port(port)
    idle_s = check_timeout("idle_timeout_s", idle_timeout_s)
    app = create_app(config, engine=engine, body_timeout_s=body_timeout_s)

    def announce(bound: int) -> None:
        # Everything built so far (catalog, app, aiohttp) lives as long as the
        # process: out of the collector's reach, a full collection stays short.
        gc.collect()
        gc.freeze()
        print(f"sandbox listening on {_base_url(host, bound)}", file=stream, flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # not the main thread, or no signal support: Ctrl-C still raises
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
        await _serve(app, host, port, announce, stop, idle_s)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


class SandboxServer:
    """The sandbox in a background thread, as a context manager.

    ``with SandboxServer() as sb: post(sb.url, ...)``. ``config`` is live: change
    knobs with :meth:`configure` (validated) between requests. ``start`` raises
    ``RuntimeError`` if the server does not come up within ``start_timeout``,
    or re-raises the bind error. ``stop`` is idempotent. The constructor raises
    ``ConfigError`` (a ``ValueError``) for a bad port or timeout.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        engine: RankingEngine | None = None,
        start_timeout: float = 10.0,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        self.config = config if config is not None else SandboxConfig()
        self.host = host
        self._requested_port = check_port(port)
        self._start_timeout = start_timeout
        self._idle_timeout_s = check_timeout("idle_timeout_s", idle_timeout_s)
        self._app = create_app(self.config, engine=engine, body_timeout_s=body_timeout_s)
        self._port: int | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = False

    @property
    def port(self) -> int:
        """The bound port; raises ``RuntimeError`` before :meth:`start`."""
        if self._port is None:
            raise RuntimeError("SandboxServer is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, no trailing slash."""
        return _base_url(self.host, self.port)

    @property
    def url(self) -> str:
        """The full recommendation endpoint URL."""
        return self.base_url + RECOMMENDATION_PATH

    def configure(self, **changes: object) -> None:
        """Change knobs, validated all-or-nothing; raises ``ConfigError``.

        A ``seed`` argument restarts the failure-injection sequence.
        """
        self.config.update(changes)
        if "seed" in changes:
            self._call(self._app[STATE].faults.reseed)

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """The request log from index ``since`` on (see ``GET /_sandbox/requests``)."""
        return self._app[STATE].log.snapshot(since)[1]

    def clear(self) -> None:
        """Empty the request log."""
        self._app[STATE].log.clear()

    def clear_sessions(self) -> None:
        """Forget every session's and user's history (runs on the server's loop)."""
        self._call(self._app[STATE].engine.clear)

    def reset(self) -> None:
        """A fresh start, knobs aside (see ``POST /_sandbox/reset``); runs on the server's loop."""
        self._call(self._app[STATE].reset)

    @property
    def app(self) -> web.Application:
        """The aiohttp app being served (its router lists the routes)."""
        return self._app

    @property
    def state(self) -> SandboxState:
        """The app's state (engine, storefronts, log); touch it from the server's loop only."""
        return self._app[STATE]

    def _call(self, fn: Callable[[], object]) -> None:
        # The engine and the dice belong to the loop thread; hop onto it.
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            fn()
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(self._start_timeout)

    def start(self) -> SandboxServer:
        """Bind and serve in a daemon thread; returns ``self`` once listening."""
        if self._started:
            # the aiohttp app is frozen after its first run; a new server is cheap
            raise RuntimeError("SandboxServer cannot be started twice; create a new one")
        self._started = True
        self._thread = threading.Thread(target=self._run, name="fashionai-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise RuntimeError(f"sandbox did not start within {self._start_timeout}s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        """Stop serving and join the thread; safe to call twice."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        thread.join(self._start_timeout + _SHUTDOWN_S + 5)
        self._thread = None
        self._port = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # handed to start(); the thread has no one else to tell
            self._error = exc
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()

        def ready(bound: int) -> None:
            self._port = bound
            self._ready.set()

        await _serve(self._app, self.host, self._requested_port, ready, self._stop, self._idle_timeout_s)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

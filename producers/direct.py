"""One Redis command per call on redis-py Connections, without the client's per-call checkout.

`redis.Redis.get()` checks a connection out of its pool and back in on every
call: a lock, a poll() for stray data on the socket, the retry wrapper and the
event dispatcher. On this machine that was ~30 us of a ~100 us publish or read,
whose floor is one round trip (~65 us; docs/PERFORMANCE.md). The request path
makes exactly one command per call, so it keeps its own idle connections and
talks on them directly, with redis-py's Connection, parser and errors. It packs
the command itself (`pack`: ~0.8 us against redis-py's ~1.6 us for an LPUSH of
one message) and sends it with the Connection's public `send_packed_command`.

- Thread-safe: a connection is used by one thread at a time (list.pop/append
  are atomic); concurrent callers each open their own, kept for reuse.
- Fork-safe: a child never uses or closes its parent's sockets; it opens its own.
- A reused connection that the server closed while it sat idle (restart,
  `timeout` setting) is replaced once, within the call, for commands the
  caller marks `idempotent`; otherwise the error is the caller's. A timeout
  is never retried here: that would double the caller's bound.

Reply polling (`reply_poll_us`, sync only). After sending, the caller polls its
socket for the reply for up to `reply_poll_us` before it blocks in recv. A
blocked thread's CPU goes idle, and waking it costs time: on this machine (a
Firecracker VM booted with `haltpoll.guest_halt_poll_ns=0`, so an idle vCPU
halts at once) a blocking PING took ~60 us and a polled one ~34 us, with no
more CPU time per call (docs/PERFORMANCE.md). Each poll(0) releases the GIL,
so other threads run meanwhile. It adapts: after 16 replies in a row that
outlast the window (a distant Redis), it stops polling for the next 4,096
calls, then tries again, so a far Redis costs < 1 us per call on average.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

# select.poll is missing on Windows: there the reply is awaited by blocking, as with 0.
_CAN_POLL = hasattr(select, "poll")
_MISSES_BEFORE_REST = 16  # replies in a row that outlast the poll window...
_REST_CALLS = 4096  # ...then this many calls block at once before polling again


class DirectRedis:
    def __init__(
        self, url: str, *, timeout: float, name: str, max_idle: int = 32, reply_poll_us: int = 0
    ) -> None:
        # No client-side retries: callers own their bounds. The client name shows
        # who holds a connection in CLIENT LIST (set once, when it connects).
        self._pool = redis.ConnectionPool.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            client_name=name,
        )
        self._idle: list[Any] = []  # redis.connection.Connection (untyped)
        self._max_idle = max_idle
        self._pid = os.getpid()
        self._poll_ns = reply_poll_us * 1000 if _CAN_POLL else 0
        self._misses = 0  # replies in a row that came after the poll window
        self._rest = 0  # calls left that block at once
        # How replies were awaited (approximate under threads): for tests and docs.
        self.replies_polled = 0
        self.replies_waited = 0

    def execute(self, *args: Any, idempotent: bool = False) -> Any:
        """Send one command and return its reply; raises redis-py's errors."""
        if self._pid != os.getpid():
            self._idle, self._pid = [], os.getpid()  # the parent's sockets stay the parent's
        conn: Any
        try:
            conn, reused = self._idle.pop(), True
        except IndexError:
            conn, reused = self._pool.make_connection(), False
        try:
            reply = self._call(conn, args)
        except redis.ConnectionError:
            conn.disconnect()
            if not (reused and idempotent):  # a timeout is not retried: it would double the bound
                raise
            conn = self._pool.make_connection()
            try:
                reply = self._call(conn, args)
            except BaseException:
                conn.disconnect()
                raise
        except redis.ResponseError:
            self._keep(conn)  # an error reply leaves the connection in step
            raise
        except BaseException:
            conn.disconnect()
            raise
        self._keep(conn)
        return reply

    def _call(self, conn: Any, args: tuple[Any, ...]) -> Any:
        # No health check: none is configured (it would cost a PING per interval).
        conn.send_packed_command((pack(args),), check_health=False)
        if self._poll_ns:
            self._poll(conn)
        return conn.read_response()

    def _poll(self, conn: Any) -> None:
        """Return once the reply is readable or the poll window is over."""
        if self._rest:
            self._rest -= 1
            return
        sock = getattr(conn, "_sock", None)  # redis-py keeps its socket here (redis 5-8)
        if sock is None:
            return
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        deadline = time.perf_counter_ns() + self._poll_ns
        while not poller.poll(0):
            if time.perf_counter_ns() >= deadline:
                self.replies_waited += 1
                self._misses += 1
                if self._misses >= _MISSES_BEFORE_REST:
                    self._misses, self._rest = 0, _REST_CALLS
                return
        self.replies_polled += 1
        self._misses = 0

    def _keep(self, conn: Any) -> None:
        if len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.disconnect()

    def close(self) -> None:
        """Close the idle connections (a later call opens new ones)."""
        idle, self._idle = self._idle, []
        if self._pid != os.getpid():
            return
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.disconnect()


class AsyncDirectRedis:
    """DirectRedis for asyncio: redis.asyncio Connections, one command per call.

    A connection serves one coroutine at a time. At most `max_connections`
    exist; more concurrent callers wait for one to come free (a command takes
    ~0.1 ms), rather than each opening its own: 400 reads at once opening 400
    connections timed out here. Connections belong to the loop they were opened
    on: used from a new loop (or in a forked child, which has a new loop), the
    old ones are left alone and new ones opened.
    """

    def __init__(self, url: str, *, timeout: float, name: str, max_connections: int = 16) -> None:
        self._pool: Any = aioredis.ConnectionPool.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=AsyncRetry(NoBackoff(), 0),
            client_name=name,
        )
        self._idle: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._max = max_connections
        self._slots = asyncio.Semaphore(max_connections)

    async def execute(self, *args: Any, idempotent: bool = False) -> Any:
        """Send one command and return its reply; raises redis-py's errors."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._idle, self._loop, self._slots = [], loop, asyncio.Semaphore(self._max)
        async with self._slots:
            return await self._execute(args, idempotent)

    async def _execute(self, args: tuple[Any, ...], idempotent: bool) -> Any:
        conn: Any
        try:
            conn, reused = self._idle.pop(), True
        except IndexError:
            conn, reused = self._pool.make_connection(), False
        try:
            reply = await self._call(conn, args)
        except redis.ConnectionError:
            await _quietly_disconnect(conn)
            if not (reused and idempotent):
                raise
            conn = self._pool.make_connection()
            try:
                reply = await self._call(conn, args)
            except BaseException:
                await _quietly_disconnect(conn)
                raise
        except redis.ResponseError:
            self._keep(conn)
            raise
        except BaseException:  # a timeout or a cancellation: the reply may still come
            await _quietly_disconnect(conn)
            raise
        self._keep(conn)
        return reply

    @staticmethod
    async def _call(conn: Any, args: tuple[Any, ...]) -> Any:
        await conn.send_packed_command((pack(args),), check_health=False)
        return await conn.read_response()

    def _keep(self, conn: Any) -> None:
        self._idle.append(conn)  # never more than max_connections: the semaphore bounds them

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        if self._loop is asyncio.get_running_loop():
            for conn in idle:
                await _quietly_disconnect(conn)


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: str as UTF-8, bytes as they are, int and float in decimal.

    The same bytes redis-py's packer writes for these types; anything else
    raises redis.DataError, as redis-py does, before anything is sent.
    """
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            raw = arg.encode()
        elif isinstance(arg, bytes):
            raw = arg
        elif isinstance(arg, int | float) and not isinstance(arg, bool):
            raw = repr(arg).encode()
        else:
            raise redis.DataError(f"cannot send {type(arg).__name__} to Redis: use str, bytes, int or float")
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


async def _quietly_disconnect(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect()

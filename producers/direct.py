"""One Redis command per call on redis-py Connections, without the client's per-call checkout.

The request path's first optimisation (switch: `FASHIONAI_DIRECT_REDIS`; the plain path is a
`redis.Redis` client, producers.transport). `redis.Redis` checks a connection out of its pool
and back in on every call: a lock, a poll() for stray data, the retry wrapper and the event
dispatcher. The request path makes exactly one command per call, so it keeps its own idle
connections and talks on them directly, with redis-py's Connection, parser and errors. It
packs the command itself (`pack`, tested byte for byte against redis-py's packer) and sends
it with the Connection's public `send_packed_command`. What it saves is measured in
docs/PERFORMANCE.md.

One sans-I/O core (`_Idle`, `_Policy`) holds the policy; `DirectRedis` and `AsyncDirectRedis`
only do the I/O:

- A call waits at most `2 x timeout` in all (or `budget`, when the caller gives one): each
  wait (connect, reply) gets the smaller of `timeout` and what is left of that budget (the
  steps of redis-py's own handshake on a new connection are bounded one by one). A reply
  whose budget ran out before the caller's thread got to read it (a GIL wait on a busy
  server) still gets a last look of `LAST_LOOK`: it is taken if Redis has sent it.
- A reused connection that the server closed while it sat idle (restart, `timeout` setting)
  fails at once; it is replaced within the call when the send failed, or, for commands the
  caller marks `retry_stale` (safe to run twice), when the reply failed. A timeout is never
  retried: that would stretch the caller's bound.
- A failure after the command was sent (timeout, connection lost) raises `NoReply` from the
  redis-py error: the command may have run. Anything before raises redis-py's error: it did not.
- Sync, on Linux: once open, a connection's socket is blocking and the kernel keeps each wait's
  bound (SO_RCVTIMEO, SO_SNDTIMEO; set again only when a call's bound differs). A socket with a
  Python timeout polls before every send and recv: four syscalls and four GIL releases per
  round trip instead of two, and in a threaded page server each GIL release is a chance for a
  hand-off between threads. A wait that runs out is redis-py's ConnectionError over EAGAIN;
  it is raised as the TimeoutError it is. Elsewhere, Python's socket timeouts. The kernel
  keeps a bound in whole scheduler ticks, rounded up: here 25 ms gave 32 ms and 5 ms 12 ms
  (docs/PERFORMANCE.md), so only a connection whose bound is at least KERNEL_BOUND_MIN has its
  bound kept there; a shorter one (the reader's, 25 ms by default) polls, which keeps it to
  the millisecond.
- Thread-safe (sync): a connection is used by one thread at a time (list.pop/append are
  atomic); concurrent callers each open their own, kept for reuse. Fork-safe: a child never
  uses or closes its parent's sockets. Async: at most `max_connections` per event loop;
  connections belong to the loop (and process) that opened them.

Reply polling (`reply_poll_us`, sync only; the second optimisation). After sending, the
caller polls its socket for the reply for up to `reply_poll_us` before it blocks in recv: a
blocked thread's CPU goes idle, and on a machine whose idle CPUs are slow to wake, waking
costs more than the poll (docs/PERFORMANCE.md). Each poll(0) releases the GIL. It adapts:
after `MISSES_BEFORE_REST` replies in a row that outlast the window (a distant Redis), it
blocks at once for the next `REST_CALLS` calls, then tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

# select.poll is missing on Windows: there the reply is awaited by blocking, as with 0.
_CAN_POLL = hasattr(select, "poll")
MISSES_BEFORE_REST = 16  # replies in a row that outlast the poll window...
REST_CALLS = 4096  # ...then this many calls block at once before polling again
LAST_LOOK = 0.0002  # seconds: the reply wait of a call whose budget its own thread's stall spent
LAST_LOOKS = 3  # asyncio: turns of the loop a reply that has arrived gets past the deadline
LATE = 0.002  # asyncio: a wake-up this far past its time means the loop is busy
OPEN_FLOOR = 0.25  # asyncio: an opening that keeps making progress gets at least this long


class NoReply(Exception):  # an outcome, translated by producers.transport
    """The command was sent and no reply came; `__cause__` is redis-py's error."""


class _NotRead:
    """A command sent along with another whose reply was not read (execute_along)."""

    def __repr__(self) -> str:
        return "NOT_READ"


NOT_READ: Final = _NotRead()


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


def pack_all(first: tuple[Any, ...], rest: tuple[tuple[Any, ...], ...]) -> bytes:
    """`first` and the commands of `rest`, in order, as one write."""
    return pack(first) if not rest else pack(first) + b"".join(map(pack, rest))


def _in_step(replies: list[Any]) -> bool:
    """Whether every reply after the first was read (the connection can be used again)."""
    return not replies or replies[-1] is not NOT_READ


# Linux keeps a blocking socket's bound itself (SO_RCVTIMEO, SO_SNDTIMEO; socket(7)): a send or
# recv is then one syscall, where a socket with a Python timeout polls before each (module doc).
KERNEL_TIMEOUTS: Final = sys.platform.startswith("linux")
# The shortest bound the kernel keeps: SO_RCVTIMEO overshot by 4-8 ms at every bound tried on
# this machine (1 ms -> 8, 25 -> 32, 100 -> 104), at most 4% of 0.2 s.
KERNEL_BOUND_MIN: Final = 0.2
_TIMEVAL = struct.Struct("@ll")  # struct timeval on Linux: seconds, microseconds (both long)


def _kernel_bound(conn: Any, sock: socket.socket, wait: float) -> None:
    """Bound each send and recv on blocking `sock` (`conn`'s) by `wait` seconds (a timeval of
    zero would mean none: a wait is at least one microsecond)."""
    seconds = int(wait)
    micros = min(999_999, round((wait - seconds) * 1e6))
    value = _TIMEVAL.pack(seconds, micros if seconds or micros else 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    conn.fashionai_bound = wait  # the bound set: an unchanged one costs no setsockopt


def _set_bound(conn: Any, sock: socket.socket, wait: float) -> None:
    """`sock`'s bound for the next wait: in the kernel on a blocking socket, else Python's."""
    current = sock.gettimeout()
    if current is None:
        if getattr(conn, "fashionai_bound", None) != wait:
            _kernel_bound(conn, sock, wait)
    elif current != wait:
        sock.settimeout(wait)


def _as_timeout(exc: redis.RedisError) -> redis.RedisError:
    """redis-py's error for a kernel-bounded wait that ran out (EAGAIN from a blocking socket,
    which it reports as a ConnectionError) as the TimeoutError it is; any other as it is."""
    if isinstance(exc, redis.ConnectionError) and not isinstance(exc, redis.TimeoutError):
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, BlockingIOError):
            return redis.TimeoutError("Timeout reading from or writing to socket")
    return exc


class ReplyPoller:
    """Poll a sent command's socket for its reply for up to `window_us`; adapts (module doc).

    `observer`, when set, is called with True for a reply caught while polling and False
    for one that outlasted the window: how tests and benchmarks see what polling does.
    """

    def __init__(self, window_us: int, observer: Callable[[bool], None] | None = None) -> None:
        self.window_ns = window_us * 1000 if _CAN_POLL else 0
        self.observer = observer
        self._misses = 0  # replies in a row that came after the window
        self._rest = 0  # calls left that block at once

    def wait(self, conn: Any) -> None:
        """Return once the reply is readable or the window is over (never reads)."""
        if self._rest:
            self._rest -= 1
            return
        sock = getattr(conn, "_sock", None)  # redis-py keeps its socket here (redis 5-8)
        if sock is None:
            return
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        deadline = time.perf_counter_ns() + self.window_ns
        while not poller.poll(0):
            if time.perf_counter_ns() >= deadline:
                self._misses += 1
                if self._misses >= MISSES_BEFORE_REST:
                    self._misses, self._rest = 0, REST_CALLS
                if self.observer is not None:
                    self.observer(False)
                return
        self._misses = 0
        if self.observer is not None:
            self.observer(True)


class _Idle:
    """Sans-I/O: the idle connections of one owner (a process, or a process's event loop)."""

    def __init__(self, max_idle: int) -> None:
        self.max_idle = max_idle
        self.owner: object = None
        self.conns: list[Any] = []

    def claim(self, owner: object) -> None:
        """Drop (never close) connections of another owner: a parent's, an old loop's."""
        if self.owner != owner:
            self.owner, self.conns = owner, []

    def take(self) -> Any | None:
        try:
            return self.conns.pop()
        except IndexError:
            return None

    def keep(self, conn: Any) -> bool:
        """Keep `conn` for reuse; False: there are enough, the caller closes it."""
        if len(self.conns) < self.max_idle:
            self.conns.append(conn)
            return True
        return False

    def drain(self, owner: object) -> list[Any]:
        """The idle connections to close (none when another owner opened them)."""
        conns, self.conns = self.conns, []
        return conns if owner == self.owner else []


class _Policy:
    """Sans-I/O: a call's budget and when a failed attempt is tried again on a fresh connection."""

    def __init__(self, timeout: float, budget: float | None = None) -> None:
        self.timeout = timeout
        self.budget = 2 * timeout if budget is None else budget

    def wait_for(self, deadline: float, now: float) -> float:
        """The bound of the next wait: `timeout`, or what is left of the budget."""
        left = deadline - now
        if left <= 0:
            raise redis.TimeoutError("the call's time bound is spent")
        return min(self.timeout, left)

    def reply_wait(self, deadline: float, now: float) -> float:
        """The bound of the wait for a sent command's reply: as `wait_for`, but a spent budget
        still gets a last look (LAST_LOOK) instead of none: a thread that waited for the GIL
        past the deadline finds the reply Redis sent meanwhile, rather than calling it lost."""
        left = deadline - now
        return min(self.timeout, left) if left > LAST_LOOK else LAST_LOOK

    @staticmethod
    def fresh_retry(exc: BaseException, *, reused: bool, sent: bool, retry_stale: bool) -> bool:
        """A stale idle connection: closed by the server, failing at once (never a timeout)."""
        stale = isinstance(exc, redis.ConnectionError) and not isinstance(exc, redis.TimeoutError)
        return reused and stale and (not sent or retry_stale)

    @staticmethod
    def connection_kwargs(pool: Any, name: str, wait: float) -> dict[str, Any]:
        kwargs = dict(pool.connection_kwargs)
        kwargs.update(socket_timeout=wait, socket_connect_timeout=wait, client_name=name)
        return kwargs


class DirectRedis:
    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        name: str,
        max_idle: int = 32,
        reply_poll_us: int = 0,
        budget: float | None = None,
    ) -> None:
        # No client-side retries: callers own their bounds. The client name shows who holds
        # a connection in CLIENT LIST (set once, when it connects).
        self._pool = redis.ConnectionPool.from_url(url, retry=Retry(NoBackoff(), 0))
        self._name = name
        self._policy = _Policy(timeout, budget)
        self._idle = _Idle(max_idle)
        self.poller = ReplyPoller(reply_poll_us) if reply_poll_us else None

    def execute(self, *args: Any, retry_stale: bool = False) -> Any:
        """Send one command and return its reply (module doc: bound, retry, NoReply)."""
        return self._call(args, (), retry_stale)[0]

    def execute_along(
        self, first: tuple[Any, ...], rest: Sequence[tuple[Any, ...]], *, retry_stale: bool = False
    ) -> tuple[Any, list[Any]]:
        """`first` and the commands of `rest` in one round trip on one connection (one write;
        every reply read): (first's reply, [each of rest's]). `first` behaves as execute()
        does; the rest are best effort: each its reply, its error reply (a redis.ResponseError,
        returned), or NOT_READ when the connection failed after the first reply (a caller
        sends it again on its own). `retry_stale`: all of them are safe to send twice."""
        return self._call(first, tuple(rest), retry_stale)

    def _call(
        self, args: tuple[Any, ...], rest: tuple[tuple[Any, ...], ...], retry_stale: bool
    ) -> tuple[Any, list[Any]]:
        deadline = time.monotonic() + self._policy.budget
        self._idle.claim(os.getpid())
        conn = self._idle.take()
        if conn is None:
            return self._attempt(self._open(deadline), args, rest, deadline, reused=False, retry_stale=False)
        return self._attempt(conn, args, rest, deadline, reused=True, retry_stale=retry_stale)

    def _attempt(
        self, conn: Any, args: tuple[Any, ...], rest: tuple[tuple[Any, ...], ...], deadline: float,
        **how: bool,
    ) -> tuple[Any, list[Any]]:  # fmt: skip
        sent = False
        try:
            conn.send_packed_command((pack_all(args, rest),), check_health=False)  # none configured
            sent = True
            if self.poller is not None:
                self.poller.wait(conn)
            self._bound(conn, deadline)
            reply = conn.read_response()
        except redis.ResponseError:
            if _in_step(self._rest(conn, len(rest), deadline)):
                self._keep(conn)  # an error reply leaves the connection in step
            raise
        except redis.RedisError as raised:
            conn.disconnect()
            exc = _as_timeout(raised)
            if self._policy.fresh_retry(exc, sent=sent, **how):
                fresh = self._open(deadline)
                return self._attempt(fresh, args, rest, deadline, reused=False, retry_stale=False)
            if sent:
                raise NoReply(str(exc)) from exc
            if exc is not raised:
                raise exc from raised
            raise
        except BaseException:
            conn.disconnect()
            raise
        replies = self._rest(conn, len(rest), deadline)
        if _in_step(replies):
            self._keep(conn)
        return reply, replies

    def _rest(self, conn: Any, count: int, deadline: float) -> list[Any]:
        """The replies after the first: each its value or error reply; NOT_READ from the first
        that could not be read on (then the connection is dropped: it is out of step)."""
        replies: list[Any] = []
        while len(replies) < count:
            try:
                self._bound(conn, deadline)
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
            except (redis.RedisError, OSError):
                conn.disconnect()
                replies += [NOT_READ] * (count - len(replies))
            except BaseException:
                conn.disconnect()
                raise
        return replies

    def _open(self, deadline: float) -> Any:
        wait = self._policy.wait_for(deadline, time.monotonic())
        conn = self._pool.connection_class(**self._policy.connection_kwargs(self._pool, self._name, wait))
        try:
            conn.connect()
            sock = getattr(conn, "_sock", None)
            if KERNEL_TIMEOUTS and sock is not None and self._policy.timeout >= KERNEL_BOUND_MIN:
                sock.settimeout(None)  # blocking: the kernel keeps the bound (module doc)
                _kernel_bound(conn, sock, self._policy.timeout)
        except BaseException:
            conn.disconnect()
            raise
        return conn

    def _bound(self, conn: Any, deadline: float) -> None:
        sock = getattr(conn, "_sock", None)
        if sock is not None:
            _set_bound(conn, sock, self._policy.reply_wait(deadline, time.monotonic()))

    def _keep(self, conn: Any) -> None:
        sock = getattr(conn, "_sock", None)
        if sock is not None:
            _set_bound(conn, sock, self._policy.timeout)  # a shortened bound is this call's only
        if not self._idle.keep(conn):
            conn.disconnect()

    def close(self) -> None:
        """Close the idle connections (a later call opens new ones)."""
        for conn in self._idle.drain(os.getpid()):
            with contextlib.suppress(Exception):
                conn.disconnect()


class AsyncDirectRedis:
    """DirectRedis for asyncio: redis.asyncio Connections, one command per call.

    At most `max_connections` exist per loop; more concurrent callers wait for one to come
    free, rather than each opening its own (400 reads at once opening 400 connections timed
    out in a test). Once it has a connection a call is bounded by `2 x timeout` (or
    `budget`); the wait for one is bounded by that budget too, extended for as long as
    other calls keep finishing (a burst waiting its turn on a healthy Redis), so a Redis
    that goes silent fails every caller within one budget of its silence. Opening a new
    connection on a busy loop may take the call's budget, or OPEN_FLOOR if that is longer, while it
    keeps making progress.
    Never polls: the event loop has other work.

    The bound counts Redis's silence, not the event loop's lag: when the deadline passes
    while the reply is already in the socket or the stream's buffer (a saturated loop that
    has not come round to reading it), the call is given up to LAST_LOOKS more turns of the
    loop to take it, instead of being called lost. A Redis that sent nothing is given up at
    the deadline.
    """

    def __init__(
        self, url: str, *, timeout: float, name: str, max_connections: int = 16, budget: float | None = None
    ) -> None:
        self._pool: Any = aioredis.ConnectionPool.from_url(url, retry=AsyncRetry(NoBackoff(), 0))
        self._name = name
        self._policy = _Policy(timeout, budget)
        self._idle = _Idle(max_connections)
        self._max = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._completed = 0  # replies received: the queue for a connection is moving
        self._busy: set[Any] = set()  # connections with a command in flight
        self._opening = 0  # connections being opened

    async def execute(self, *args: Any, retry_stale: bool = False) -> Any:
        """Send one command and return its reply (module doc: bound, retry, NoReply)."""
        return (await self._call(args, (), retry_stale))[0]

    async def execute_along(
        self, first: tuple[Any, ...], rest: Sequence[tuple[Any, ...]], *, retry_stale: bool = False
    ) -> tuple[Any, list[Any]]:
        """DirectRedis.execute_along, awaited."""
        return await self._call(first, tuple(rest), retry_stale)

    async def _call(
        self, args: tuple[Any, ...], rest: tuple[tuple[Any, ...], ...], retry_stale: bool
    ) -> tuple[Any, list[Any]]:
        loop = asyncio.get_running_loop()
        owner = (os.getpid(), loop)
        if self._idle.owner != owner:
            self._idle.claim(owner)
            self._slots = asyncio.Semaphore(self._max)
            self._busy, self._opening = set(), 0
        sent = [False]
        slots = self._slots
        try:
            await self._slot(slots, loop)
            try:
                return await self._execute(args, rest, retry_stale, sent, loop.time() + self._policy.budget)
            finally:
                slots.release()
        except redis.ResponseError:
            raise
        except (redis.RedisError, OSError) as exc:  # asyncio's TimeoutError is an OSError
            if sent[0]:
                raise NoReply(str(exc) or "no reply within the bound") from exc
            if not isinstance(exc, redis.RedisError):
                raise redis.TimeoutError("not connected within the bound") from exc
            raise

    async def _slot(self, slots: asyncio.Semaphore, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for a free connection: for one budget, and again for as long as the queue
        moves (a call finished within the last budget, a reply has arrived unread, or a
        connection is being opened), so a burst of callers on a healthy Redis waits its
        turn while a silent Redis fails them all within one budget (longer while connections
        are being opened: an opening's own bound, `_opened`)."""
        if not slots.locked():  # a free connection: acquire() returns at once, no timer needed
            await slots.acquire()
            return
        while True:
            done = self._completed
            try:
                async with asyncio.timeout(self._policy.budget):
                    await slots.acquire()
                    return
            except TimeoutError:
                # Moving: a call finished meanwhile, or a reply is here that a busy loop has
                # not read yet. Silent: nothing finished and nothing arrived.
                moving = any(_arrived(conn) for conn in list(self._busy))
                if self._completed == done and not self._opening and not moving:
                    raise

    async def _execute(
        self, args: tuple[Any, ...], rest: tuple[tuple[Any, ...], ...], retry_stale: bool, sent: list[bool],
        deadline: float,
    ) -> tuple[Any, list[Any]]:  # fmt: skip
        conn = self._idle.take()
        reused = conn is not None
        if conn is None:
            conn, deadline = await self._opened(deadline)
        try:
            return await self._attempt(conn, args, rest, sent, deadline)
        except redis.RedisError as exc:
            if not self._policy.fresh_retry(exc, reused=reused, sent=sent[0], retry_stale=retry_stale):
                raise
        sent[0] = False
        conn, deadline = await self._opened(deadline)
        return await self._attempt(conn, args, rest, sent, deadline)

    async def _opened(self, deadline: float) -> tuple[Any, float]:
        """A new connection, and the deadline left for the command on it.

        Opening takes the TCP connect and redis-py's handshake (several round trips), each a
        turn of the event loop: on a loop busy with a burst of requests that alone can pass a
        budget of milliseconds. So at the deadline an opening that is still making progress
        (the TCP connect not done yet, or a handshake reply arrived unread) gets another
        budget, up to the call's deadline or OPEN_FLOOR (whichever is later) in all, and so
        does one whose loop came back to it more than
        LATE after the deadline (busy: a handshake step's reply may be just behind); one
        whose Redis is silent (frozen: the kernel took the TCP connection, nothing answers) on
        a loop that is not busy fails at the deadline.
        The command then gets what is left of its own budget, or a new one if opening used it
        up.
        """
        loop = asyncio.get_running_loop()
        cap = max(deadline, loop.time() + OPEN_FLOOR)  # the call's own bound, and never less than the floor
        kwargs = self._policy.connection_kwargs(self._pool, self._name, max(self._policy.timeout, OPEN_FLOOR))
        conn = self._pool.connection_class(**kwargs)
        opening = loop.create_task(conn.connect())
        self._opening += 1  # the queue for a connection is moving: one is on its way
        try:
            while True:
                until = min(deadline, cap)
                if until > loop.time():
                    await asyncio.wait((opening,), timeout=until - loop.time())
                if opening.done():
                    opening.result()  # raises its error
                    # From here each command is bounded by its own timer (_Due): redis-py's
                    # socket_timeout would wrap every send in asyncio.wait_for, a task each.
                    conn.socket_timeout = None
                    break
                now = loop.time()
                late = now - until > LATE  # the loop came back late: it is busy, the wait tells nothing
                progressing = late or getattr(conn, "_writer", None) is None or _arrived(conn)
                if now >= cap or not progressing:
                    raise redis.TimeoutError("not connected within the bound")
                deadline = loop.time() + self._policy.budget
        except BaseException:
            opening.cancel()
            with contextlib.suppress(BaseException):
                await opening
            await _quietly_disconnect(conn)
            raise
        finally:
            self._opening -= 1
        now = loop.time()
        return conn, deadline if now < deadline else now + self._policy.budget

    async def _attempt(
        self, conn: Any, args: tuple[Any, ...], rest: tuple[tuple[Any, ...], ...], sent: list[bool],
        deadline: float,
    ) -> tuple[Any, list[Any]]:  # fmt: skip
        self._busy.add(conn)
        error: redis.ResponseError | None = None
        try:
            with _Due(deadline, conn) as due:  # one timer bounds the send and the replies
                await conn.send_packed_command((pack_all(args, rest),), check_health=False)
                sent[0] = True
                reply: Any = None
                try:
                    reply = await conn.read_response()
                except redis.ResponseError as exc:  # an error reply leaves the connection in step
                    error = exc
                replies = await _rest(conn, len(rest), due) if rest else []
        except BaseException:  # an error, a timeout or a cancellation: the reply may still come
            await _quietly_disconnect(conn)
            raise
        finally:
            self._busy.discard(conn)
        self._completed += 1
        if _in_step(replies):  # else _rest dropped it: out of step
            self._idle.keep(conn)  # never more than max_connections: the semaphore bounds them
        if error is not None:
            raise error
        return reply, replies

    async def aclose(self) -> None:
        """Close the idle connections of the running loop (a later call opens new ones)."""
        for conn in self._idle.drain((os.getpid(), asyncio.get_running_loop())):
            await _quietly_disconnect(conn)


class _Due:
    """The deadline of one command on an asyncio connection, as a single timer.

    At the deadline the awaiting task is cancelled and the `with` raises TimeoutError, unless
    some of the reply has arrived unread (a saturated loop that has not come round to it): then
    the task is given up to LAST_LOOKS more turns of the loop to take it. One timer handle per
    command, where `asyncio.timeout` around the send and a task awaited with `asyncio.wait`
    for the reply cost a timer, a task and their callbacks each (docs/PERFORMANCE.md has
    what that saved, in-process). A cancellation from elsewhere passes through untouched.
    """

    __slots__ = ("conn", "expired", "handle", "looks", "loop", "task")

    def __init__(self, deadline: float, conn: Any) -> None:
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.task, self.conn, self.looks, self.expired = task, conn, 0, False
        self.handle: asyncio.Handle = self.loop.call_at(deadline, self._due)

    def _due(self) -> None:
        if self.task.done():
            return
        if self.looks < LAST_LOOKS and _arrived(self.conn):
            self.looks += 1  # each turn lets the loop poll and run the reader once more
            self.handle = self.loop.call_soon(self._due)
            return
        self.expired = True
        self.task.cancel()

    def __enter__(self) -> _Due:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.handle.cancel()
        if self.expired and kind is asyncio.CancelledError and self.task.uncancel() == 0:
            raise TimeoutError("no reply within the bound") from exc


async def _rest(conn: Any, count: int, due: _Due) -> list[Any]:
    """The replies after the first (DirectRedis._rest): each its value or error reply;
    NOT_READ from the first that could not be read on, the connection dropped. The call's
    deadline passing here drops the rest too (the first reply is in: it only costs them)."""
    replies: list[Any] = []
    while len(replies) < count:
        try:
            replies.append(await conn.read_response())
            continue
        except redis.ResponseError as exc:
            replies.append(exc)
            continue
        except (redis.RedisError, OSError):
            pass
        except asyncio.CancelledError:
            if not due.expired:
                raise
            due.expired = False
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
        await _quietly_disconnect(conn)
        replies += [NOT_READ] * (count - len(replies))
    return replies


def _arrived(conn: Any) -> bool:
    """Whether some of the reply is here, unread: in the stream's buffer or the socket's."""
    stream = getattr(conn, "_reader", None)
    if stream is not None and getattr(stream, "_buffer", None):  # asyncio.StreamReader's buffer
        return True
    writer = getattr(conn, "_writer", None)
    sock = writer.get_extra_info("socket") if writer is not None else None
    if sock is None or not _CAN_POLL:
        return False
    poller = select.poll()
    try:
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return False


async def _quietly_disconnect(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect()

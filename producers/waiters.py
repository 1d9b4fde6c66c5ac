"""Being told that a ranking landed: one subscriber connection per process, not a poll.

The worker announces a ranking right after writing it to the cache
(worker/notify.py), on a channel of the cache Redis:

- a process's *reply channel* (`keys.reply_channel(token)`), for events whose
  envelope names the process's token in `notify`: the payload is
  `"<message id> <ranking value>"`, and the hub hands it to the waiter that
  registered that id. This is publish-and-wait (producers.serving).
- a ranking key's channel (`keys.landed_channel(key)`), for events published
  with `notify="key"`: readers waiting for a key that is not cached yet
  subscribe to it for the length of their wait (`AsyncReplyHub.watch`; the
  HTTP service's reads with `wait_ms`).

Why this shape: every waiter of a process shares the one subscriber
connection (no connection per waiter), a notice reaches only the process
that waits for it (no fan-out of every ranking to every web process), and a
worker whose envelopes ask for nothing publishes nothing.

Race-freedom: a waiter registers its message id *before* it publishes its
event, and the hub's subscription is confirmed by Redis before the first
publish, so a ranking that lands at any moment after the publish finds the
waiter. A notice lost anyway (a first subscription slower than half the
bound) only costs the waiter the rest of its bound: it then reads the cache
and still recognises its own ranking by the enqueue time (producers.serving).
A waiter whose connection is lost is released at once (below).

Knowing when it cannot listen: a hub is "connecting" until its first verdict,
"listening" once Redis confirmed the subscription, and "down" from a failed
attempt (refused, an error, a connection lost, or a SUBSCRIBE not confirmed
within the connect timeout: a Redis that accepts but never answers) until
Redis confirms a subscription again; it never goes back to "connecting".
`wait_ready` answers with that state and returns as soon as it is known, so a
view does not wait for a notice that cannot come (producers.servercore). When
the connection is lost (or the hub closed), every waiter waiting then is
released at once with no value, to read the cache once instead of sleeping to
its bound: its notice, if any, went down with the connection. What a hub
cannot see is a Redis frozen under a confirmed subscription (the socket stays
up, nothing arrives): those waiters wait their bound, and the reader's
circuit breaker, opened by the reads at their bounds, stops later views from
waiting.

Fork-safety: a hub forgets everything in a forked child (gunicorn --preload,
uWSGI): the child takes a new token, opens its own connection on first use,
and never touches its parent's socket or thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import weakref
from typing import Any, Literal

import redis
import redis.asyncio as aioredis

from fashionai_pipeline.producers import keys

log = logging.getLogger("fashionai.waiters")

HubState = Literal["connecting", "listening", "down"]

_MAX_BACKOFF = 1.0
_live: weakref.WeakSet[ReplyHub] = weakref.WeakSet()


# Reading: `push_request=True`, since redis-py 8 with hiredis 3 treats pub/sub
# messages as push notifications, which a plain read_response hands to its own
# handler (and logs) instead of returning them.


def _forget_after_fork() -> None:
    for hub in list(_live):
        hub._reset()


os.register_at_fork(after_in_child=_forget_after_fork)


def new_token() -> str:
    """A process's reply token: 96 random bits, hex (a valid envelope `notify` value)."""
    return os.urandom(12).hex()


class _Slot:
    """One waiter's mailbox: set by the listener thread, with the notice's value, or with
    none when the connection is lost (the waiter reads the cache then)."""

    __slots__ = ("event", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: str | None = None


class ReplyHub:
    """The sync hub: a daemon thread listening on this process's reply channel.

    Thread-safe; one per process is enough (producers.serving shares one per
    cache URL). Nothing connects before the first `expect`. Never raises on a
    Redis failure: the listener reconnects with backoff (at most 1 s); the
    waiters of a lost connection are released at once, and while it is "down"
    `wait_ready` says so at once (module doc).
    """

    def __init__(self, url: str, *, connect_timeout: float = 0.25) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        self.token = new_token()
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self.state: HubState = "connecting"
        self._settled = threading.Event()  # set at the first verdict: never "connecting" again
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._closed = False

    def expect(self, msg_id: str) -> _Slot:
        """Register a waiter for `msg_id` (before publishing it) and start listening."""
        slot = _Slot()
        self._slots[msg_id] = slot
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closed:
                    self._thread = threading.Thread(
                        target=self._listen, name="fashionai-waiters", daemon=True
                    )
                    self._thread.start()
        return slot

    def forget(self, msg_id: str) -> None:
        """Drop a waiter (idempotent)."""
        self._slots.pop(msg_id, None)

    def wait_ready(self, timeout: float) -> HubState:
        """The hub's state once known, waiting at most `timeout` seconds while "connecting":
        "listening" (Redis confirmed the subscription), "down" (it cannot listen now: do not
        wait for a notice), or still "connecting". At once when known (the usual case)."""
        if self.state == "connecting":
            self._settled.wait(max(timeout, 0.0))
        return self.state

    def close(self) -> None:
        """Stop listening (idempotent); waiters still pending are released (they read the cache)."""
        self._closed = True
        self._down()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.disconnect()

    def _down(self) -> None:
        """Cannot listen: say so, then release every waiter (state first, so a waiter that
        registers after the release sees "down" when it asks)."""
        self.state = "down"
        self._settled.set()
        for slot in list(self._slots.values()):
            slot.event.set()  # no value: read the cache

    def _listen(self) -> None:
        channel = keys.reply_channel(self.token)
        pool: Any = redis.ConnectionPool.from_url(
            self._url,
            socket_timeout=None,  # a subscriber waits for as long as it takes
            socket_connect_timeout=self._connect_timeout,
            socket_keepalive=True,
            client_name="fashionai-waiters",
        )
        backoff, failing = 0.05, False
        while not self._closed:
            try:
                self._conn = conn = pool.make_connection()
                conn.connect()
                conn.send_command("SUBSCRIBE", channel)
                # A Redis that accepts but never answers is found here, not by a waiter's bound.
                self._dispatch(conn.read_response(push_request=True, timeout=self._connect_timeout))
                while not self._closed:
                    self._dispatch(conn.read_response(push_request=True))
                    backoff = 0.05
                    if failing:
                        failing = False
                        log.info("reply channel subscribed again")
            except Exception as exc:  # any Redis or socket failure: reconnect
                self._down()
                if self._closed:
                    break
                if not failing:
                    failing = True
                    log.warning("reply channel lost (%s); reconnecting", type(exc).__name__)
                time.sleep(backoff)
                backoff = min(_MAX_BACKOFF, backoff * 2)
            finally:
                with contextlib.suppress(Exception):
                    self._conn.disconnect()

    def _dispatch(self, reply: Any) -> None:
        kind = reply[0]
        if kind == b"message":
            msg_id, _, value = reply[2].decode("utf-8", "replace").partition(" ")
            slot = self._slots.pop(msg_id, None)
            if slot is not None:
                slot.value = value
                slot.event.set()
        elif kind == b"subscribe":
            self.state = "listening"
            self._settled.set()


class AsyncReplyHub:
    """The asyncio hub: one reader task per process and event loop.

    Besides reply-channel waiters (`expect`), it lets readers wait for a
    ranking key (`watch`), subscribing to the key's channel while anyone
    waits for it (one SUBSCRIBE per key, shared by its waiters). Used from a
    new event loop or in a forked child, it starts afresh with a new token:
    take the token to publish with from `bind()`, in the loop that waits,
    never from `token` before the hub's first use there. Its states, and the
    release of waiters when the connection is lost, are the sync hub's (module
    doc); a `watch` while "down" answers None at once (read the cache instead).
    """

    def __init__(self, url: str, *, connect_timeout: float = 0.25) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()
        self._start_state()

    def _start_state(self) -> None:
        self.token = new_token()
        self._replies: dict[str, asyncio.Future[str | None]] = {}
        self._watchers: dict[str, set[asyncio.Future[str | None]]] = {}
        self._confirms: dict[str, asyncio.Future[bool]] = {}  # True: subscribed; False: connection lost
        self.state: HubState = "connecting"
        self._settled: asyncio.Event | None = None  # set at the first verdict of the reader task
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._closed = False
        self._chores: set[asyncio.Task[None]] = set()  # UNSUBSCRIBEs in flight, kept alive

    def bind(self) -> str:
        """The token to publish with from here: the one the hub listens on in this loop and process.

        Binds the hub to the running event loop first. Its first use in a loop (or in a
        forked child) starts afresh with a new token, so `token` read before that is not
        listened on by anyone: a publisher asking for a notice takes its token from here,
        in the loop it waits in. Cheap (the check `expect` makes); connects nothing.
        """
        self._own_loop()
        return self.token

    def _own_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, the hub's state made afresh (a new token) if it was another's."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._pid != os.getpid():
            self._loop, self._pid = loop, os.getpid()
            self._start_state()
        return loop

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = self._own_loop()
        task = self._task
        if (task is None or task.done()) and not self._closed:
            # A reader task that ended (cancelled from outside, say) is started again; it
            # listens on the same reply channel, so tokens already handed out stay good.
            self.state, self._settled = "connecting", asyncio.Event()
            self._task = loop.create_task(self._listen(), name="fashionai-waiters")
        return loop

    def expect(self, msg_id: str) -> asyncio.Future[str | None]:
        """A future set to the ranking value when `msg_id`'s ranking lands, or to None when the
        connection is lost first (read the cache then). Register before publishing."""
        future: asyncio.Future[str | None] = self._bind().create_future()
        self._replies[msg_id] = future
        return future

    def forget(self, msg_id: str) -> None:
        self._replies.pop(msg_id, None)

    async def wait_ready(self, timeout: float) -> HubState:
        """ReplyHub.wait_ready: the state once known (at most `timeout` seconds while
        "connecting"), at once when known."""
        self._bind()
        settled = self._settled
        if self.state == "connecting" and settled is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), max(timeout, 0.0))
        return self.state

    async def watch(self, ranking_key: str, timeout: float) -> asyncio.Future[str | None] | None:
        """Wait for the next ranking written to `ranking_key`.

        Returns a future set to the ranking value (call `unwatch` with it when
        done), once Redis confirmed the subscription, so anything written after
        this returns is announced to it (or set to None, the connection lost);
        None when the subscription was not confirmed within `timeout`, or the
        hub is "down" or loses its connection meanwhile (the caller reads the
        cache instead).
        """
        loop = self._bind()
        if self.state == "down":
            return None
        channel = keys.landed_channel(ranking_key)
        future: asyncio.Future[str | None] = loop.create_future()
        watchers = self._watchers.setdefault(channel, set())
        watchers.add(future)
        confirm = self._confirms.get(channel)
        if confirm is None:
            confirm = self._confirms[channel] = loop.create_future()
            await self._send("SUBSCRIBE", channel)
        try:
            subscribed = await asyncio.wait_for(asyncio.shield(confirm), max(timeout, 0.0))
        except TimeoutError:
            subscribed = False
        if not subscribed:
            self.unwatch(ranking_key, future)
            return None
        return future

    def unwatch(self, ranking_key: str, future: asyncio.Future[str | None]) -> None:
        """Stop waiting (idempotent); the last waiter of a key unsubscribes."""
        channel = keys.landed_channel(ranking_key)
        watchers = self._watchers.get(channel)
        if watchers is None:
            return
        watchers.discard(future)
        if not watchers:
            del self._watchers[channel]
            self._confirms.pop(channel, None)
            if self._loop is not None:
                chore = self._loop.create_task(self._send("UNSUBSCRIBE", channel))
                self._chores.add(chore)
                chore.add_done_callback(self._chores.discard)

    async def aclose(self) -> None:
        """Stop the reader task (idempotent); waiters still pending are released (they read the cache)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and self._loop is asyncio.get_running_loop():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            self._down()

    async def _send(self, *args: str) -> None:
        conn = self._conn
        if conn is None:
            return  # not connected: the reader subscribes every watched channel when it connects
        try:
            await conn.send_command(*args)
        except Exception:  # the reader task notices the broken connection and reconnects
            log.debug("pub/sub command %s failed", args[0], exc_info=True)

    async def _listen(self) -> None:
        reply_channel = keys.reply_channel(self.token)
        pool: Any = aioredis.ConnectionPool.from_url(
            self._url,
            socket_timeout=None,
            socket_connect_timeout=self._connect_timeout,
            socket_keepalive=True,
            client_name="fashionai-waiters",
        )
        backoff, failing = 0.05, False
        while not self._closed:
            conn: Any = None
            try:
                conn = pool.make_connection()
                await conn.connect()
                # Set before the SUBSCRIBE's channel list is taken, in the same step: a
                # channel watched from now on is sent by `_send`, one watched before is listed.
                self._conn = conn
                await conn.send_command("SUBSCRIBE", reply_channel, *self._watchers)
                # A Redis that accepts but never answers is found here, not by a waiter's bound.
                first = await conn.read_response(push_request=True, timeout=self._connect_timeout)
                self._dispatch(first, reply_channel)
                while True:
                    self._dispatch(await conn.read_response(push_request=True), reply_channel)
                    backoff = 0.05
                    if failing:
                        failing = False
                        log.info("reply channel subscribed again")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any Redis or socket failure: reconnect
                self._conn = None
                self._down()
                if not failing:
                    failing = True
                    log.warning("reply channel lost (%s); reconnecting", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(_MAX_BACKOFF, backoff * 2)
            finally:
                self._conn = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.disconnect()

    def _down(self) -> None:
        """ReplyHub._down: say "down", then release every waiter and pending confirmation."""
        self.state = "down"
        if self._settled is not None:
            self._settled.set()
        for future in list(self._replies.values()):
            if not future.done():
                future.set_result(None)
        for watchers in list(self._watchers.values()):
            for waiter in list(watchers):
                if not waiter.done():
                    waiter.set_result(None)
        confirms, self._confirms = self._confirms, {}
        for confirm in confirms.values():
            if not confirm.done():
                confirm.set_result(False)

    def _dispatch(self, reply: Any, reply_channel: str) -> None:
        kind, channel = reply[0], reply[1].decode("utf-8", "replace")
        if kind == b"message":
            text = reply[2].decode("utf-8", "replace")
            if channel == reply_channel:
                msg_id, _, value = text.partition(" ")
                future = self._replies.pop(msg_id, None)
                if future is not None and not future.done():
                    future.set_result(value)
                return
            for waiter in self._watchers.get(channel, ()):
                if not waiter.done():
                    waiter.set_result(text)
        elif kind == b"subscribe":
            if channel == reply_channel:
                self.state = "listening"
                if self._settled is not None:
                    self._settled.set()
            confirm = self._confirms.get(channel)
            if confirm is not None and not confirm.done():
                confirm.set_result(True)

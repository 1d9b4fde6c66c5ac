"""The request path's transport: how a publish or a read reaches Redis, and how its texts are written.

Three optimisations replace library code on this path to save microseconds. Each has its
own switch, so each can be turned off alone and judged alone (a benchmark builds `Tuning`
directly; docs/PERFORMANCE.md has what each is worth):

- own connections and RESP packer, `FASHIONAI_DIRECT_REDIS`: producers.direct; off, a
  `redis.Redis` client (`execute_command`);
- reply polling (sync, on direct connections), `FASHIONAI_REPLY_POLL_US`: off (`0`, block
  at once) by default, since it cost a saturated gthread page server CPU
  (benchmarks.page_server); e.g. `100` polls for up to 100 us, which saves an idle CPU's
  wake-up;
- JSON templates, `FASHIONAI_JSON_TEMPLATES`: producers.templates `TEMPLATES`; off, `PLAIN`
  (json.dumps), the same bytes.

This module is also the one boundary where redis-py's exceptions become the package's own
(`raise ... from exc`): a command that was not sent, or that Redis refused, raises the
caller's `unavailable` class (BrokerUnavailable for the publisher, CacheUnavailable for the
reader); one that was sent and got no reply raises its `unknown` class (PublishUnknown;
CacheUnavailable again for the reader).

Bounds: on the direct path a call waits at most `2 x timeout` (producers.direct). On the
plain path every step redis-py takes is bounded by `timeout` on its own: a command on an
open connection waits at most `timeout`; opening one adds the TCP connect and redis-py's
handshake steps (CLIENT SETNAME, CLIENT SETINFO, SELECT, AUTH where the URL asks for them).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from fashionai_pipeline.producers.direct import NOT_READ, AsyncDirectRedis, DirectRedis, NoReply
from fashionai_pipeline.producers.errors import ConfigurationError, FashionAIError
from fashionai_pipeline.producers.settings import Settings, redact_url
from fashionai_pipeline.producers.templates import PLAIN, TEMPLATES, Codec


@dataclass(frozen=True, slots=True)
class Tuning:
    """Which of the request path's optimisations are on (module doc)."""

    direct: bool = True
    reply_poll_us: int = 0
    json_templates: bool = True

    @classmethod
    def of(cls, settings: Settings) -> Tuning:
        return cls(settings.direct_redis, settings.reply_poll_us, settings.json_templates)

    @property
    def codec(self) -> Codec:
        return TEMPLATES if self.json_templates else PLAIN


@dataclass(frozen=True, slots=True)
class Failures:
    """What a failed command raises: `unavailable` (not sent, or refused) or `unknown` (sent)."""

    what: str  # "broker redis://…", "ranking cache"; names no secret
    unavailable: type[FashionAIError]
    unknown: type[FashionAIError]

    def translate(self, exc: BaseException, *, plain: bool = False) -> FashionAIError:
        """The package's error for `exc`; `plain`: it came through redis-py's client, where any
        failure but a connect failure or an error reply may have come after the send."""
        if plain and isinstance(exc, redis.RedisError) and not isinstance(exc, _NotSent):
            exc = NoReply(str(exc))
        if isinstance(exc, NoReply):
            cause = exc.__cause__ or exc
            return self.unknown(f"{self.what}: sent, no answer within the bound ({type(cause).__name__})")
        if isinstance(exc, redis.ResponseError):
            # Redis's own error word and message (OOM, WRONGTYPE, READONLY): never a secret.
            return self.unavailable(f"{self.what} refused the command: {str(exc)[:200]}")
        return self.unavailable(f"{self.what} unavailable: {type(exc).__name__}")


class _Commands(Protocol):
    def execute(self, *args: Any, retry_stale: bool = False) -> Any: ...
    def execute_along(
        self, first: tuple[Any, ...], rest: Sequence[tuple[Any, ...]], *, retry_stale: bool = False
    ) -> tuple[Any, list[Any]]: ...
    def close(self) -> None: ...


class _AsyncCommands(Protocol):
    async def execute(self, *args: Any, retry_stale: bool = False) -> Any: ...
    async def execute_along(
        self, first: tuple[Any, ...], rest: Sequence[tuple[Any, ...]], *, retry_stale: bool = False
    ) -> tuple[Any, list[Any]]: ...
    async def aclose(self) -> None: ...


def _commands(
    url: str,
    *,
    timeout: float,
    name: str,
    tuning: Tuning,
    max_idle: int,
    sync: bool,
    client: Any = None,
    budget: float | None = None,
) -> tuple[Any, bool]:
    """(the commands object for this path, whether it is the plain path). Raises ConfigurationError.

    `budget`: the whole call's bound on the direct path (default `2 x timeout`) and, on the
    asyncio plain path, around the command (the sync plain path bounds each wait alone).
    """
    try:
        return _commands_for(url, timeout, name, tuning, max_idle, sync, client, budget)
    except ValueError as exc:  # redis-py's answer to a URL it cannot use; it names no password
        raise ConfigurationError(f"{redact_url(url)} is not a Redis URL redis-py accepts: {exc}") from exc


def _commands_for(
    url: str,
    timeout: float,
    name: str,
    tuning: Tuning,
    max_idle: int,
    sync: bool,
    client: Any,
    budget: float | None,
) -> tuple[Any, bool]:
    if sync:
        if client is not None:
            return _PlainRedis(client, owned=False), True
        if not tuning.direct:
            return _PlainRedis(_plain_client(url, timeout, name, sync=True), owned=True), True
        poll = tuning.reply_poll_us
        direct = DirectRedis(
            url, timeout=timeout, name=name, max_idle=max_idle, reply_poll_us=poll, budget=budget
        )
        return direct, False
    if client is not None:
        return _AsyncPlainRedis(client, owned=False, budget=budget), True
    if not tuning.direct:
        own = _plain_client(url, timeout, name, sync=False)
        return _AsyncPlainRedis(own, owned=True, budget=budget), True
    return AsyncDirectRedis(url, timeout=timeout, name=name, max_connections=max_idle, budget=budget), False


class RedisTransport:
    """Sync: one command per call, on the path `tuning` picks; raises the package's errors only.

    `client`: the caller's own redis.Redis, used as it is (the plain path).
    """

    def __init__(self, url: str, *, failures: Failures, max_idle: int = 32, **how: Any) -> None:
        self.failures = failures
        self.commands: _Commands
        self.commands, self._plain = _commands(url, max_idle=max_idle, sync=True, **how)

    def execute(self, *args: Any, retry_stale: bool = False) -> Any:
        """The command's reply. `retry_stale`: safe to send twice (module doc of producers.direct)."""
        try:
            return self.commands.execute(*args, retry_stale=retry_stale)
        except (redis.RedisError, OSError, NoReply) as exc:
            raise self.failures.translate(exc, plain=self._plain) from exc

    def execute_along(
        self, first: tuple[Any, ...], rest: Sequence[tuple[Any, ...]], *, retry_stale: bool = False
    ) -> tuple[Any, list[Any]]:
        """`first` as execute() (its errors this transport's), and the commands of `rest` in
        the same round trip, best effort: each its reply, its redis.ResponseError, or NOT_READ
        (producers.direct). The plain path sends `first` alone: every one of `rest` is NOT_READ."""
        try:
            return self.commands.execute_along(first, rest, retry_stale=retry_stale)
        except (redis.RedisError, OSError, NoReply) as exc:
            raise self.failures.translate(exc, plain=self._plain) from exc

    def close(self) -> None:
        self.commands.close()


class AsyncRedisTransport:
    """RedisTransport for asyncio (no reply polling: the loop has other work); `client`: a
    redis.asyncio.Redis of the caller's."""

    def __init__(self, url: str, *, failures: Failures, max_idle: int = 16, **how: Any) -> None:
        self.failures = failures
        self.commands: _AsyncCommands
        self.commands, self._plain = _commands(url, max_idle=max_idle, sync=False, **how)

    async def execute(self, *args: Any, retry_stale: bool = False) -> Any:
        try:
            return await self.commands.execute(*args, retry_stale=retry_stale)
        except (redis.RedisError, OSError, NoReply) as exc:
            raise self.failures.translate(exc, plain=self._plain) from exc

    async def execute_along(
        self, first: tuple[Any, ...], rest: Sequence[tuple[Any, ...]], *, retry_stale: bool = False
    ) -> tuple[Any, list[Any]]:
        """RedisTransport.execute_along, awaited."""
        try:
            return await self.commands.execute_along(first, rest, retry_stale=retry_stale)
        except (redis.RedisError, OSError, NoReply) as exc:
            raise self.failures.translate(exc, plain=self._plain) from exc

    async def aclose(self) -> None:
        await self.commands.aclose()


def broker_failures(settings: Settings) -> Failures:
    from fashionai_pipeline.producers.errors import BrokerUnavailable, PublishUnknown

    return Failures(f"broker {redact_url(settings.broker_url)}", BrokerUnavailable, PublishUnknown)


def cache_failures() -> Failures:
    from fashionai_pipeline.producers.errors import CacheUnavailable

    return Failures("ranking cache", CacheUnavailable, CacheUnavailable)


# -- the plain path: redis-py's public client ------------------------------------------------


class _NotConnected(redis.ConnectionError):
    """Opening the connection failed: the command was not sent."""


_NotSent = (redis.ResponseError, _NotConnected)


def _tagging(cls: type[Any]) -> type[Any]:
    """`cls` (a redis-py Connection class, sync or asyncio) whose connect failures say so."""
    if inspect.iscoroutinefunction(cls.connect):

        async def aconnect(self: Any) -> None:
            try:
                await cls.connect(self)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                raise _NotConnected(str(exc)) from exc

        return type(f"Tagging{cls.__name__}", (cls,), {"connect": aconnect})

    def connect(self: Any) -> None:
        try:
            cls.connect(self)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise _NotConnected(str(exc)) from exc

    return type(f"Tagging{cls.__name__}", (cls,), {"connect": connect})


def _plain_client(url: str, timeout: float, name: str, *, sync: bool) -> Any:
    """A redis.Redis (or redis.asyncio.Redis) of our own: no client-side retries, connect failures tagged."""
    pool_class: Any
    client_class: Any
    pool_class, client_class, retry = (
        (redis.ConnectionPool, redis.Redis, Retry(NoBackoff(), 0))
        if sync
        else (aioredis.ConnectionPool, aioredis.Redis, AsyncRetry(NoBackoff(), 0))
    )
    pool = pool_class.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=retry, client_name=name
    )
    pool.connection_class = _tagging(pool.connection_class)
    return client_class(connection_pool=pool)


class _Plain:
    def __init__(self, client: Any, *, owned: bool) -> None:
        self._client = client
        self._owned = owned  # a client of ours: closing it closes its pool; a caller's stays theirs


class _PlainRedis(_Plain):
    def execute(self, *args: Any, retry_stale: bool = False) -> Any:
        return self._client.execute_command(*args)  # its pool replaces a stale connection itself

    def execute_along(
        self, first: tuple[Any, ...], rest: Sequence[tuple[Any, ...]], *, retry_stale: bool = False
    ) -> tuple[Any, list[Any]]:
        return self.execute(*first), [NOT_READ] * len(rest)  # plain: one command per round trip

    def close(self) -> None:
        self._client.close()
        if self._owned:
            self._client.connection_pool.disconnect()


class _AsyncPlainRedis(_Plain):
    def __init__(self, client: Any, *, owned: bool, budget: float | None = None) -> None:
        super().__init__(client, owned=owned)
        self._budget = budget

    async def execute_along(
        self, first: tuple[Any, ...], rest: Sequence[tuple[Any, ...]], *, retry_stale: bool = False
    ) -> tuple[Any, list[Any]]:
        return await self.execute(*first), [NOT_READ] * len(rest)  # plain: one command per round trip

    async def execute(self, *args: Any, retry_stale: bool = False) -> Any:
        if self._budget is None:
            return await self._client.execute_command(*args)
        try:
            async with asyncio.timeout(self._budget):
                return await self._client.execute_command(*args)
        except TimeoutError as exc:  # cancelled mid-command: redis-py drops that connection
            raise redis.TimeoutError("no answer within the bound") from exc

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._owned:
            await self._client.connection_pool.disconnect()

"""Configuration: one pydantic-settings object, env prefix FASHIONAI_.

Build it once at the entry point (`Settings()`) and pass it down; nothing else in
the project reads the environment. Importing this module connects to nothing.

A value that fails validation raises ConfigurationError naming the variable and the rule
(`FASHIONAI_TENANTS: shop-a.rate_limit: input should be a valid number`), never the value:
pydantic's own errors echo their input, which may hold a token. Every token the environment
or the keyword arguments carry is redacted from the message as well (producers.redaction),
and the pydantic error is not chained to it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from fashionai_pipeline.producers.errors import ConfigurationError
from fashionai_pipeline.producers.recsettings import RecommendationSettings
from fashionai_pipeline.producers.redaction import redact

SEED_API_URL = "https://catalog.api.fashionai.dev/api/v1/products/protected/recommendation"


_TENANT_PATTERN = r"^[A-Za-z0-9_.-]+$"

# The schemes each kind of URL setting accepts (lowercase, as the code that dispatches on them
# compares them: producers.sink.is_redis, producers.broker.transport_options). A broker is Redis
# (the direct path) or AMQP through kombu (docs/ARCHITECTURE.md); every other Redis URL is
# opened by redis-py, which knows these three; the upstream API is HTTP.
BROKER_SCHEMES: tuple[str, ...] = ("redis", "rediss", "amqp", "amqps", "pyamqp")
REDIS_SCHEMES: tuple[str, ...] = ("redis", "rediss", "unix")
HTTP_SCHEMES: tuple[str, ...] = ("http", "https")

# Upper bounds of the numeric settings: far above any sane value, low enough that every use
# (a socket timeout, a Redis EXPIRE, time arithmetic) stays in range.
MAX_TIMEOUT = 3_600.0  # seconds: one wait (a request, a publish, a retry step)
MAX_SECONDS = 366 * 86_400  # seconds: a lifetime or an age (TTLs, windows, ages)
MAX_RATE = 1_000_000  # events per second, and a burst
MAX_REDIS_BYTES = 512 * 1024 * 1024  # the largest value Redis stores
# The level names both logging and Celery's --loglevel accept (WARN is read as WARNING).
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")


class TenantConfig(BaseModel):
    """One storefront in a multi-tenant deployment; unset fields inherit the top level."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    app_token: SecretStr
    api_url: str | None = None
    rate_limit: float | None = Field(default=None, ge=0, le=MAX_RATE)
    rate_burst: int | None = Field(default=None, ge=1, le=MAX_RATE)

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, HTTP_SCHEMES, "an HTTP URL")


class Settings(BaseSettings):
    """Every knob of the pipeline. Times are seconds unless the name says ms."""

    # allow_inf_nan=False: `inf`, `nan` and a literal that overflows a float (1e400) are refused
    # at start, not met later as an OverflowError. Every number has an upper bound as well.
    model_config = SettingsConfigDict(
        env_prefix="FASHIONAI_", extra="ignore", frozen=True, allow_inf_nan=False
    )

    # Upstream
    api_url: str = SEED_API_URL
    app_token: SecretStr = SecretStr("")
    connect_timeout: float = Field(default=2.0, gt=0, le=MAX_TIMEOUT)
    request_timeout: float = Field(default=5.0, gt=0, le=MAX_TIMEOUT)

    # Broker and cache. The cache defaults to its own database: the broker's Redis
    # must run with noeviction, the cache may evict (docs/ARCHITECTURE.md).
    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_url: str = "redis://127.0.0.1:6379/1"
    queue: str = Field(default="fashionai.events", min_length=1)
    tenant: str = Field(default="default", min_length=1, pattern=_TENANT_PATTERN)
    # Several storefronts in one deployment, as JSON:
    # FASHIONAI_TENANTS='{"shop-a": {"app_token": "...", "rate_limit": 20}, ...}'.
    # Empty (the default): one storefront, `tenant`, with the top-level token and limit.
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)

    # Producer side
    publish_timeout: float = Field(default=0.5, gt=0, le=MAX_TIMEOUT)
    on_broker_down: Literal["raise", "drop"] = "raise"
    amqp_confirm_publish: bool = True
    # The request path's three optimisations, each switchable alone (producers.transport;
    # what each is worth: docs/PERFORMANCE.md). Own connections and RESP packer instead of
    # a redis.Redis client:
    direct_redis: bool = True
    # On direct connections, the sync publisher and reader poll their socket for Redis's
    # reply for up to this long before blocking; 0 (the default): block at once. Saves an
    # idle CPU's wake-up, costs a saturated server CPU (docs/PERFORMANCE.md). Stops by
    # itself when replies take longer (a distant Redis).
    reply_poll_us: int = Field(default=0, ge=0, le=10_000)
    # Envelope, event body and kombu frame filled into string templates instead of json.dumps:
    json_templates: bool = True
    # The disk spool (producers.spool), off while empty: a folder for publishes the broker did
    # not take, replayed when it answers again. Bounded by size (bytes) and age (seconds);
    # spool_fsync flushes each write to disk (survives a power loss, costs a disk flush).
    spool_dir: str = ""
    spool_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024, le=2**50)
    spool_max_age: float = Field(default=24 * 3600.0, gt=0, le=MAX_SECONDS)
    spool_fsync: bool = False

    # Reads on the request path (producers.reader). The bound of one ranking read, the whole
    # call: past it the page gets its fallback. It counts Redis's silence, not the caller's own
    # wait for the GIL or a busy event loop. 25 ms: below it, saturated page servers lost
    # healthy reads; at it, next to none (docs/PERFORMANCE.md, "The read bound"); and a page
    # on a loaded server pays it for a failing read only until the breaker opens.
    read_timeout_ms: int = Field(default=25, ge=1, le=5_000)
    # The circuit breaker (producers.breaker): this many failed reads in a row open it; while
    # open no read waits; after read_breaker_open_ms one read probes.
    read_breaker_failures: int = Field(default=3, ge=1, le=1_000)
    read_breaker_open_ms: int = Field(default=500, ge=1, le=600_000)
    # The storefront's own Redis, for its stock and product facts (never the ranking cache:
    # that one may evict). Empty: no Redis-backed check.
    storefront_redis_url: str = ""
    # Stock check from the storefront's Redis (producers.stock): "set" of ids in stock,
    # "hash" of units per id; key: keys.stock(tenant) unless stock_key names another.
    stock_layout: Literal["off", "set", "hash"] = "off"
    stock_key: str = ""
    # Product facts for the local settings filters: "hash" of id -> JSON (producers.stock).
    facts_layout: Literal["off", "hash"] = "off"
    facts_key: str = ""
    # The recommendation settings to enforce locally as a safety net: JSON in the schema of
    # producers.recsettings (`recommendation_filters()` parses it); empty: none.
    local_filters: str = ""
    # Crowd fallback (worker/crowd.py builds it; readers use it when a shopper has none):
    # off by default, as the API reference advises the native ordering (docs/UPSTREAM.md).
    crowd: bool = False
    # Seconds for a contribution to weigh half; seconds a crowd ranking lives after its last update.
    crowd_half_life: float = Field(default=3600.0, gt=0, le=MAX_SECONDS)
    crowd_ttl: int = Field(default=86_400, ge=1, le=MAX_SECONDS)
    crowd_size: int = Field(default=100, ge=1, le=1_000)  # products kept per (type, id)
    crowd_min_shoppers: int = Field(default=3, ge=1, le=100)  # distinct shoppers before it is served
    # Holdout (producers.holdout): this share of sessions always gets the native ordering.
    holdout: float = Field(default=0.0, ge=0.0, le=1.0)
    holdout_salt: str = Field(default="", max_length=200)

    # Worker side
    batch_size: int = Field(default=200, ge=1, le=10_000)
    # 10 ms: lower enqueue->cache latency at half load than 20 ms (docs/PERFORMANCE.md);
    # a backlog fills batches by size, so throughput is the same.
    batch_interval_ms: int = Field(default=10, ge=1, le=60_000)
    concurrency: int = Field(default=100, ge=1, le=2_000)
    visibility_timeout: int = Field(default=60, ge=10, le=MAX_SECONDS)
    shutdown_timeout: float = Field(default=10.0, gt=0, le=MAX_TIMEOUT)

    # Cache
    ranking_ttl: int = Field(default=1800, ge=1, le=MAX_SECONDS)

    # Delivery under pressure (issue 3): 0 means no global limit.
    rate_limit: float = Field(default=0.0, ge=0, le=MAX_RATE)
    rate_burst: int = Field(default=10, ge=1, le=MAX_RATE)
    max_attempts: int = Field(default=8, ge=1, le=1_000)
    max_age: float = Field(default=900.0, gt=0, le=MAX_SECONDS)
    retry_base: float = Field(default=0.5, gt=0, le=MAX_TIMEOUT)
    retry_cap: float = Field(default=60.0, gt=0, le=MAX_SECONDS)
    coalesce_window_ms: int = Field(default=0, ge=0, le=60_000)

    # Durable worker state (retries and leases, dead letters, limiter and cooldown,
    # duplicate-id marks, counters): a Redis run with persistence and noeviction
    # (docs/ARCHITECTURE.md, "Two Redis roles"). Unset: the broker's URL when the
    # broker is Redis; with another broker it must be set (`state_store_url()`).
    state_url: str | None = None
    # Seconds a recorded message id is remembered, so a producer's publish retried
    # after an "unknown" outcome, or a redelivery after a crash between recording and
    # ack, is dropped instead of sent again.
    duplicate_window: int = Field(default=300, ge=1, le=MAX_SECONDS)
    # Envelope timestamps later than the worker's clock plus this are clamped to it.
    clock_skew: float = Field(default=30.0, ge=0, le=MAX_TIMEOUT)
    # Size bounds on what the worker stores (docs/ARCHITECTURE.md, "Size bounds").
    max_message_bytes: int = Field(default=32_768, ge=1_024, le=MAX_REDIS_BYTES)
    max_response_bytes: int = Field(default=1_048_576, ge=1_024, le=MAX_REDIS_BYTES)
    max_ranking_items: int = Field(default=500, ge=1, le=100_000)
    # Backoff while outcomes cannot be recorded: equal jitter over min(cap, base*2^n).
    store_retry_base: float = Field(default=0.2, gt=0, le=MAX_TIMEOUT)
    store_retry_cap: float = Field(default=5.0, gt=0, le=MAX_TIMEOUT)

    log_level: str = "INFO"
    # The delivery thread's event loop: uvloop when installed ("auto"), or forced.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    # Serve Prometheus metrics on this port from the worker's main process (0: off).
    metrics_port: int = Field(default=0, ge=0, le=65535)

    def __init__(self, **values: Any) -> None:
        """Read FASHIONAI_* (and `values`, which win). Raises ConfigurationError, redacted."""
        try:
            super().__init__(**values)
            return
        except ValidationError as exc:
            error = explain(exc, values)
        except SettingsError as exc:  # a JSON-valued variable that is not JSON
            field = str(exc).split('"')[1] if '"' in str(exc) else "settings"
            error = ConfigurationError(f"{_variable(field)}: not valid JSON")
        # Raised outside the except block: no __context__ holding the pydantic error (its input).
        raise error

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        return check_url(value, BROKER_SCHEMES, "a broker URL")

    @field_validator("redis_url", "storefront_redis_url", "state_url")
    @classmethod
    def _redis_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value and info.field_name != "redis_url":  # optional: empty (or unset) is off
            return value
        return check_url(value or "", REDIS_SCHEMES, "a Redis URL")

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return check_url(value, HTTP_SCHEMES, "an HTTP URL")

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        level = "WARNING" if level == "WARN" else level
        if level not in LOG_LEVELS:  # the value is not shown: it may be anything
            raise ValueError(f"not a log level: use one of {', '.join(LOG_LEVELS)} (any case)")
        return level

    @field_validator("local_filters")
    @classmethod
    def _filters_parse(cls, value: str) -> str:
        if value.strip():
            _parse_filters(value)
        return value

    def recommendation_filters(self) -> RecommendationSettings | None:
        """`local_filters` parsed, or None when it is empty."""
        return _parse_filters(self.local_filters) if self.local_filters.strip() else None

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, value: dict[str, TenantConfig]) -> dict[str, TenantConfig]:
        for name in value:
            if not re.match(_TENANT_PATTERN, name):
                raise ValueError(f"{name!r} must match {_TENANT_PATTERN}")
        return value

    def secrets(self) -> list[str]:
        """Every token of this deployment (app token, each tenant's), for producers.redaction."""
        tokens = [self.app_token.get_secret_value()]
        tokens += [cfg.app_token.get_secret_value() for cfg in self.tenants.values()]
        return [t for t in dict.fromkeys(tokens) if t]

    def state_store_url(self) -> str:
        """The state store's URL: `state_url`, else the broker's when the broker is Redis.

        Raises ConfigurationError when neither applies. Called by the worker and the
        CLI commands that need the store, never while building Settings, so a web app
        that only publishes never needs it.
        """
        if self.state_url:
            return self.state_url
        if self.broker_url.split("://", 1)[0] in ("redis", "rediss"):
            return self.broker_url
        from fashionai_pipeline.producers.errors import ConfigurationError

        raise ConfigurationError(
            "FASHIONAI_STATE_URL: required when the broker is not Redis: the worker keeps retries,"
            " dead letters, the rate limit and duplicate-id marks there (a Redis with persistence"
            " and maxmemory-policy noeviction; see docs/ARCHITECTURE.md)"
        )

    def tenant_names(self) -> list[str]:
        """The storefronts this deployment serves."""
        return sorted(self.tenants) if self.tenants else [self.tenant]

    def for_tenant(self, name: str) -> Settings:
        """These settings as seen by one tenant: its token, URL, limit and queue."""
        if not self.tenants:
            if name != self.tenant:
                raise ConfigurationError(f"tenant: unknown tenant {name!r} (configured: {self.tenant})")
            return self
        try:
            cfg = self.tenants[name]
        except KeyError:
            known = ", ".join(self.tenants)
            raise ConfigurationError(f"tenant: unknown tenant {name!r} (configured: {known})") from None
        update: dict[str, object] = {"tenant": name, "app_token": cfg.app_token, "tenants": {}}
        update["queue"] = self.queue_for(name)
        for field in ("api_url", "rate_limit", "rate_burst"):
            if getattr(cfg, field) is not None:
                update[field] = getattr(cfg, field)
        return self.model_copy(update=update)

    def queue_for(self, tenant: str) -> str:
        """Each tenant has its own queue, so one tenant's backlog cannot starve another's."""
        return self.queue if not self.tenants else f"{self.queue}.{tenant}"


def _parse_filters(text: str) -> RecommendationSettings:
    """RecommendationSettings from JSON; ValueError naming the inner field (never the input)."""
    try:
        return RecommendationSettings.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ValueError(f"{where}: {first['msg'][:1].lower()}{first['msg'][1:]}") from None


def redact_url(url: str) -> str:
    """`url` with any password replaced by '***', for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def check_url(url: str, schemes: tuple[str, ...], kind: str) -> str:
    """`url` when its scheme is one of `schemes` and it parses, else ValueError with the rule.

    The scheme is case-insensitive (RFC 3986) and returned in lowercase, as the code that
    dispatches on it compares it. The message shows the URL only as `_shown` does (never a
    password nor a query string), and nothing of a value without a scheme://: it may be
    anything, a token included. Redis URLs go through redis-py's own parser as well, so what
    passes here is what producers.transport can open.
    """
    accepted = ", ".join(f"{scheme}://" for scheme in schemes)
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ValueError(f"not {kind}: it must start with one of {accepted}")
    url = f"{scheme.lower()}://{rest}"
    scheme, shown = scheme.lower(), _shown(url)
    if scheme not in schemes:
        raise ValueError(f"not {kind}: {shown} (accepted: {accepted})")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number 0-65535
    except ValueError:
        raise ValueError(f"not {kind}: {shown}: its host or port does not parse") from None
    if scheme in HTTP_SCHEMES and not parts.hostname:
        raise ValueError(f"not {kind}: {shown}: it names no host")
    if scheme not in HTTP_SCHEMES and "@" in parts.path + parts.query + parts.fragment:
        raise ValueError(
            f"not {kind}: {shown}: an '@' follows the host (in a password, write '/' as %2F,"
            " '?' as %3F and '#' as %23)"
        )
    if scheme in REDIS_SCHEMES:
        _check_db(parts.path if scheme != "unix" else "", parts.query, kind, shown)
        from redis.connection import parse_url

        try:
            parse_url(url)  # type: ignore[no-untyped-call]  # redis-py ships it untyped
        except ValueError as exc:  # a query argument redis-py cannot read; its message names it
            rule = f"not {kind} redis-py accepts: {shown}: {exc}"
            raise ValueError(redact(rule, [parts.password or ""])) from None
    return url


_DB_PATH = re.compile(r"/?(\d{1,9}/?)?")
_DB = re.compile(r"\d{1,9}")


def _check_db(path: str, query: str, kind: str, shown: str) -> None:
    """The database a Redis URL names, `/N` after the host or `?db=N`, must be a number >= 0.

    redis-py reads anything else in the path as database 0 without a word (`/abc`), and a
    negative one (`/-1`, `?db=-1`) fails only at the first command. A unix:// URL's path is
    the socket's, its database only `?db=N`.
    """
    dbs = parse_qs(query).get("db", [])
    if dbs and not _DB.fullmatch(dbs[0]):
        raise ValueError(f"not {kind}: {shown}: its db= is not a database number (0, 1, 2, ...)")
    if not dbs and not _DB_PATH.fullmatch(path):
        raise ValueError(
            f"not {kind}: {shown}: the path after the host must be a database number (/0, /1, ...)"
        )


def _shown(url: str) -> str:
    """`url` for an error message: its password masked (redact_url), its query and fragment
    left out (redis-py reads `?password=` too); only the scheme when it does not split
    cleanly, or when an '@' follows the host (a password with an unescaped '/', '?' or '#'
    is cut there, and its start would show as a host, a port or a path)."""
    scheme = url.partition("://")[0]
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number may be a piece of a password
    except ValueError:
        return f"{scheme}://(not shown)"
    if "@" in parts.path + parts.query + parts.fragment:
        return f"{scheme}://(not shown)"
    return redact_url(urlunsplit(parts._replace(query="", fragment="")))


def _variable(field: str) -> str:
    return f"FASHIONAI_{field.upper()}"


def environment_secrets() -> list[str]:
    """The tokens FASHIONAI_APP_TOKEN and FASHIONAI_TENANTS hold, read raw (even when they fail
    validation): for redacting output produced before, or without, a Settings."""
    return _raw_secrets({})


def explain(exc: ValidationError, values: dict[str, Any] | None = None) -> ConfigurationError:
    """One line per error: the variable, where inside it, the rule; never the input (any
    FASHIONAI_* settings class: Settings, the service's ServiceSettings). `values`: the
    keyword arguments the settings were given, whose tokens are redacted too."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        field, *inner = [str(part) for part in err["loc"]] or ["settings"]
        where = ".".join(inner)
        rule = err["msg"].removeprefix("Value error, ")
        rule = rule[:1].lower() + rule[1:]
        lines.append(f"{_variable(field)}: {where + ': ' if where else ''}{rule}")
    return ConfigurationError(redact("; ".join(lines), _raw_secrets(values or {})))


_TOKEN_IN_JSON = re.compile(r'"app_token"\s*:\s*"((?:[^"\\]|\\.)*)')


def _raw_secrets(values: dict[str, Any]) -> list[str]:
    """Tokens in settings that failed to build: the raw variables and keyword arguments."""
    found: list[str] = []
    env = {k.upper(): v for k, v in os.environ.items() if k.upper().startswith("FASHIONAI_")}
    for token in (env.get("FASHIONAI_APP_TOKEN"), values.get("app_token")):
        found.append(token.get_secret_value() if isinstance(token, SecretStr) else str(token or ""))
    for given in (values.get("tenants"), env.get("FASHIONAI_TENANTS")):
        tenants = given
        if isinstance(given, str):
            found += _TOKEN_IN_JSON.findall(given)  # also in JSON too broken to parse
            try:
                tenants = json.loads(given)
            except ValueError:
                continue
        if isinstance(tenants, dict):
            for cfg in tenants.values():
                token = cfg.get("app_token") if isinstance(cfg, dict) else getattr(cfg, "app_token", cfg)
                if isinstance(token, SecretStr):
                    token = token.get_secret_value()
                if isinstance(token, str):
                    found.append(token)
    return [t for t in found if t]

"""The sandbox's knobs: tokens and domains, rankings, latency, failure injection, limits.

One :class:`SandboxConfig` is built at the entry point (CLI flags, a test, the
demo) and shared by reference with the running app, so a change made through
:meth:`SandboxConfig.update` — or ``PATCH /_sandbox/config`` — applies to the
next request. Each knob is a plain attribute read once per request; an update
validates every change before assigning any, so a refused update leaves the
config untouched.

The token is never shown: ``repr`` and :meth:`SandboxConfig.public` redact it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Final

REDACTED: Final = "<redacted>"


class ConfigError(ValueError):
    """A knob was unknown or given a value outside its rule; the message names it."""


def _number(name: str, value: object, *, upper: float | None = None) -> float:
    # bool is an int subclass; True as a latency is a typo, not a number
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}: must be a number")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (upper is not None and number > upper):
        bound = f"between 0 and {upper:g}" if upper is not None else ">= 0"
        raise ConfigError(f"{name}: must be {bound}, got {value!r}")
    return number


def _probability(name: str, value: object) -> float:
    return _number(name, value, upper=1.0)


def _seconds(upper: float) -> Callable[[str, object], float]:
    return lambda name, value: _number(name, value, upper=upper)


def _count(name: str, value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ConfigError(f"{name}: must be an integer from {minimum} to {maximum}")
    return value


def _counts(minimum: int, maximum: int) -> Callable[[str, object], int]:
    return lambda name, value: _count(name, value, minimum, maximum)


def _token(name: str, value: object) -> str:
    # CR/LF could never arrive in a header, so such a token would lock every client out
    if not isinstance(value, str) or not value or any(c in value for c in "\r\n\0"):
        raise ConfigError(f"{name}: must be a non-empty string without CR, LF or NUL")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: must be true or false")
    return value


def _seed(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: must be an integer or null")
    return value


def _ids(name: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name}: must be a list of id strings")
    return tuple(value)


# an origin (scheme://host[:port]) or a bare host name; see sandbox/cors.py
DOMAIN_PATTERN: Final = (
    r"^(?:[Hh][Tt][Tt][Pp][Ss]?://)?(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?::[0-9]{1,5})?$"
)
_DOMAIN: Final = re.compile(DOMAIN_PATTERN)


def normalise_domain(name: str, value: object) -> str:
    """A domain entry, lower-cased and without a trailing slash; raises :class:`ConfigError`."""
    if not isinstance(value, str):
        raise ConfigError(f"{name}: each domain must be a string")
    if not _DOMAIN.match(value):
        raise ConfigError(
            f"{name}: {value!r} is not a domain (a host such as shop.example.com, "
            "or an origin such as https://shop.example.com:8443)"
        )
    return value.lower()


def _domains(name: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{name}: must be a list of domains")
    return tuple(dict.fromkeys(normalise_domain(name, v) for v in value))


@dataclass(frozen=True, slots=True, repr=False)
class TokenEntry:
    """One more accepted token: the storefront ``name`` (shown), its ``token`` (never shown)."""

    name: str
    token: str
    domains: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"TokenEntry(name={self.name!r}, token={REDACTED!r}, domains={self.domains!r})"


NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME: Final = re.compile(NAME_PATTERN)
DEFAULT_STOREFRONT: Final = "default"


def _tokens(name: str, value: object) -> tuple[TokenEntry, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{name}: must be a list of {{name, token, domains}} objects")
    entries: list[TokenEntry] = []
    for k, given in enumerate(value):
        where = f"{name}[{k}]"
        item = (
            {"name": given.name, "token": given.token, "domains": list(given.domains)}
            if isinstance(given, TokenEntry)
            else given
        )
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: must be an object with name, token and domains")
        unknown = set(item) - {"name", "token", "domains"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown field (allowed: name, token, domains)")
        label = item.get("name")
        if not isinstance(label, str) or not _NAME.match(label) or label == DEFAULT_STOREFRONT:
            raise ConfigError(
                f"{where}.name: must be 1-64 letters, digits, '.', '_' or '-', and not {DEFAULT_STOREFRONT!r}"
            )
        entries.append(
            TokenEntry(
                label,
                _token(f"{where}.token", item.get("token")),
                _domains(f"{where}.domains", item.get("domains", [])),
            )
        )
    names = [e.name for e in entries]
    for label in names:
        if names.count(label) > 1:
            raise ConfigError(f"{name}: storefront name {label!r} is used twice")
    secrets = [e.token for e in entries]
    if len(set(secrets)) != len(secrets):
        raise ConfigError(f"{name}: two storefronts share one token")
    return tuple(entries)


_MAX_SLEEP_MS: Final = 600_000.0  # ten minutes: longer would only wedge a test run
_RULES: Final[dict[str, Callable[[str, object], object]]] = {
    "token": _token,
    "latency_ms": _seconds(_MAX_SLEEP_MS),
    "latency_jitter_ms": _seconds(_MAX_SLEEP_MS),
    "rate_429": _probability,
    "retry_after": _counts(0, 86_400),
    "retry_after_http_date": _flag,
    "rate_5xx": _probability,
    "rate_timeout": _probability,
    "timeout_sleep_s": _seconds(_MAX_SLEEP_MS / 1000),
    "seed": _seed,
    "log_limit": _counts(1, 100_000_000),
    "refuse_ids": _ids,
    "authorized_domains": _domains,
    "tokens": _tokens,
    "max_products": _counts(1, 10_000),
    "min_history_product_view": _counts(0, 1_000_000),
    "min_history_category_view": _counts(0, 1_000_000),
    "min_history_shop_the_look": _counts(0, 1_000_000),
    "min_history_custom_shelf": _counts(0, 1_000_000),
    "rate_limit_rps": _counts(0, 1_000_000),
}


def _int_schema(minimum: int, maximum: int) -> dict[str, object]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


_TOKEN_SCHEMA: Final[dict[str, object]] = {"type": "string", "minLength": 1, "pattern": "^[^\\r\\n\\x00]+$"}
_DOMAINS_SCHEMA: Final[dict[str, object]] = {
    "type": "array",
    "items": {"type": "string", "pattern": DOMAIN_PATTERN},
}
#: The JSON Schema of each knob, as ``PATCH /_sandbox/config`` checks it (docs/openapi/sandbox.json).
KNOB_SCHEMAS: Final[dict[str, dict[str, object]]] = {
    "token": _TOKEN_SCHEMA,
    "latency_ms": {"type": "number", "minimum": 0, "maximum": _MAX_SLEEP_MS},
    "latency_jitter_ms": {"type": "number", "minimum": 0, "maximum": _MAX_SLEEP_MS},
    "rate_429": {"type": "number", "minimum": 0, "maximum": 1},
    "retry_after": _int_schema(0, 86_400),
    "retry_after_http_date": {"type": "boolean"},
    "rate_5xx": {"type": "number", "minimum": 0, "maximum": 1},
    "rate_timeout": {"type": "number", "minimum": 0, "maximum": 1},
    "timeout_sleep_s": {"type": "number", "minimum": 0, "maximum": _MAX_SLEEP_MS / 1000},
    "seed": {"type": ["integer", "null"]},
    "log_limit": _int_schema(1, 100_000_000),
    "refuse_ids": {"type": "array", "items": {"type": "string"}},
    "authorized_domains": _DOMAINS_SCHEMA,
    "tokens": {
        "type": "array",
        "description": "storefronts besides the default: names and tokens unique, no token equal to `token`",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "token"],
            "properties": {
                "name": {"type": "string", "pattern": NAME_PATTERN, "not": {"const": DEFAULT_STOREFRONT}},
                "token": _TOKEN_SCHEMA,
                "domains": _DOMAINS_SCHEMA,
            },
        },
    },
    "max_products": _int_schema(1, 10_000),
    "min_history_product_view": _int_schema(0, 1_000_000),
    "min_history_category_view": _int_schema(0, 1_000_000),
    "min_history_shop_the_look": _int_schema(0, 1_000_000),
    "min_history_custom_shelf": _int_schema(0, 1_000_000),
    "rate_limit_rps": _int_schema(0, 1_000_000),
}
assert set(KNOB_SCHEMAS) == set(_RULES), "every knob needs its schema"


@dataclass(repr=False, slots=True)
class SandboxConfig:
    """Knobs of one sandbox; see the module docstring for how changes apply.

    - ``token``: the accepted ``X-FashionAI-APP-Token``.
    - ``latency_ms`` / ``latency_jitter_ms``: sleep added to every answer on the
      API path, refusals (400, 401, 403, 413, 415, 429, 405) and preflights
      included, as the real API's latency is: ``latency_ms`` plus uniform
      ``[0, jitter]``. An injected 504 sleeps ``timeout_sleep_s`` instead; a
      408 (body not received in time) does not sleep.
    - ``rate_429`` / ``rate_5xx`` / ``rate_timeout``: probabilities (0..1) of an
      injected 429 (with ``Retry-After``), 500/502/503, or a sleep of
      ``timeout_sleep_s`` followed by 504. One draw decides; if the rates sum
      past 1, 429 takes precedence over 5xx over timeout.
    - ``retry_after``: seconds sent in ``Retry-After``; as an HTTP-date instead
      when ``retry_after_http_date``.
    - ``seed``: seeds failure injection and jitter so a run is reproducible;
      ``None`` draws from the OS.
    - ``log_limit``: most entries the request log keeps (oldest dropped).
    - ``refuse_ids``: ``data.id`` values answered with 400 "unknown to the catalog",
      as an upstream refuses an event for good (tests of dead letters and replay).
    - ``authorized_domains``: browser origins allowed to call with ``token``
      (the default storefront); none by default, so a browser call is blocked.
    - ``tokens``: more storefronts, each a :class:`TokenEntry` with its own
      token, domains and recommendation settings (see :func:`load_config_file`).
    - ``max_products``: the longest list an answer carries (default 24: a shelf
      of 12 still fills after a storefront's own stock checks drop some).
    - ``min_history_<type>``: signal events a shopper needs before that type
      answers a non-empty list (defaults: productView 0, categoryView 1,
      shopTheLook 0, customShelf 2; see docs/SANDBOX.md, "Cold start").
    - ``rate_limit_rps``: at most this many accepted requests in any one-second
      window, the rest answered 429 with ``Retry-After``; 0 turns it off.

    Raises :class:`ConfigError` on construction if a value breaks its rule.
    """

    # a well-known demo value, like stripe-mock's sk_test key: not a secret
    token: str = "sandbox-token"  # noqa: S105
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    rate_429: float = 0.0
    retry_after: int = 1
    retry_after_http_date: bool = False
    rate_5xx: float = 0.0
    rate_timeout: float = 0.0
    timeout_sleep_s: float = 30.0
    seed: int | None = None
    log_limit: int = 1_000_000
    refuse_ids: tuple[str, ...] = ()
    authorized_domains: tuple[str, ...] = ()
    tokens: tuple[TokenEntry, ...] = ()
    max_products: int = 24
    min_history_product_view: int = 0
    min_history_category_view: int = 1
    min_history_shop_the_look: int = 0
    min_history_custom_shelf: int = 2
    rate_limit_rps: int = 0

    def __post_init__(self) -> None:
        for field in fields(self):
            setattr(self, field.name, _RULES[field.name](field.name, getattr(self, field.name)))
        _distinct_tokens(self.token, self.tokens)

    def update(self, changes: Mapping[str, object]) -> None:
        """Apply ``changes`` (knob name -> value) all-or-nothing.

        Raises :class:`ConfigError` for an unknown knob or a bad value, in which
        case nothing is changed. Idempotent for equal values.
        """
        checked: dict[str, object] = {}
        for name, value in changes.items():
            rule = _RULES.get(name)
            if rule is None:
                raise ConfigError(f"{name}: unknown knob (known: {', '.join(_RULES)})")
            checked[name] = rule(name, value)
        token = checked.get("token", self.token)
        tokens = checked.get("tokens", self.tokens)
        assert isinstance(token, str) and isinstance(tokens, tuple)
        _distinct_tokens(token, tokens)
        for name, value in checked.items():
            setattr(self, name, value)

    def public(self) -> dict[str, object]:
        """The knobs as a JSON-ready dict, with the token redacted."""
        shown: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["token"] = REDACTED
        shown["tokens"] = [
            {"name": e.name, "token": REDACTED, "domains": list(e.domains)} for e in self.tokens
        ]
        return shown

    def __repr__(self) -> str:
        knobs = ", ".join(f"{name}={value!r}" for name, value in self.public().items())
        return f"SandboxConfig({knobs})"


KNOBS: Final[tuple[str, ...]] = tuple(_RULES)


def _distinct_tokens(token: str, tokens: tuple[TokenEntry, ...]) -> None:
    if any(entry.token == token for entry in tokens):
        raise ConfigError("tokens: a storefront's token equals the default token")


def load_config_file(path: str | Path) -> dict[str, object]:
    """Read a sandbox configuration file (JSON) into knob -> value changes.

    The file is an object of knobs, typically::

        {"tokens": [{"name": "shop-a", "token": "...", "domains": ["https://www.shop-a.com.br"]},
                    {"name": "shop-b", "token": "...", "domains": ["shop-b.example"]}],
         "authorized_domains": ["localhost:3000"]}

    Any knob of :class:`SandboxConfig` may appear. Raises :class:`ConfigError`
    naming the file for bad JSON (nested too deeply included) or an unknown knob (values are checked when
    applied), ``OSError`` when it cannot be read.
    """
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: must be a JSON object of knob -> value")
    for name in values:
        if name not in _RULES:
            raise ConfigError(f"{path}: {name}: unknown knob (known: {', '.join(_RULES)})")
    return values

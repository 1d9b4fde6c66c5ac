"""The sandbox's knobs: auth token, latency and failure injection.

One :class:`SandboxConfig` is built at the entry point (CLI flags, a test, the
demo) and shared by reference with the running app, so a change made through
:meth:`SandboxConfig.update` — or ``PATCH /_sandbox/config`` — applies to the
next request. Each knob is a plain attribute read once per request; an update
validates every change before assigning any, so a refused update leaves the
config untouched.

The token is never shown: ``repr`` and :meth:`SandboxConfig.public` redact it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
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


def _non_negative(name: str, value: object) -> float:
    return _number(name, value)


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}: must be an integer >= {minimum}")
    return value


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


_RULES: Final[dict[str, Callable[[str, object], object]]] = {
    "token": _token,
    "latency_ms": _non_negative,
    "latency_jitter_ms": _non_negative,
    "rate_429": _probability,
    "retry_after": lambda name, value: _count(name, value, 0),
    "retry_after_http_date": _flag,
    "rate_5xx": _probability,
    "rate_timeout": _probability,
    "timeout_sleep_s": _non_negative,
    "seed": _seed,
    "log_limit": lambda name, value: _count(name, value, 1),
    "refuse_ids": _ids,
}


@dataclass(repr=False, slots=True)
class SandboxConfig:
    """Knobs of one sandbox; see the module docstring for how changes apply.

    - ``token``: the accepted ``X-FashionAI-APP-Token``.
    - ``latency_ms`` / ``latency_jitter_ms``: sleep added to every request that
      passes auth and validation: ``latency_ms`` plus uniform ``[0, jitter]``.
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

    def __post_init__(self) -> None:
        for field in fields(self):
            setattr(self, field.name, _RULES[field.name](field.name, getattr(self, field.name)))

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
        for name, value in checked.items():
            setattr(self, name, value)

    def public(self) -> dict[str, object]:
        """The knobs as a JSON-ready dict, with the token redacted."""
        shown: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["token"] = REDACTED
        return shown

    def __repr__(self) -> str:
        knobs = ", ".join(f"{name}={value!r}" for name, value in self.public().items())
        return f"SandboxConfig({knobs})"


KNOBS: Final[tuple[str, ...]] = tuple(_RULES)

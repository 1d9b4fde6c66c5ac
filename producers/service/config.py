"""The HTTP service's own settings (env prefix FASHIONAI_), and its keys.

Built once by `fashionai-pipeline serve`, beside the pipeline's Settings.
Keys and the signing secret are SecretStr: a repr, a log line or a
validation error never shows them (a bad entry is named by its position).

Key lists are comma-separated. In a multi-tenant deployment
(FASHIONAI_TENANTS) each entry is `KEY@TENANT` and names a configured tenant;
single-tenant, a bare `KEY` belongs to FASHIONAI_TENANT (and `KEY@TENANT` must
name it). Several keys may belong to one tenant (rotation), but one key
belongs to one tenant and one kind: a key listed twice (for two tenants, or
as both an ingest and a read key) is refused, and so is a key that is the
Fashion.AI token (FASHIONAI_APP_TOKEN or any tenant's app_token).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fashionai_pipeline.producers.errors import FashionAIError
from fashionai_pipeline.producers.settings import Settings

MIN_KEY_LEN: Final = 16  # a key shorter than this is guessable
_KEY_CHARS = re.compile(r"[A-Za-z0-9_\-.~+/=]+")
_TENANT = re.compile(r"[A-Za-z0-9_.-]+")


class ServiceConfigError(FashionAIError):
    """The service's settings are wrong; the message names the setting and entry, never a key."""


class ServiceSettings(BaseSettings):
    """Knobs of `fashionai-pipeline serve` (README, docs/SERVICE.md)."""

    model_config = SettingsConfigDict(env_prefix="FASHIONAI_", extra="ignore", frozen=True)

    ingest_keys: SecretStr = SecretStr("")
    read_keys: SecretStr = SecretStr("")
    shopper_signing_key: SecretStr = SecretStr("")
    cors_origins: str = ""
    # Bounds on one POST /v1/events: events per request and bytes per body.
    serve_max_events: int = Field(default=1_000, ge=1, le=100_000)
    serve_max_body: int = Field(default=1_048_576, ge=1_024, le=64 * 1_048_576)
    # Upper bound a caller may ask for in wait_ms.
    serve_max_wait_ms: int = Field(default=1_000, ge=0, le=5_000)
    # Seconds a request's body may take to arrive in full (else 408, and the connection closes).
    serve_body_timeout: float = Field(default=10.0, gt=0, le=300)
    # Seconds a connection may stay without a complete request: idle between keep-alive
    # requests, and from the connection (or the previous answer) to the end of the headers.
    serve_idle_timeout: float = Field(default=75.0, gt=0, le=3_600)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in _split(value):
            if origin == "*" or not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an exact origin like https://shop.example")
        return value

    def origins(self) -> frozenset[str]:
        return frozenset(_split(self.cors_origins))


@dataclass(frozen=True, slots=True)
class Keys:
    """Which tenant each key belongs to: ingest keys, publishable read keys, signing secrets."""

    ingest: tuple[tuple[bytes, str], ...]
    read: tuple[tuple[bytes, str], ...]
    signing: dict[str, tuple[bytes, ...]]  # tenant -> secrets, the first signs

    @classmethod
    def from_settings(cls, service: ServiceSettings, settings: Settings) -> Keys:
        """Parse and check every key list. Raises ServiceConfigError (no key in its text)."""
        tenants = settings.tenant_names()
        ingest = _parse("FASHIONAI_INGEST_KEYS", service.ingest_keys, settings, tenants)
        read = _parse("FASHIONAI_READ_KEYS", service.read_keys, settings, tenants)
        if not ingest:
            raise ServiceConfigError("FASHIONAI_INGEST_KEYS: set at least one key (the service needs one)")
        tokens = {t.encode() for t in settings.secrets()}
        for name, entries in (("FASHIONAI_INGEST_KEYS", ingest), ("FASHIONAI_READ_KEYS", read)):
            for n, (key, _) in enumerate(entries, 1):
                if key in tokens:
                    raise ServiceConfigError(
                        f"{name}: entry {n} is a Fashion.AI app token (FASHIONAI_APP_TOKEN or a tenant's"
                        " app_token); a key of the service must be a secret of its own"
                    )
            _unique(name, entries)
        for m, (key, _) in enumerate(read, 1):
            for n, (other, _) in enumerate(ingest, 1):
                if key == other:
                    raise ServiceConfigError(
                        f"FASHIONAI_READ_KEYS: entry {m} is also FASHIONAI_INGEST_KEYS entry {n}"
                        " (a read key must not also be an ingest key)"
                    )
        signing: dict[str, list[bytes]] = {}
        for secret, tenant in _parse(
            "FASHIONAI_SHOPPER_SIGNING_KEY", service.shopper_signing_key, settings, tenants
        ):
            signing.setdefault(tenant, []).append(secret)
        if read and not signing:
            raise ServiceConfigError(
                "FASHIONAI_SHOPPER_SIGNING_KEY: read keys need a signing secret (a publishable key"
                " reads only the shopper its page was signed for)"
            )
        return cls(tuple(ingest), tuple(read), {t: tuple(s) for t, s in signing.items()})


def _unique(name: str, entries: list[tuple[bytes, str]]) -> None:
    """One key, one tenant: a key listed twice (for one tenant or two) is refused, by positions."""
    first: dict[bytes, int] = {}
    for n, (key, _) in enumerate(entries, 1):
        if key in first:
            raise ServiceConfigError(
                f"{name}: entry {n} repeats the key of entry {first[key]} (a key belongs to one tenant)"
            )
        first[key] = n


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _parse(name: str, value: SecretStr, settings: Settings, tenants: list[str]) -> list[tuple[bytes, str]]:
    out = []
    for n, entry in enumerate(_split(value.get_secret_value()), 1):
        key, at, tenant = entry.rpartition("@")
        if not at:
            key, tenant = entry, ""
        if not tenant:
            if settings.tenants:
                raise ServiceConfigError(f"{name}: entry {n} needs @TENANT (several tenants are configured)")
            tenant = settings.tenant
        if not _TENANT.fullmatch(tenant) or tenant not in tenants:
            raise ServiceConfigError(f"{name}: entry {n} names a tenant that is not configured")
        if len(key) < MIN_KEY_LEN or not _KEY_CHARS.fullmatch(key):
            raise ServiceConfigError(
                f"{name}: entry {n} must be at least {MIN_KEY_LEN} characters of [A-Za-z0-9_-.~+/=]"
            )
        out.append((key.encode(), tenant))
    return out

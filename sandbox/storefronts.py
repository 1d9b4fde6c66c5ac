"""Storefronts: who a token belongs to, which domains it authorised, which settings it saved.

Each token is one storefront, as on Fashion.AI. The default storefront
(``"default"``) has ``SandboxConfig.token`` and ``authorized_domains``; more
come from ``SandboxConfig.tokens`` (a configuration file). Settings are kept by
storefront *name*, so rotating a token keeps its storefront's settings.

The token index is rebuilt whenever the config's token knobs change (checked
by identity on each request, which costs one comparison). Presented tokens are
looked up by their SHA-256, so the lookup time tells nothing about how much of
a wrong token was right.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from fashionai_pipeline.producers.recsettings import RecommendationSettings, RecType, TypeSettings
from fashionai_pipeline.sandbox.catalog import Catalog
from fashionai_pipeline.sandbox.config import DEFAULT_STOREFRONT, SandboxConfig
from fashionai_pipeline.sandbox.cors import origin_allowed
from fashionai_pipeline.sandbox.filters import TypeFilter, coverages


def _key(token: str) -> bytes:
    # surrogatepass: aiohttp decodes odd header bytes to surrogates; they must not raise
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(slots=True)
class Storefront:
    """One storefront's domains, settings and the settings compiled for ranking."""

    name: str
    domains: tuple[str, ...]
    settings: RecommendationSettings = field(default_factory=RecommendationSettings)
    filters: dict[RecType, TypeFilter] = field(default_factory=dict)

    def allows(self, origin: str) -> bool:
        """Whether a browser at ``origin`` may call with this storefront's token."""
        return origin_allowed(origin, self.domains)


class Storefronts:
    """The storefronts of one sandbox. Event-loop thread only (control routes included)."""

    def __init__(self, config: SandboxConfig, catalog: Catalog) -> None:
        self._config = config
        self._catalog = catalog
        self._coverage = coverages(catalog)
        self._by_name: dict[str, Storefront] = {}
        self._by_token: dict[bytes, Storefront] = {}
        self._seen: tuple[object, object, object] = (None, None, None)
        self._sync()

    def _sync(self) -> None:
        cfg = self._config
        if self._seen == (cfg.token, cfg.tokens, cfg.authorized_domains):
            return
        # identity of the knob values: a PATCH replaces them, a request never does
        self._seen = (cfg.token, cfg.tokens, cfg.authorized_domains)
        wanted = {DEFAULT_STOREFRONT: (cfg.token, cfg.authorized_domains)}
        wanted.update({e.name: (e.token, e.domains) for e in cfg.tokens})
        by_name: dict[str, Storefront] = {}
        by_token: dict[bytes, Storefront] = {}
        for name, (token, domains) in wanted.items():
            known = self._by_name.get(name)
            store = known if known is not None else Storefront(name, domains)
            store.domains = domains
            by_name[name] = store
            by_token[_key(token)] = store
        self._by_name, self._by_token = by_name, by_token

    def for_token(self, presented: str | None) -> Storefront | None:
        """The storefront ``presented`` belongs to, or ``None`` (missing or wrong token)."""
        self._sync()
        if presented is None:
            return None
        return self._by_token.get(_key(presented))

    def named(self, name: str) -> Storefront | None:
        """The storefront called ``name``, or ``None``."""
        self._sync()
        return self._by_name.get(name)

    def names(self) -> list[str]:
        """Every storefront's name, the default first."""
        self._sync()
        return list(self._by_name)

    def any_allows(self, origin: str) -> bool:
        """Whether some storefront authorised ``origin`` (the rule for a token-less preflight)."""
        self._sync()
        return any(store.allows(origin) for store in self._by_name.values())

    def save(self, store: Storefront, rec_type: RecType, settings: TypeSettings) -> None:
        """Replace ``rec_type``'s settings of ``store``; its other types stay as they were."""
        store.settings = store.settings.saved(rec_type, settings)
        if settings.is_cleared:
            store.filters.pop(rec_type, None)
        else:
            store.filters[rec_type] = TypeFilter(settings, self._catalog, self._coverage)

    def clear(self, store: Storefront, rec_type: RecType) -> None:
        """Back to no filters for ``rec_type`` ("Clear" in the panel)."""
        self.save(store, rec_type, TypeSettings())

    def reset(self) -> int:
        """Clear every storefront's settings; returns how many types were set."""
        cleared = 0
        for store in self._by_name.values():
            cleared += len(store.filters)
            store.settings = RecommendationSettings()
            store.filters.clear()
        return cleared

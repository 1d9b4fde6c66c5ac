"""What one running sandbox app holds: knobs, storefronts, engine, request log, fault dice, limit.

Kept apart from the handlers so the recommendation route (``server.py``) and
the control routes (``control.py``) share it without importing each other.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from fashionai_pipeline.sandbox.bodies import DEFAULT_BODY_TIMEOUT_S
from fashionai_pipeline.sandbox.config import SandboxConfig
from fashionai_pipeline.sandbox.fault import FaultInjector
from fashionai_pipeline.sandbox.limits import SlidingWindowLimit
from fashionai_pipeline.sandbox.ranking import RankingEngine
from fashionai_pipeline.sandbox.request_log import RequestLog
from fashionai_pipeline.sandbox.storefronts import Storefront, Storefronts


class SandboxState:
    """Per-app state; created by ``create_app`` and reachable as ``app[STATE]``.

    Lives on the app's event loop; only ``log`` and ``config`` may be touched
    from another thread (see their own docs).
    """

    def __init__(self, config: SandboxConfig, engine: RankingEngine) -> None:
        self.config = config
        engine.config = config  # one set of knobs, live, for the route and the engine
        self.engine = engine
        self.log = RequestLog(config.log_limit)
        self.faults = FaultInjector(config)
        self.limit = SlidingWindowLimit()
        self.storefronts = Storefronts(config, engine.catalog)
        #: seconds a request body may take to arrive (``create_app(body_timeout_s=...)``)
        self.body_timeout_s = DEFAULT_BODY_TIMEOUT_S

    def storefront(self, presented: str | None) -> Storefront | None:
        """The storefront whose token was ``presented``; ``None`` when missing or wrong."""
        return self.storefronts.for_token(presented)

    def token_ok(self, presented: str | None) -> bool:
        """Whether ``presented`` is one of the configured tokens."""
        return self.storefronts.for_token(presented) is not None

    def sync_log_limit(self) -> None:
        """Apply a changed ``config.log_limit`` to the log; cheap when unchanged."""
        if self.config.log_limit != self.log.limit:
            self.log.resize(self.config.log_limit)

    def reset(self) -> dict[str, int]:
        """Back to a fresh start, knobs aside: histories, settings, log, dice, limit window."""
        users = len(self.engine.users)
        sessions = self.engine.clear()
        settings = self.storefronts.reset()
        requests = self.log.count
        self.log.clear()
        self.faults.reseed()
        self.limit.reset()
        return {"sessions": sessions, "users": users, "settings": settings, "requests": requests}


STATE: Final = web.AppKey("sandbox_state", SandboxState)

"""What one running sandbox app holds: knobs, ranking engine, request log, fault dice.

Kept apart from the handlers so the recommendation route (``server.py``) and
the control routes (``control.py``) share it without importing each other.
"""

from __future__ import annotations

import hmac
from typing import Final

from aiohttp import web

from fashionai_pipeline.sandbox.config import SandboxConfig
from fashionai_pipeline.sandbox.fault import FaultInjector
from fashionai_pipeline.sandbox.ranking import RankingEngine
from fashionai_pipeline.sandbox.request_log import RequestLog


class SandboxState:
    """Per-app state; created by ``create_app`` and reachable as ``app[STATE]``.

    Lives on the app's event loop; only ``log`` and ``config`` may be touched
    from another thread (see their own docs).
    """

    def __init__(self, config: SandboxConfig, engine: RankingEngine) -> None:
        self.config = config
        self.engine = engine
        self.log = RequestLog(config.log_limit)
        self.faults = FaultInjector(config)
        self._token_seen = config.token
        self._token = config.token.encode()

    def token_ok(self, presented: str | None) -> bool:
        """Whether ``presented`` is the configured token, in constant time."""
        if presented is None:
            return False
        if self.config.token is not self._token_seen:  # changed at runtime
            self._token_seen = self.config.token
            self._token = self._token_seen.encode()
        # surrogatepass: aiohttp decodes odd header bytes to surrogates; they
        # must compare unequal, not raise
        return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), self._token)

    def sync_log_limit(self) -> None:
        """Apply a changed ``config.log_limit`` to the log; cheap when unchanged."""
        if self.config.log_limit != self.log.limit:
            self.log.resize(self.config.log_limit)


STATE: Final = web.AppKey("sandbox_state", SandboxState)

"""A Fashion.AI-compatible sandbox server, like stripe-mock is for Stripe.

It plays ``POST /api/v1/products/protected/recommendation`` locally: the
seed contract checked strictly, deterministic rankings over a synthetic
catalog, and knobs for latency, 429s, 5xxs and timeouts, plus ``/_sandbox/``
control routes that exist only here. Run it with ``python -m sandbox``,
:func:`run_sandbox`, or in-process with :class:`SandboxServer`.
"""

from sandbox.config import SandboxConfig
from sandbox.runner import SandboxServer, run_sandbox
from sandbox.server import create_app

__all__ = ["SandboxConfig", "SandboxServer", "create_app", "run_sandbox"]

"""A Fashion.AI-compatible sandbox server, like stripe-mock is for Stripe, but stateful.

It plays ``POST /api/v1/products/protected/recommendation`` locally: the
contract checked strictly, explainable rankings over a fashion catalog that
fill up as sessions and users browse, per-storefront recommendation settings
and CORS, and knobs for latency, 429s, 5xxs, timeouts and a requests/s limit,
plus ``/_sandbox/`` control routes that exist only here. Run it with
``python -m fashionai_pipeline.sandbox``, :func:`run_sandbox`, or in-process
with :class:`SandboxServer`. The manual is docs/SANDBOX.md.
"""

# In a checkout the folder `sandbox/` is importable from the repository root under its
# bare name too; refuse that, so no module of the project is ever loaded twice.
if __name__ != "fashionai_pipeline.sandbox":
    raise ImportError(f"import fashionai_pipeline.sandbox, not {__name__}")

from fashionai_pipeline.sandbox.config import SandboxConfig
from fashionai_pipeline.sandbox.runner import SandboxServer, run_sandbox
from fashionai_pipeline.sandbox.server import create_app

__all__ = ["SandboxConfig", "SandboxServer", "create_app", "run_sandbox"]

"""fashionai-pipeline: storefront events to Fashion.AI's Personalization API, rankings back into Redis.

The distribution installs this one top-level package; its parts are its subpackages:

- ``fashionai_pipeline.producers``: the storefront side (publish events, read rankings);
  the base install, free of Celery and httpx;
- ``fashionai_pipeline.worker``: Celery workers that deliver events (the ``worker`` extra);
- ``fashionai_pipeline.sandbox``: a Fashion.AI-compatible local server (the ``sandbox`` extra).

Importing this package imports none of them.
"""

__version__ = "0.1.0"

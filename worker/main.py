"""`celery -A fashionai_pipeline.worker.main worker`: the app, built from the environment.

A FASHIONAI_* value that fails validation ends the process here with one line naming the
variable and status 2, as `fashionai-pipeline worker` does, not with a traceback out of
Celery's app loader.
"""

import sys

from fashionai_pipeline.producers.errors import ConfigurationError
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.app import create_app

try:
    app = create_app(Settings())
except ConfigurationError as exc:  # already redacted, names the variable
    print(f"error: configuration: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

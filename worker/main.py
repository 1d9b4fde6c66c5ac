"""`celery -A fashionai_pipeline.worker.main worker`: the app, built from the environment."""

from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.app import create_app

app = create_app(Settings())

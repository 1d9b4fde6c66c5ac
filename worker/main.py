"""Entry-point module for `celery -A worker.main worker`: builds the app from the environment."""

from producers.settings import Settings
from worker.app import create_app

app = create_app(Settings())

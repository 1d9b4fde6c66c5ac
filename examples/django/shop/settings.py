"""Settings of the example shop. Everything a deployment changes comes from the environment:
SHOP_SECRET_KEY, SHOP_DB (the SQLite file of users), and the FASHIONAI_* variables, which
the integration reads itself (one Settings per process)."""

import os
import secrets
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# The example data shared by the three example shops (examples/storefront).
sys.path.insert(0, str(BASE_DIR.parent))
from storefront import TEMPLATES as SHARED_TEMPLATES  # noqa: E402

# Signs the session cookie: every worker must share it (gunicorn --preload builds the
# app once, so the random fallback is shared; set it in production).
SECRET_KEY = os.environ.get("SHOP_SECRET_KEY") or secrets.token_hex(32)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication: pages read request.user for the Fashion.AI user id.
    "fashionai_pipeline.producers.integrations.django.FashionAIMiddleware",
]
# Django's own session (the login) lives in a signed cookie: no session table to write.
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"

ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
TEMPLATES = [
    {
        # The three example shops share one set of Jinja2 templates.
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "DIRS": [str(SHARED_TEMPLATES)],
        "APP_DIRS": False,
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DB") or str(BASE_DIR / "db.sqlite3"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/login"
LOGIN_REDIRECT_URL = "/"
USE_TZ = True

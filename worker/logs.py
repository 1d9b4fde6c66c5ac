"""Logging set-up with a last line of defence for the token.

The code never formats the token into a message; this filter also replaces it
wherever it might appear anyway (a third-party debug line, an exception text).
"""

from __future__ import annotations

import logging

from fashionai_pipeline.producers.redaction import redact

_MIN_SECRET = 4  # shorter "secrets" would mask ordinary text


class RedactFilter(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= _MIN_SECRET]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if any(s in message for s in self._secrets):
            record.msg, record.args = redact(message, self._secrets), None
        if record.exc_info and record.exc_info[1] is not None:
            text = str(record.exc_info[1])
            if any(s in text for s in self._secrets):
                record.exc_info = None
                record.exc_text = None
                record.msg = f"{record.msg} (exception text withheld: it contained a secret)"
        return True


def install_redaction(secrets: list[str], logger: logging.Logger | None = None) -> None:
    """Attach the filter to every handler of `logger` (default: root)."""
    target = logger or logging.getLogger()
    flt = RedactFilter(secrets)
    for handler in target.handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(flt)


def configure(level: str, secrets: list[str]) -> None:
    """Plain stderr logging for the CLI's own commands (Celery configures its own)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction(secrets)

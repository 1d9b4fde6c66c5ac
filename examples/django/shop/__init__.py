"""The example shop on Django (examples/django/README in docs/INTEGRATIONS.md)."""

"""The worker side of fashionai-pipeline: Celery workers that deliver events.

Needs the `worker` extra (celery, httpx, httpx-aiohttp, prometheus-client).
"""

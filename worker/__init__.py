"""The worker side of fashionai-pipeline: Celery workers that deliver events.

Needs the `worker` extra (celery, httpx, httpx-aiohttp, prometheus-client).
"""

# In a checkout the folder `worker/` is importable from the repository root under its
# bare name too; refuse that, so no module of the project is ever loaded twice.
if __name__ != "fashionai_pipeline.worker":
    raise ImportError(f"import fashionai_pipeline.worker, not {__name__}")

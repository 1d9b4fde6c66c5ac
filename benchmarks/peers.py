"""The peer: what a user would write without this project.

One Celery task per event: a synchronous httpx POST of the event to the
upstream with the token header, then a Redis SET of the ranking (plus one
HINCRBY of a counter in the same round trip, so the benchmark can see when the
backlog is done). Started as a subprocess::

    celery -A benchmarks.peers worker --pool threads -c 100 -Q QUEUE
    celery -A benchmarks.peers worker --pool prefork -c 2 -Q QUEUE

`celery -A` imports this module and needs a configured app, so the
configuration is read from BENCH_PEER_* variables here, at import; the
benchmark process calls `configure()` instead. Nothing connects at import.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import httpx
import redis
from celery import Celery, signals

from fashionai_pipeline.producers import keys

app = Celery("benchpeers", set_as_current=False)
_conf: dict[str, Any] = {}
_local: dict[str, Any] = {}
_lock = threading.Lock()


def configure(
    *,
    broker_url: str,
    redis_url: str = "redis://127.0.0.1:6379/1",
    api_url: str = "",
    token: str = "",
    queue: str = "bench.peer",
    tenant: str = "bench-peer",
    connections: int = 100,
) -> None:
    """Point the app at a broker, a cache and an upstream. Call before first use."""
    _conf.update(redis_url=redis_url, api_url=api_url, token=token, tenant=tenant, connections=connections)
    app.conf.update(
        broker_url=broker_url,
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        task_ignore_result=True,
        worker_enable_remote_control=False,
        worker_hijack_root_logger=True,
    )


def env() -> dict[str, str]:
    """BENCH_PEER_* variables that make a `celery -A benchmarks.peers` child match `_conf`."""
    return {
        "BENCH_PEER_BROKER": str(app.conf.broker_url),
        "BENCH_PEER_REDIS": _conf["redis_url"],
        "BENCH_PEER_URL": _conf["api_url"],
        "BENCH_PEER_TOKEN": _conf["token"],
        "BENCH_PEER_QUEUE": str(app.conf.task_default_queue),
        "BENCH_PEER_TENANT": _conf["tenant"],
        "BENCH_PEER_CONNECTIONS": str(_conf["connections"]),
    }


configure(
    broker_url=os.environ.get("BENCH_PEER_BROKER", "redis://127.0.0.1:6379/0"),
    redis_url=os.environ.get("BENCH_PEER_REDIS", "redis://127.0.0.1:6379/1"),
    api_url=os.environ.get("BENCH_PEER_URL", ""),
    token=os.environ.get("BENCH_PEER_TOKEN", ""),
    queue=os.environ.get("BENCH_PEER_QUEUE", "bench.peer"),
    tenant=os.environ.get("BENCH_PEER_TENANT", "bench-peer"),
    connections=int(os.environ.get("BENCH_PEER_CONNECTIONS", "100")),
)


def _forget_clients() -> None:
    _local.clear()


os.register_at_fork(after_in_child=_forget_clients)


def _clients() -> tuple[httpx.Client, redis.Redis]:
    # One HTTP client and one Redis pool per process, created after the fork,
    # shared by the pool's threads (both are thread-safe).
    if "http" not in _local:
        with _lock:
            if "http" not in _local:
                n = int(_conf["connections"])
                _local["cache"] = redis.Redis.from_url(_conf["redis_url"], max_connections=n + 10)
                _local["http"] = httpx.Client(
                    headers={"X-FashionAI-APP-Token": _conf["token"], "Content-Type": "application/json"},
                    limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                    timeout=httpx.Timeout(5.0, connect=2.0),
                )
    return _local["http"], _local["cache"]


@app.task(name="bench.deliver", ignore_result=True)  # type: ignore[untyped-decorator]
def deliver(body: dict[str, Any]) -> None:
    """POST one event, cache its ranking. A failure is counted as dead, not retried."""
    http, cache = _clients()
    tenant = _conf["tenant"]
    try:
        response = http.post(_conf["api_url"], content=json.dumps(body).encode())
        response.raise_for_status()
        products = response.json()["products"]
        key = keys.ranking(
            tenant, body["eventType"], body["data"]["id"], body["sessionId"], body.get("userId")
        )
        value = json.dumps([int(time.time() * 1000), *products], separators=(",", ":"))
        pipe = cache.pipeline(transaction=False)
        pipe.set(key, value, px=1_800_000)
        pipe.hincrby(keys.stats(tenant), "cached", 1)
        pipe.execute()
    except Exception:
        cache.hincrby(keys.stats(tenant), "dead", 1)


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _announce(**_: Any) -> None:
    # stdout is redirected into Celery's logger; the benchmark reads this raw line.
    os.write(2, b"peer ready\n")

"""Shared fixtures. Integration tests use the real Redis, the real brokers, real
worker processes and the real sandbox on loopback; nothing here is a mock."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.sandbox import SandboxConfig, SandboxServer
from fashionai_pipeline.worker.local import Proc, scratch_dir, start_worker

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
BROKERS = {"redis": f"{REDIS_URL}/14", "amqp": AMQP_URL}
CACHE_URL = f"{REDIS_URL}/15"
# The state store (retries, dead letters, limiter, marks, counters): the broker's DB,
# as a Redis-broker deployment gets by default; named explicitly so that RabbitMQ
# tests have one too.
STATE_URL = f"{REDIS_URL}/14"
TOKEN = "tok-" + "9f8e7d6c5b4a39281706"  # long and unique, so a leak is easy to find


@pytest.fixture
def cache() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(CACHE_URL)
    yield client
    client.close()


@pytest.fixture
def state() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(STATE_URL)
    yield client
    client.close()


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(token=TOKEN, seed=1)) as server:
        yield server


@pytest.fixture(params=["redis", "amqp"])
def broker_url(request: pytest.FixtureRequest) -> str:
    return BROKERS[request.param]


def make_settings(broker_url: str, api_url: str, **overrides: object) -> Settings:
    """Settings isolated to this test: its own queue and tenant."""
    run = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "broker_url": broker_url,
        "redis_url": CACHE_URL,
        "state_url": STATE_URL,
        "api_url": api_url,
        "app_token": TOKEN,
        "queue": f"test.events.{run}",
        "tenant": f"t{run}",
        "batch_size": 50,
        "batch_interval_ms": 20,
        "concurrency": 50,
        "retry_base": 0.05,
        "retry_cap": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(broker_url: str, sandbox: SandboxServer) -> Settings:
    return make_settings(broker_url, sandbox.url)


@pytest.fixture
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Proc]]:
    """Start worker processes; every one is stopped at the end of the test."""
    started: list[Proc] = []
    used: dict[str, Settings] = {}
    log_dir = str(tmp_path_factory.mktemp("logs"))

    def start(settings: Settings, *args: str) -> Proc:
        used[settings.queue] = settings
        proc = start_worker(settings, log_dir=log_dir, args=args or ("-c", "2"))
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(timeout=30)
    for settings in used.values():
        delete_queue(settings)


def delete_queue(settings: Settings) -> None:
    """Remove a test's queue (and, on Redis, its retry/stat keys stay with the tenant)."""
    from fashionai_pipeline.producers.broker import connect

    with connect(settings, timeout=5) as conn:
        channel = conn.channel()
        for tenant in settings.tenant_names():
            channel.queue_delete(settings.queue_for(tenant))
        channel.queue_delete(f"{settings.queue}.control")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def delivered_bodies(server: SandboxServer) -> list[dict[str, object]]:
    return [r["body"] for r in server.requests() if r["status"] == 200]


__all__ = ["delivered_bodies", "make_settings", "scratch_dir", "wait_until"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any module of the project was loaded under a second name.

    The folders producers/, worker/ and sandbox/ are importable from the
    repository root by their bare names; the project's one import path is
    fashionai_pipeline.*, and a module loaded twice would have two copies of
    its state (settings, registries, locks).
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folders = tuple(os.path.join(root, part) + os.sep for part in ("producers", "worker", "sandbox"))
    owners: dict[str, list[str]] = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        real = os.path.realpath(path)
        if real.startswith(folders):
            owners.setdefault(real, []).append(name)
    wrong = {p: n for p, n in owners.items() if len(n) > 1 or not n[0].startswith("fashionai_pipeline.")}
    if wrong:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        for path, names in sorted(wrong.items()):
            print(f"\nmodule loaded under the wrong or a second name: {path} as {names}", file=sys.stderr)

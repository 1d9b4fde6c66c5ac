"""The disk spool with real processes: a broker that is down, several server processes, restarts.

The broker is a private redis-server (stopped and started again on its port); the server is
gunicorn with --preload and three workers sharing one spool; a real worker delivers to the
sandbox once the broker is back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from fashionai_pipeline.producers import BrokerUnavailable, Publisher
from fashionai_pipeline.producers.spool import Spool
from fashionai_pipeline.worker.local import Proc, free_port, start_redis
from tests.conftest import CACHE_URL, make_settings, wait_until

pytestmark = pytest.mark.integration
EVENTS = 60


def _gunicorn(env: dict[str, str], port: int, log: str) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "gunicorn", "-w", "3", "--preload", "-b", f"127.0.0.1:{port}",
        "--log-level", "warning", "tests.integration.spool_app:app",
    ]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/nothing", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    with open(log) as out:
        raise AssertionError(f"gunicorn did not start:\n{out.read()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.fixture
def brokers() -> Iterator[list[Proc]]:
    """Private redis-servers the test starts; stopped after the workers fixture is done with them."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


def test_events_spooled_while_the_broker_is_down_survive_a_restart_and_arrive(
    sandbox, brokers, workers, tmp_path
):
    log_dir = str(tmp_path)
    broker, broker_url = start_redis(log_dir=log_dir)
    port = int(broker_url.rsplit(":", 1)[1].split("/")[0])
    broker.stop()  # the broker is down before the first page is served
    settings = make_settings(broker_url, sandbox.url, publish_timeout=0.2)
    env = {
        **os.environ,
        "FASHIONAI_BROKER_URL": broker_url,
        "FASHIONAI_REDIS_URL": CACHE_URL,
        "FASHIONAI_QUEUE": settings.queue,
        "FASHIONAI_TENANT": settings.tenant,
        "FASHIONAI_PUBLISH_TIMEOUT": "0.2",
        "FASHIONAI_SPOOL_DIR": str(tmp_path / "spool"),
    }
    web_port = free_port()
    server = _gunicorn(env, web_port, str(tmp_path / "gunicorn.log"))
    sessions = [f"spool-{uuid.uuid4().hex[:8]}-{i}" for i in range(EVENTS)]
    try:
        answers = [
            httpx.get(f"http://127.0.0.1:{web_port}/", params={"s": s}, timeout=10).text for s in sessions
        ]
    finally:
        _stop(server)  # the server processes restart: the spool is all that holds the events
    assert all(a.startswith("spooled ") for a in answers), answers[:3]
    assert Spool(str(tmp_path / "spool")).pending() == EVENTS

    server = _gunicorn(env, web_port, str(tmp_path / "gunicorn.log"))
    brokers.append(start_redis(log_dir=log_dir, port=port)[0])
    try:
        workers(settings)

        def arrived() -> set[str]:
            return {r["body"]["sessionId"] for r in sandbox.requests() if r["status"] == 200}

        wait_until(lambda: set(sessions) <= arrived(), 90, "every spooled event at the upstream")
        delivered = [
            r for r in sandbox.requests() if r["status"] == 200 and r["body"]["sessionId"] in sessions
        ]
        # At least once; a replayed batch whose answer was lost is sent again, one batch at most.
        assert len(delivered) - EVENTS <= Spool(str(tmp_path / "spool")).replay_batch
        stats = Spool(str(tmp_path / "spool")).stats()
        assert (stats.pending, stats.spooled, stats.dropped_full, stats.dropped_old) == (0, EVENTS, 0, 0)
        assert stats.replayed >= EVENTS
    finally:
        _stop(server)


def test_while_spooling_a_publish_skips_the_dead_broker_and_returns_at_once(tmp_path):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(dead, "http://127.0.0.1:1/", publish_timeout=0.5, spool_dir=str(tmp_path))
    with Publisher(settings) as publisher:
        first = publisher.product_view("s1", "p0001")
        started = time.monotonic()
        later = [publisher.product_view(f"s{i}", "p0001") for i in range(2, 22)]
        skipped = time.monotonic() - started
    assert first.outcome == "spooled" and all(r.outcome == "spooled" for r in later)
    assert skipped < 20 * 0.5 / 2  # generous: tried against the dead broker, 20 would take ~20 bounds
    assert publisher.stats.spooled == 21 and publisher.stats.published == 0


def test_a_full_spool_leaves_the_event_to_the_callers_policy(tmp_path):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(
        dead, "http://127.0.0.1:1/", publish_timeout=0.2, spool_dir=str(tmp_path), spool_max_bytes=1024
    )
    with Publisher(settings) as publisher:
        outcomes = []
        # the default policy: raise when not published, saying why the spool did not keep it
        with pytest.raises(
            BrokerUnavailable, match=r"^the disk spool is full \(FASHIONAI_SPOOL_MAX_BYTES=1024 "
        ):
            for i in range(100):
                outcomes.append(publisher.product_view(f"s{i}", "p0001").outcome)
    assert outcomes and set(outcomes) == {"spooled"}
    assert Spool(str(tmp_path)).stats().dropped_full >= 1


def test_the_cli_reports_a_spooled_event_as_spooled_and_safe(tmp_path):
    env = {
        **os.environ,
        "FASHIONAI_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "FASHIONAI_PUBLISH_TIMEOUT": "0.2",
        "FASHIONAI_SPOOL_DIR": str(tmp_path),
    }
    lines = "\n".join(
        f'{{"sessionId": "c{i}", "eventType": "productView", "data": {{"id": "p0001"}}}}' for i in range(3)
    )
    out = subprocess.run(
        [sys.executable, "-m", "fashionai_pipeline.worker.cli", "publish", "--file", "-"],
        input=lines, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(": spooled (message id ") == 3
    assert "published 0 event(s), spooled 3, refused 0, not published 0, unknown 0" in out.stdout
    assert Spool(str(tmp_path)).pending() == 3

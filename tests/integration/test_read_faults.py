"""Reads never hurt the page: a private redis-server stopped, or frozen with SIGSTOP.

For both readers: the read returns the fallback within its bound (a generous margin), the
breaker then stops later reads from waiting, and reads recover by themselves after the
restart or SIGCONT. Publish-and-wait's reads and the HTTP service's go through the same
reader (tests/service covers the service; here RankingServer.view).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.event import make_event
from fashionai_pipeline.producers.reader import AsyncRankingReader, RankingReader
from fashionai_pipeline.producers.serving import RankingServer
from fashionai_pipeline.worker.local import free_port, redis_answers
from tests.conftest import BROKERS, make_settings

pytestmark = pytest.mark.integration

BOUND_MS = 50
MARGIN = 0.5  # seconds on top of the bound: a busy shared machine, never a tight timing assertion
NATIVE = [f"n{i}" for i in range(20)]
OPEN_MS = 300


class PrivateRedis:
    """A redis-server of this test's own on a fixed port, so it can be stopped and restarted."""

    def __init__(self, tmp_path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tmp_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(argv, cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not redis_answers(self.url):
            assert time.monotonic() < deadline, "private redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait(10)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)


@pytest.fixture
def private(tmp_path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()


def _settings(url: str, **extra):
    return make_settings(
        BROKERS["redis"], "http://127.0.0.1:9/unused", redis_url=url, read_timeout_ms=BOUND_MS,
        read_breaker_failures=2, read_breaker_open_ms=OPEN_MS, **extra,
    )  # fmt: skip


def _seed(url: str, settings) -> None:
    key = keys.ranking(settings.tenant, "productView", "p1", "s1", None)
    redis.Redis.from_url(url).set(key, json.dumps([int(time.time() * 1000), "n7", "n3"]))


def _wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
def test_sync_reader_falls_back_within_its_bound_short_circuits_and_recovers(private, fault):
    settings = _settings(private.url)
    _seed(private.url, settings)
    with RankingReader(settings) as reader:
        assert reader.serve("productView", "p1", "s1", NATIVE).source == "cached"  # connected and healthy
        private.stop() if fault == "stopped" else private.signal(signal.SIGSTOP)

        started = time.monotonic()
        first = reader.serve("productView", "p1", "s1", NATIVE)
        assert first.source == "fallback" and first.products == NATIVE
        assert time.monotonic() - started < BOUND_MS / 1000 + MARGIN
        reader.serve("productView", "p1", "s1", NATIVE)  # the second failure opens the breaker
        assert reader.cache_open

        # While open, reads do not wait: 200 of them take far less than 200 bounds (10 s).
        started = time.monotonic()
        for _ in range(200):
            assert reader.serve("productView", "p1", "s1", NATIVE).source == "fallback"
        assert time.monotonic() - started < 200 * BOUND_MS / 1000 / 5
        reads = reader.stats.snapshot()["reads"]
        assert reads["short_circuit"] >= 190
        assert reads["timeout" if fault == "frozen" else "unavailable"] >= 1

        if fault == "stopped":
            private.start()
            _seed(private.url, settings)  # a restarted cache is empty: the worker writes again
        else:
            private.signal(signal.SIGCONT)
        # Reads resume by themselves: the breaker's probe finds Redis answering.
        assert _wait_until(lambda: reader.serve("productView", "p1", "s1", NATIVE).source == "cached")
        assert not reader.cache_open
        assert reader.stats.snapshot()["breaker_trips"]["cache"] >= 1


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
def test_async_reader_falls_back_within_its_bound_short_circuits_and_recovers(private, fault):
    settings = _settings(private.url)
    _seed(private.url, settings)

    async def main() -> None:
        reader = AsyncRankingReader(settings)
        try:
            assert (await reader.serve("productView", "p1", "s1", NATIVE)).source == "cached"
            private.stop() if fault == "stopped" else private.signal(signal.SIGSTOP)
            started = time.monotonic()
            # Concurrent reads at the moment it fails: each returns within the bound.
            first = await asyncio.gather(
                *(reader.serve("productView", "p1", "s1", NATIVE) for _ in range(20))
            )
            assert {s.source for s in first} == {"fallback"}
            assert time.monotonic() - started < BOUND_MS / 1000 + MARGIN
            assert reader.cache_open
            started = time.monotonic()
            for _ in range(200):
                assert (await reader.serve("productView", "p1", "s1", NATIVE)).source == "fallback"
            assert time.monotonic() - started < 200 * BOUND_MS / 1000 / 5
            if fault == "stopped":
                private.start()
                _seed(private.url, settings)
            else:
                private.signal(signal.SIGCONT)
            deadline = time.monotonic() + 10
            while (await reader.serve("productView", "p1", "s1", NATIVE)).source != "cached":
                assert time.monotonic() < deadline, "reads did not resume"
                await asyncio.sleep(0.02)
            assert not reader.cache_open
        finally:
            await reader.aclose()

    asyncio.run(main())


def test_publish_and_wait_does_not_wait_for_a_notice_while_the_cache_is_down(private):
    settings = _settings(private.url)
    with RankingServer(settings) as server:
        assert server.view(make_event("productView", "s1", "p1"), NATIVE, wait_ms=50).source == "native"
        private.signal(signal.SIGSTOP)
        started = time.monotonic()
        first = server.view(make_event("productView", "s1", "p1"), NATIVE, wait_ms=200)
        assert first.source == "fallback" and first.products == NATIVE
        assert time.monotonic() - started < 0.2 + 2 * BOUND_MS / 1000 + MARGIN
        server.view(make_event("productView", "s1", "p1"), NATIVE, wait_ms=200)  # opens the breaker
        assert server.reader.cache_open
        # Open: the event is still published, and the view answers at once, not at wait_ms.
        started = time.monotonic()
        for _ in range(5):
            served = server.view(make_event("productView", "s1", "p1"), NATIVE, wait_ms=1_000)
            assert served.source == "fallback" and served.message_id is not None
        assert time.monotonic() - started < 5 * 1.0 / 2
        private.signal(signal.SIGCONT)

"""Publish-and-wait with real processes: a worker, the sandbox, Redis and the broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest
import redis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.event import make_event
from fashionai_pipeline.producers.serving import AsyncRankingServer, RankingServer
from tests.conftest import BROKERS, make_settings, wait_until

pytestmark = pytest.mark.integration

CATALOG = [
    f"p{i:04d}" for i in range(10_000)
]  # every id the sandbox can rank (its demo catalog is p0001-p3000)


def _answered(sandbox, event) -> list[str]:
    """What the sandbox answered for this event's body (its request log)."""
    wanted = json.dumps(event.body(), sort_keys=True)
    matches = [r["products"] for r in sandbox.requests() if json.dumps(r["body"], sort_keys=True) == wanted]
    assert len(matches) == 1, f"expected one upstream call for {wanted}, saw {len(matches)}"
    return list(matches[0])


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_view_serves_the_ranking_of_that_event_when_a_worker_is_up(broker, sandbox, workers, request):
    settings = make_settings(BROKERS[broker], sandbox.url)
    workers(settings)
    server = RankingServer(settings)
    request.addfinalizer(server.close)
    for n in range(3):
        event = make_event(
            "productView", f"pw-{settings.tenant}-{n}", f"p{n + 1:04d}", "u1" if n == 1 else None
        )
        started = time.monotonic()
        served = server.view(event, CATALOG, wait_ms=5_000)
        elapsed = time.monotonic() - started
        ranked = _answered(sandbox, event)
        assert served.source == "fresh"
        assert served.products[: len(ranked)] == ranked  # the ranking the sandbox gave that request
        assert sorted(served.products) == CATALOG  # merged with the native list, nothing lost
        assert served.message_id and len(served.message_id) == 32
        assert served.age_ms is not None and served.age_ms >= 0
        # Woken by the worker's notice, not by the bound (5 s) running out.
        assert elapsed < 4.0, elapsed


def test_view_without_a_worker_returns_the_native_order_at_the_bound(sandbox, request):
    settings = make_settings(BROKERS["redis"], sandbox.url)
    server = RankingServer(settings)
    request.addfinalizer(server.close)
    native = ["a", "b", "c"]
    started = time.monotonic()
    served = server.view(make_event("productView", "nobody-home", "x1"), native, wait_ms=300)
    elapsed = time.monotonic() - started
    assert served.source == "native"
    assert served.products == native
    assert served.message_id is not None  # it was published, just not ranked in time
    assert 0.3 <= elapsed < 2.3, elapsed  # at the bound; the margin is for a loaded machine


def test_view_without_a_worker_serves_an_older_cached_ranking(sandbox, cache, request):
    settings = make_settings(BROKERS["redis"], sandbox.url)
    key = keys.ranking(settings.tenant, "categoryView", "c9", "sess-old", None)
    enqueued_ms = int(time.time() * 1000) - 60_000
    cache.set(key, json.dumps([enqueued_ms, "b", "zz", "c"]), px=60_000)
    request.addfinalizer(lambda: cache.delete(key))
    server = RankingServer(settings)
    request.addfinalizer(server.close)
    served = server.view(make_event("categoryView", "sess-old", "c9"), ["a", "b", "c"], wait_ms=200)
    assert served.source == "cached"
    assert served.products == ["b", "c", "a"]  # ranked ids the page lists, then the rest
    assert served.age_ms is not None and served.age_ms >= 60_000


def test_async_view_fresh_with_a_worker_and_native_without(sandbox, workers):
    settings = make_settings(BROKERS["redis"], sandbox.url)
    idle = make_settings(BROKERS["redis"], sandbox.url)  # a queue nobody consumes

    async def main() -> None:
        server = AsyncRankingServer(settings)
        try:
            # Many shoppers at once share one subscriber connection.
            events = [
                make_event("shopTheLook", f"as-{settings.tenant}-{n}", f"p{n + 101:04d}") for n in range(20)
            ]
            served = await asyncio.gather(*(server.view(e, CATALOG, wait_ms=5_000) for e in events))
            for event, one in zip(events, served, strict=True):
                assert one.source == "fresh"
                ranked = _answered(sandbox, event)
                assert one.products[: len(ranked)] == ranked
        finally:
            await server.aclose()
        lonely = AsyncRankingServer(idle)
        try:
            started = time.monotonic()
            one = await lonely.view(make_event("productView", "alone", "p1"), ["n1", "n2"], wait_ms=250)
            elapsed = time.monotonic() - started
            assert one.source == "native" and one.products == ["n1", "n2"]
            assert 0.25 <= elapsed < 2.25, elapsed
        finally:
            await lonely.aclose()

    workers(settings)
    asyncio.run(main())


def test_a_forked_child_waits_on_its_own_subscription(sandbox, workers, request):
    """gunicorn --preload: the server is built (and used) in the parent, then the process forks."""
    settings = make_settings(BROKERS["redis"], sandbox.url)
    workers(settings)
    server = RankingServer(settings)
    request.addfinalizer(server.close)
    assert server.view(make_event("productView", "parent", "p0200"), CATALOG, wait_ms=5_000).source == "fresh"
    children = []
    for n in range(2):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what it was served, then leave without pytest's teardown
            code = 1
            try:
                os.close(read_end)
                event = make_event("productView", f"child-{settings.tenant}-{n}", f"p{n + 301:04d}")
                served = server.view(event, CATALOG, wait_ms=5_000)
                os.write(write_end, json.dumps([served.source, served.products[:20]]).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        children.append((pid, read_end, n))
    for pid, read_end, n in children:
        with os.fdopen(read_end, "rb") as pipe:
            source, head = json.loads(pipe.read() or b'["died", []]')
        _, status = os.waitpid(pid, 0)
        assert status == 0
        assert source == "fresh"
        ranked = _answered(
            sandbox, make_event("productView", f"child-{settings.tenant}-{n}", f"p{n + 301:04d}")
        )
        assert head[: len(ranked)] == ranked[:20]


def _redis_on(port: int, log_dir: str):
    """A private redis-server on `port` (restartable on the same port)."""
    import shutil
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with open(os.path.join(log_dir, f"redis-{port}-{time.monotonic_ns()}.log"), "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


def test_waiters_survive_a_cache_restart(sandbox, workers, tmp_path):
    """The cache Redis goes away: views fall back at their bound; back, they are fresh again."""
    from fashionai_pipeline.worker.local import free_port

    port = free_port()
    cache = _redis_on(port, str(tmp_path))
    settings = make_settings(BROKERS["redis"], sandbox.url, redis_url=f"redis://127.0.0.1:{port}/0")
    workers(settings)
    server = RankingServer(settings)
    lonely = AsyncRankingServer(settings)
    try:
        assert (
            server.view(make_event("productView", "r-before", "p0401"), CATALOG, wait_ms=5_000).source
            == "fresh"
        )
        cache.terminate()
        cache.wait(10)
        started = time.monotonic()
        down = server.view(make_event("productView", "r-down", "x"), ["n1"], wait_ms=300)
        assert down.source == "fallback" and down.products == ["n1"]
        assert time.monotonic() - started < 3.0
        cache = _redis_on(port, str(tmp_path))

        def fresh_again() -> bool:
            n = time.monotonic_ns()
            return (
                server.view(make_event("productView", f"r-after-{n}", "p0402"), CATALOG, wait_ms=3_000).source
                == "fresh"
            )

        wait_until(fresh_again, 60, "a fresh view after the restart")

        async def async_side() -> str:
            try:
                one = await lonely.view(make_event("productView", "r-async", "p0403"), CATALOG, wait_ms=5_000)
                return one.source
            finally:
                await lonely.aclose()

        assert asyncio.run(async_side()) == "fresh"
    finally:
        server.close()
        cache.terminate()
        cache.wait(10)


def _timed_async_view(server: AsyncRankingServer, session: str, item: str, wait_ms: int) -> tuple[str, float]:
    """One AsyncRankingServer.view, the first call of a new event loop: (source, seconds). The
    server is closed before its loop ends (as an app's shutdown does) and used again in the next."""

    async def one() -> tuple[str, float]:
        try:
            started = time.monotonic()
            served = await server.view(make_event("productView", session, item), CATALOG, wait_ms=wait_ms)
            return served.source, time.monotonic() - started
        finally:
            await server.aclose()

    return asyncio.run(one())


def test_async_first_view_in_each_new_event_loop_is_woken_by_its_notice(sandbox, workers):
    """The hub starts afresh (new token) on its first use in a loop: the event must carry *that*
    token, or its notice goes to a channel nobody listens on and the view waits out its bound
    (and, reading the cache then, still says "fresh": hence the timing check)."""
    settings = make_settings(BROKERS["redis"], sandbox.url)
    workers(settings)
    with RankingServer(settings) as warm:  # the worker is up and consuming before anything is timed
        assert warm.view(make_event("productView", "warm", "p0500"), CATALOG, wait_ms=5_000).source == "fresh"
    server = AsyncRankingServer(settings)
    bound_ms = 2_000
    for n in range(3):  # each asyncio.run is a new event loop: the first call there, every time
        session, item = f"loop-{settings.tenant}-{n}", f"p{n + 501:04d}"
        source, elapsed = _timed_async_view(server, session, item, bound_ms)
        assert source == "fresh", (n, source)
        assert elapsed < bound_ms / 1000 / 2, (n, elapsed)  # woken by the notice, not the bound

    async def twice_in_one_loop() -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        try:
            for n in range(2):
                started = time.monotonic()
                event = make_event("productView", f"same-loop-{settings.tenant}-{n}", f"p{n + 601:04d}")
                served = await server.view(event, CATALOG, wait_ms=bound_ms)
                out.append((served.source, time.monotonic() - started))
        finally:
            await server.aclose()
        return out

    for source, elapsed in asyncio.run(twice_in_one_loop()):
        assert source == "fresh" and elapsed < bound_ms / 1000 / 2, (source, elapsed)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_forked_childs_first_view_is_woken_by_its_notice(kind, sandbox, workers, request):
    """gunicorn --preload with either server: used in the parent, then forked; the child's hub
    takes a new token, and its first view must ask for its notice with that one."""
    settings = make_settings(BROKERS["redis"], sandbox.url)
    workers(settings)
    bound_ms = 2_000
    sync_server = RankingServer(settings)
    request.addfinalizer(sync_server.close)
    warm = sync_server.view(make_event("productView", "f-warm", "p0700"), CATALOG, wait_ms=5_000)
    assert warm.source == "fresh"
    async_server = AsyncRankingServer(settings) if kind == "async" else None
    if async_server is not None:  # the parent's hub was bound (to a loop now closed) before the fork
        source, _ = _timed_async_view(async_server, f"f-parent-{settings.tenant}", "p0701", 5_000)
        assert source == "fresh"

    def view_in_child(n: int) -> tuple[str, float]:
        session, item = f"f-child-{settings.tenant}-{n}", f"p{n + 702:04d}"
        if async_server is not None:
            return _timed_async_view(async_server, session, item, bound_ms)
        started = time.monotonic()
        served = sync_server.view(make_event("productView", session, item), CATALOG, wait_ms=bound_ms)
        return served.source, time.monotonic() - started

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without pytest's teardown
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, json.dumps([view_in_child(0), view_in_child(1)]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        reported = json.loads(pipe.read() or b"[]")
    _, status = os.waitpid(pid, 0)
    assert status == 0 and len(reported) == 2
    for source, elapsed in reported:
        assert source == "fresh", reported
        assert elapsed < bound_ms / 1000 / 2, reported  # woken by the notice, not the bound


def test_async_views_are_woken_by_their_notices_again_after_the_hub_reconnects(sandbox, workers, tmp_path):
    """The cache Redis restarts under a running loop: the hub's reader task reconnects and
    subscribes again, on the channel of the token the views keep asking with."""
    from fashionai_pipeline.worker.local import free_port

    port = free_port()
    cache = _redis_on(port, str(tmp_path))
    settings = make_settings(BROKERS["redis"], sandbox.url, redis_url=f"redis://127.0.0.1:{port}/0")
    workers(settings)
    bound_ms = 2_000

    async def timed(server: AsyncRankingServer, session: str, item: str) -> tuple[str, float]:
        started = time.monotonic()
        served = await server.view(make_event("productView", session, item), CATALOG, wait_ms=bound_ms)
        return served.source, time.monotonic() - started

    async def main() -> None:
        nonlocal cache
        server = AsyncRankingServer(settings)
        try:
            with RankingServer(settings) as warm:  # the worker is up and consuming
                event = make_event("productView", "rc-warm", "p0800")
                assert warm.view(event, CATALOG, wait_ms=5_000).source == "fresh"
            source, elapsed = await timed(server, "rc-before", "p0801")
            assert source == "fresh" and elapsed < bound_ms / 1000 / 2, (source, elapsed)
            token = server.hub.token
            cache.terminate()
            cache.wait(10)
            await asyncio.sleep(0.3)  # the reader task notices and starts reconnecting
            cache = _redis_on(port, str(tmp_path))
            deadline = time.monotonic() + 60
            while True:  # until the worker and the hub are both back
                n = time.monotonic_ns()
                source, elapsed = await timed(server, f"rc-after-{n}", "p0802")
                if source == "fresh":
                    break
                assert time.monotonic() < deadline, "no fresh view after the restart"
            assert server.hub.token == token  # the same loop and process: the same channel
            for n in range(3):  # reconnected: woken by the notice again, not by the bound
                source, elapsed = await timed(server, f"rc-woken-{n}", f"p{n + 803:04d}")
                assert source == "fresh" and elapsed < bound_ms / 1000 / 2, (n, source, elapsed)
        finally:
            await server.aclose()

    try:
        asyncio.run(main())
    finally:
        cache.terminate()
        cache.wait(10)


class _Views:
    """One server of either kind, its views awaited alike: (source, seconds). A sync view
    blocks the loop while it runs, which is what a sync page does to its thread."""

    def __init__(self, kind: str, settings) -> None:
        self.kind = kind
        self.server: RankingServer | AsyncRankingServer = (
            RankingServer(settings) if kind == "sync" else AsyncRankingServer(settings)
        )

    async def view(self, session: str, item: str, native: list[str], wait_ms: int) -> tuple[str, float]:
        event = make_event("productView", session, item)
        started = time.monotonic()
        if isinstance(self.server, RankingServer):
            served = self.server.view(event, native, wait_ms=wait_ms)
        else:
            served = await self.server.view(event, native, wait_ms=wait_ms)
        return served.source, time.monotonic() - started

    async def close(self) -> None:
        if isinstance(self.server, RankingServer):
            self.server.close()
        else:
            await self.server.aclose()


async def _while_waiting(
    views: _Views, outage: Callable[[], object], session: str, wait_ms: int
) -> tuple[str, float]:
    """One view of `views` (a sync one in a thread of its own), `outage()` done 0.3 s into its wait."""
    if views.kind == "sync":
        result: list[tuple[str, float]] = []
        thread = threading.Thread(
            target=lambda: result.append(asyncio.run(views.view(session, "p0902", ["n1"], wait_ms)))
        )
        thread.start()
        await asyncio.sleep(0.3)
        outage()
        thread.join(10)
        return result[0]
    pending = asyncio.ensure_future(views.view(session, "p0902", ["n1"], wait_ms))
    await asyncio.sleep(0.3)
    outage()
    return await pending


@pytest.mark.parametrize("outage", ["refused", "frozen"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_views_do_not_wait_for_a_notice_a_down_cache_cannot_carry(kind, outage, sandbox, workers, tmp_path):
    """The cache Redis refuses (stopped: its port closed) or is frozen (SIGSTOP: it accepts and
    never answers). A notice cannot come through it, so a view does not wait for one: the
    first views of a server whose hub was never subscribed, with wait_ms=2000, answer
    "fallback" after about one read bound, not at 2 s; a view already waiting when its hub
    loses the connection is released. The reads are counted as the reader counts them.
    Back, the views are fresh again."""
    from fashionai_pipeline.worker.local import free_port

    port = free_port()
    cache = _redis_on(port, str(tmp_path))
    url = f"redis://127.0.0.1:{port}/0"
    settings = make_settings(BROKERS["redis"], sandbox.url, redis_url=url)
    idle = make_settings(BROKERS["redis"], sandbox.url, redis_url=url)  # a queue nobody consumes
    workers(settings)
    bound_ms = 2_000
    frozen = False

    async def main() -> None:
        nonlocal cache, frozen
        with RankingServer(settings) as warm:  # the worker is up and consuming
            assert (
                warm.view(make_event("productView", "d-warm", "p0900"), CATALOG, wait_ms=5_000).source
                == "fresh"
            )
        cold = _Views(kind, settings)  # not used before the outage: its hub has never subscribed
        waiting = _Views(kind, idle)
        try:
            # Subscribed (its view waits out its short bound: nobody consumes its queue).
            assert (await waiting.view("d-idle", "p0901", ["n1"], 200))[0] == "native"
            if outage == "refused":
                # A view waiting when the connection goes is released, not left to its bound.
                source, elapsed = await _while_waiting(
                    waiting, lambda: (cache.terminate(), cache.wait(10)), "d-mid", bound_ms
                )
                assert source == "fallback" and elapsed < 1.0, (source, elapsed)
            else:
                os.kill(cache.pid, signal.SIGSTOP)
                frozen = True
            failed = "unavailable" if outage == "refused" else "timeout"
            for n in range(4):
                source, elapsed = await cold.view(f"d-down-{n}", "p0903", ["n1", "n2"], bound_ms)
                assert source == "fallback", (n, source)
                assert elapsed < 1.0, (n, elapsed)  # about one read bound (25 ms), far from 2 s
            reads = cold.server.reader.stats.reads
            assert cold.server.reader.stats.served["fallback"] == 4
            assert reads[failed] >= 1 and reads[failed] + reads["short_circuit"] == 4, reads
            if outage == "refused":
                cache = _redis_on(port, str(tmp_path))
            else:
                os.kill(cache.pid, signal.SIGCONT)
                frozen = False
            deadline = time.monotonic() + 60
            while True:  # until the worker and the hub are both back
                n = time.monotonic_ns()
                source, elapsed = await cold.view(f"d-after-{n}", "p0904", CATALOG, bound_ms)
                if source == "fresh":
                    break
                assert time.monotonic() < deadline, "no fresh view after the cache came back"
                await asyncio.sleep(0.05)  # a view while the hub reconnects answers at once
            for n in range(2):  # subscribed again: woken by the notice, not by the bound
                source, elapsed = await cold.view(f"d-woken-{n}", f"p{n + 905:04d}", CATALOG, bound_ms)
                assert source == "fresh" and elapsed < bound_ms / 1000 / 2, (n, source, elapsed)
        finally:
            await cold.close()
            await waiting.close()

    try:
        asyncio.run(main())
    finally:
        if frozen:
            os.kill(cache.pid, signal.SIGCONT)
        cache.terminate()
        cache.wait(10)

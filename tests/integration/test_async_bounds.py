"""AsyncDirectRedis's bound on the real Redis: it counts Redis's silence, not the loop's lag.

A reply that arrived while the event loop was blocked past the deadline is taken, not called
lost; a cancellation from elsewhere stays a cancellation; a command whose reply never comes
ends at its bound as NoReply.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop

from fashionai_pipeline.producers.direct import AsyncDirectRedis, NoReply
from tests.conftest import BROKERS

pytestmark = pytest.mark.integration

BUDGET = 0.05
LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=sorted(LOOPS))
def run(request):
    return LOOPS[request.param]


def _redis() -> AsyncDirectRedis:
    return AsyncDirectRedis(BROKERS["redis"], timeout=BUDGET, name="fashionai-bounds-test", budget=BUDGET)


async def _with_blocked_loop(conn: AsyncDirectRedis, *command: str) -> object:
    await conn.execute("PING")  # connected: the command below is sent at once

    async def hog() -> None:
        # Scheduled before the command, so it runs as soon as the command has gone out and
        # awaits its reply, before the loop polls: the loop is blocked past the deadline
        # while the reply arrives.
        time.sleep(4 * BUDGET)

    blocker = asyncio.ensure_future(hog())
    try:
        return await conn.execute(*command)
    finally:
        await blocker
        await conn.aclose()


def test_a_reply_that_arrived_while_the_loop_was_blocked_is_taken(run):
    # Whether the deadline's timer or the reply's read runs first after the block depends on
    # the loop; either way the reply is taken (the last looks themselves:
    # tests/unit/test_async_due.py).
    assert run(_with_blocked_loop(_redis(), "ECHO", "here")) == b"here"


def test_a_reply_that_never_comes_ends_at_the_bound(run):
    async def main() -> float:
        conn = _redis()
        start = time.monotonic()
        try:
            with pytest.raises(NoReply):
                await conn.execute("BLPOP", "fashionai-bounds-test:never", "5")
            return time.monotonic() - start
        finally:
            await conn.aclose()

    assert run(main()) < BUDGET + 1.0  # the bound, with a generous margin: not BLPOP's 5 s


def test_a_cancellation_from_elsewhere_stays_a_cancellation(run):
    async def main() -> None:
        conn = AsyncDirectRedis(BROKERS["redis"], timeout=5.0, name="fashionai-bounds-test", budget=5.0)
        try:
            call = asyncio.ensure_future(conn.execute("BLPOP", "fashionai-bounds-test:never", "5"))
            await asyncio.sleep(0.1)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await conn.execute("ECHO", "after") == b"after"  # the pool is still usable
        finally:
            await conn.aclose()

    run(main())

"""Publish-and-wait does not wait for a notice that cannot come: the plan's decisions on the
hub's verdict, and the hubs' verdicts on a Redis that refuses (a closed loopback port)."""

from __future__ import annotations

import asyncio
import time

from fashionai_pipeline.producers.attribution import Served
from fashionai_pipeline.producers.event import make_event
from fashionai_pipeline.producers.publishing import Receipt
from fashionai_pipeline.producers.servercore import Checks, Expect, Publish, Serve, ServerCore, Wait
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.producers.waiters import AsyncReplyHub, ReplyHub
from fashionai_pipeline.worker.local import free_port

BODY = make_event("productView", "s1", "p1").body()


class _Gate:
    cache_open = False

    def in_holdout(self, session_id):
        return False


def _view(hub_states, probe_source="native", wait_ms=2_000):
    """The requests of a view whose hub answers `hub_states` in turn, and what it returns."""
    core = ServerCore(Settings(), _Gate())
    plan = core.view_plan(BODY, ["a", "b"], wait_ms, None, Checks(), "tok123")
    states = iter(hub_states)
    made = []
    try:
        request = next(plan)
        while True:
            made.append(request)
            answer: object = None
            if isinstance(request, Publish):
                answer = Receipt(request.message_id or "p" * 32, "published")
            elif isinstance(request, Wait):
                answer = next(states) if request.until == "ready" else None
            elif isinstance(request, Serve):
                answer = Served(["a", "b"], probe_source, None, request.query.message_id)
            request = plan.send(answer)
    except StopIteration as stop:
        return made, stop.value


def test_a_hub_that_is_down_is_not_waited_on_the_event_is_published_and_read_once():
    made, served = _view(["down"])
    assert [type(r) for r in made] == [Expect, Wait, Publish, Serve]
    assert made[1].timeout <= Settings().read_timeout_ms / 1000  # the verdict is asked for, briefly
    assert made[2].notify is None and made[2].message_id is None  # no notice asked for
    assert served.message_id == "p" * 32


def test_a_hub_not_subscribed_within_a_read_bound_reads_the_cache_once_and_stops_at_its_failure():
    made, served = _view(["connecting"], probe_source="fallback")
    assert [type(r) for r in made] == [Expect, Wait, Serve, Publish]
    assert made[3].notify is None
    assert (served.source, served.message_id) == ("fallback", "p" * 32)


def test_a_hub_slow_to_subscribe_to_a_cache_that_answers_still_waits_for_the_notice():
    made, _ = _view(["connecting", "listening"])
    assert [type(r) for r in made] == [Expect, Wait, Serve, Wait, Publish, Wait, Serve]
    assert made[4].notify == "tok123" and made[5].until == "notice"
    made, _ = _view(["listening"])  # the usual case, unchanged
    assert [type(r) for r in made] == [Expect, Wait, Publish, Wait, Serve]


def test_the_sync_hub_says_down_at_once_for_a_refused_redis_and_releases_its_waiters():
    hub = ReplyHub(f"redis://127.0.0.1:{free_port()}/0")
    try:
        slot = hub.expect("m1")
        started = time.monotonic()
        assert hub.wait_ready(2.0) == "down"
        assert time.monotonic() - started < 1.0
        assert slot.event.wait(1.0) and slot.value is None  # released, no value: read the cache
        later = hub.expect("m2")
        assert hub.wait_ready(2.0) == "down"  # still down while it reconnects: at once
        hub.close()
        assert later.event.is_set() and later.value is None
    finally:
        hub.close()


def test_the_async_hub_says_down_at_once_for_a_refused_redis_and_releases_its_waiters():
    async def main() -> None:
        hub = AsyncReplyHub(f"redis://127.0.0.1:{free_port()}/0")
        try:
            future = hub.expect("m1")
            started = time.monotonic()
            assert await hub.wait_ready(2.0) == "down"
            assert time.monotonic() - started < 1.0
            assert await asyncio.wait_for(future, 1.0) is None
            assert await hub.watch("fashionai:t:rank:productView:p1:s:s1", 2.0) is None  # at once
            assert time.monotonic() - started < 1.0
        finally:
            await hub.aclose()

    asyncio.run(main())

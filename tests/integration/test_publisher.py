"""The storefront publisher against real brokers: bounds, drops, fork, asyncio."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from fashionai_pipeline.producers.errors import BrokerUnavailable, InvalidEvent
from fashionai_pipeline.producers.message import decode
from fashionai_pipeline.producers.publisher import AsyncPublisher, Publisher
from tests.conftest import BROKERS, make_settings
from tests.integration.own_clients import own_clients

pytestmark = pytest.mark.integration

DEAD_BROKERS = {"redis": "redis://127.0.0.1:1/0", "amqp": "amqp://guest:guest@127.0.0.1:1//"}


def _queued(settings) -> list[bytes]:
    """Message bodies waiting on the queue, consumed with kombu (works on both brokers)."""
    from kombu import Consumer

    from fashionai_pipeline.producers.broker import connect, event_queue

    bodies: list[bytes] = []

    def take(message: Any) -> None:
        bodies.append(message.body)
        message.ack()

    with connect(settings, timeout=5) as conn:
        channel = conn.channel()
        consumer = Consumer(channel, [event_queue(settings)], on_message=take)
        with consumer:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.3)
                except (TimeoutError, OSError):
                    if bodies:
                        break
        channel.queue_delete(settings.queue)
    return bodies


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_typed_helpers_publish_valid_envelopes(broker):
    settings = make_settings(BROKERS[broker], "http://127.0.0.1:9/unused")
    with Publisher(settings) as pub:
        pub.product_view("s", "p1")
        pub.category_view("s", "c1", user_id="u")
        pub.shop_the_look("s", "p2")
        pub.custom_shelf("s")
        with pytest.raises(InvalidEvent, match="sessionId"):
            pub.product_view("", "p1")
        assert pub.stats.published == 4
    envelopes = sorted((decode(b) for b in _queued(settings)), key=lambda e: e.ts)
    assert [e.event.eventType for e in envelopes] == [
        "productView",
        "categoryView",
        "shopTheLook",
        "customShelf",
    ]
    assert envelopes[1].event.body() == {
        "userId": "u",
        "sessionId": "s",
        "eventType": "categoryView",
        "data": {"id": "c1"},
    }
    assert all(e.tenant == settings.tenant and e.attempt == 0 for e in envelopes)
    assert len({e.id for e in envelopes}) == 4


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_broker_down_raises_typed_error_within_the_bound(broker):
    settings = make_settings(DEAD_BROKERS[broker], "http://127.0.0.1:9/unused", publish_timeout=0.3)
    with Publisher(settings) as pub:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as info:
            pub.product_view("s", "p")
        elapsed = time.monotonic() - started
    assert elapsed < 2 * 0.3 + 0.5  # documented: about two attempts of publish_timeout, never a hang
    assert "unavailable" in str(info.value)


def test_broker_down_with_drop_policy_counts_the_drop(caplog):
    settings = make_settings(
        DEAD_BROKERS["redis"], "http://127.0.0.1:9/unused", on_broker_down="drop", publish_timeout=0.2
    )
    with Publisher(settings) as pub:
        first, second = pub.product_view("s", "p"), pub.product_view("s", "q")
        assert (first.outcome, second.outcome) == ("dropped", "dropped")
        assert not first and len({first.id, second.id}) == 2
        assert pub.stats.dropped == 2 and pub.stats.published == 0
    assert "event dropped" in caplog.text
    assert caplog.text.count("event dropped") == 1  # once per change of the broker's state


def test_publisher_keeps_working_after_the_broker_restarts_its_connection():
    settings = make_settings(BROKERS["redis"], "http://127.0.0.1:9/unused")
    with Publisher(settings) as pub:
        pub.product_view("s", "before")
        client = redis.Redis.from_url(settings.broker_url)
        addrs = own_clients(client, "fashionai-publisher")
        assert addrs
        for addr in addrs:  # the server drops the publisher's connections
            client.client_kill_filter(addr=addr)
        pub.product_view("s", "after")
        assert client.llen(settings.queue) == 2
        client.delete(settings.queue)


def test_publisher_is_safe_after_fork():
    settings = make_settings(BROKERS["redis"], "http://127.0.0.1:9/unused")
    pub = Publisher(settings)
    pub.product_view("parent", "p0")  # the parent holds an open connection before forking
    pids = []
    for n in range(3):
        pid = os.fork()
        if pid == 0:  # child: publish on the inherited publisher, then leave at once
            code = 0
            try:
                pub.product_view(f"child{n}", "p1")
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    codes = [os.waitpid(pid, 0)[1] for pid in pids]
    pub.product_view("parent", "p2")  # the parent's connection was not disturbed
    pub.close()
    assert codes == [0, 0, 0]
    sessions = sorted(decode(b).event.sessionId for b in _queued(settings))
    assert sessions == ["child0", "child1", "child2", "parent", "parent"]


@pytest.mark.parametrize("broker", ["redis", "amqp"])  # from the loop itself / from its thread
def test_async_publisher_does_not_block_the_loop(broker):
    # What is judged is the loop, not the bound: a loaded CI machine may take longer than the
    # default 0.5 s to open the first AMQP connection and confirm (that is PublishUnknown).
    settings = make_settings(BROKERS[broker], "http://127.0.0.1:9/unused", publish_timeout=5.0)

    async def main() -> int:
        pub = AsyncPublisher(settings)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.gather(*(pub.product_view(f"s{i}", "p") for i in range(50)))
        await pub.custom_shelf("s", user_id="u")
        with pytest.raises(InvalidEvent, match=r"data\.id"):
            await pub.product_view("s", "")
        task.cancel()
        await pub.aclose()
        return ticks

    ticks = asyncio.run(main())
    assert ticks > 0
    assert len(_queued(settings)) == 51


def test_async_publisher_broker_down():
    settings = make_settings(DEAD_BROKERS["amqp"], "http://127.0.0.1:9/unused", publish_timeout=0.3)

    async def main() -> None:
        pub = AsyncPublisher(settings)
        try:
            with pytest.raises(BrokerUnavailable):
                await pub.product_view("s", "p")
        finally:
            await pub.aclose()

    asyncio.run(main())


@pytest.fixture
def private_redis_url(tmp_path) -> Iterator[str]:
    """A redis-server of this test's own: its command counters count this test's calls only."""
    from fashionai_pipeline.worker.local import start_redis

    proc, url = start_redis(log_dir=str(tmp_path))
    try:
        yield url
    finally:
        proc.stop(timeout=10)


def _lpush_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_lpush", {}).get("calls", 0))


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_publish_many_validates_everything_first_then_publishes_in_order(broker, private_redis_url):
    url = private_redis_url if broker == "redis" else BROKERS[broker]
    settings = make_settings(url, "http://127.0.0.1:9/unused")
    events = [{"sessionId": f"s{i}", "eventType": "productView", "data": {"id": f"p{i}"}} for i in range(20)]
    with Publisher(settings) as pub:
        bad = [*events[:3], {"sessionId": "s", "eventType": "customShelf", "data": {"id": "x"}}]
        with pytest.raises(InvalidEvent, match=r'events\[3\]\.data\.id: must be ""') as info:
            pub.publish_many(bad)
        assert info.value.field == "events[3].data.id"
        assert pub.stats.published == 0  # nothing of a refused list reaches the broker
        if broker == "redis":
            client = redis.Redis.from_url(settings.broker_url)
            before = _lpush_calls(client)
        receipts = pub.publish_many(events)
        assert [r.outcome for r in receipts] == ["published"] * 20
        assert pub.publish_many([]) == []
        if broker == "redis":
            assert _lpush_calls(client) - before == 1  # one round trip for the list
    consumed = [decode(b).event.sessionId for b in _queued(settings)]
    assert consumed == [f"s{i}" for i in range(20)]  # consumers see publish order


def test_async_publishes_made_together_share_round_trips_and_keep_their_tenants(private_redis_url):
    run = os.urandom(3).hex()
    a, b = f"a{run}", f"b{run}"
    settings = make_settings(
        private_redis_url,
        "http://127.0.0.1:9/unused",
        tenants={a: {"app_token": "ta"}, b: {"app_token": "tb"}},
    )
    client = redis.Redis.from_url(settings.broker_url)

    async def main() -> list[str]:
        pub = AsyncPublisher(settings)
        try:
            warm = {"sessionId": "s-1", "eventType": "productView", "data": {"id": "p"}}
            await pub.publish(warm, tenant=a)  # the thread and connection exist
            before = _lpush_calls(client)
            results = await asyncio.gather(
                *(
                    pub.publish(
                        {"sessionId": f"s{i}", "eventType": "productView", "data": {"id": f"p{i}"}},
                        tenant=a if i % 2 else b,
                    )
                    for i in range(400)
                )
            )
            calls = _lpush_calls(client) - before
            assert calls < 100, f"{calls} LPUSH calls for 400 concurrent publishes"
            with pytest.raises(InvalidEvent, match="tenant: unknown tenant"):
                await pub.publish(
                    {"sessionId": "x", "eventType": "customShelf", "data": {"id": ""}}, tenant="c"
                )
            return [r.outcome for r in results]
        finally:
            await pub.aclose()

    assert asyncio.run(main()) == ["published"] * 400
    for tenant, parity in ((a, 1), (b, 0)):
        queued = _queued(settings.model_copy(update={"queue": settings.queue_for(tenant)}))
        sessions = sorted(int(decode(m).event.sessionId[1:]) for m in queued)
        expected = [i for i in range(400) if i % 2 == parity]
        assert sessions == ([-1] if tenant == a else []) + expected
        assert {decode(m).tenant for m in queued} == {tenant}


def test_async_publishes_in_flight_together_each_get_the_broker_error():
    settings = make_settings(DEAD_BROKERS["redis"], "http://127.0.0.1:9/unused", publish_timeout=0.3)

    async def main() -> list[object]:
        pub = AsyncPublisher(settings)
        try:
            return list(
                await asyncio.gather(
                    *(pub.product_view(f"s{i}", "p") for i in range(20)), return_exceptions=True
                )
            )
        finally:
            await pub.aclose()

    results = asyncio.run(main())
    assert all(isinstance(r, BrokerUnavailable) for r in results), results
    assert len({id(r) for r in results}) == 20  # each caller raises its own exception object


def test_async_publisher_reconnects_within_the_call_and_follows_a_new_loop():
    settings = make_settings(BROKERS["redis"], "http://127.0.0.1:9/unused")
    client = redis.Redis.from_url(settings.broker_url)
    pub = AsyncPublisher(settings)

    async def first() -> None:
        assert await pub.product_view("s", "before")
        addrs = own_clients(client, "fashionai-publisher")
        assert addrs
        for addr in addrs:  # the server drops the publisher's connection
            client.client_kill_filter(addr=addr)
        assert await pub.product_view("s", "after-kill")  # a fresh connection, same call
        await pub.aclose()  # as an app does when its loop ends

    async def second() -> None:  # another loop (a second asyncio.run): the publisher reopens
        try:
            assert await pub.product_view("s", "new-loop")
        finally:
            await pub.aclose()

    asyncio.run(first())
    asyncio.run(second())
    items = sorted(decode(b).event.data.id for b in _queued(settings))
    assert items == ["after-kill", "before", "new-loop"]
    assert pub.stats.published == 3


def test_an_async_publish_cancelled_in_flight_leaves_the_publisher_usable(private_redis_url):
    # A publish made while none is in flight is sent from the caller's own task; cancelling
    # that task mid-send must not hold back the publishes that queued behind it, nor aclose().
    settings = make_settings(private_redis_url, "http://127.0.0.1:9/unused")
    body = {"sessionId": "s1", "eventType": "productView", "data": {"id": "p1"}}

    async def main() -> list[str]:
        pub = AsyncPublisher(settings)
        try:
            await pub.publish(body)  # connected
            first = asyncio.ensure_future(pub.publish(body))
            await asyncio.sleep(0)  # first is sending, from its own task
            behind = [asyncio.ensure_future(pub.publish(body)) for _ in range(5)]
            await asyncio.sleep(0)  # they wait for it
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            receipts = await asyncio.wait_for(asyncio.gather(*behind), 10)
            last = await pub.publish(body)
            return [r.outcome for r in (*receipts, last)]
        finally:
            await asyncio.wait_for(pub.aclose(), 10)

    assert asyncio.run(main()) == ["published"] * 6


def test_threads_publishing_at_once_on_redis_do_not_queue_behind_one_connection():
    """Publisher on a Redis broker sends without a lock: threads publishing at once each take
    a connection of their own, instead of one thread holding the only one across its round
    trip (and its wait for the GIL) while the others queue. A proxy holds each new
    connection's replies for 0.3 s, so eight publishes started together overlap."""
    from tests.integration.proxy import SlowStart

    settings = make_settings("redis://127.0.0.1:6379/15", "http://127.0.0.1:9/unused")
    proxy = SlowStart(settings.broker_url, hold=0.3)
    slow = settings.model_copy(update={"broker_url": proxy.url})
    start = threading.Barrier(8)
    try:
        with Publisher(slow) as pub:
            pub.product_view("s0", "p0")  # the sink exists: the next publishes take no lock

            def publish(n: int) -> str:
                start.wait()
                return pub.product_view(f"s{n}", "p1").outcome

            with ThreadPoolExecutor(8) as pool:
                outcomes = list(pool.map(publish, range(8)))
        assert outcomes == ["published"] * 8
        assert proxy.accepted >= 5  # one connection would mean every publish waited its turn
        assert len(_queued(settings)) == 9
    finally:
        proxy.close()


def test_the_typed_helpers_refuse_what_no_event_can_carry_before_the_broker():
    """A lone surrogate (no JSON encoder can send it: the worker would dead-letter it), an
    unknown keyword (a typo of `message_id` would publish under a new id), a list that is
    not one: each refused with its name, nothing published."""
    settings = make_settings(BROKERS["redis"], "http://127.0.0.1:9/unused")

    async def on_asyncio() -> None:
        pub = AsyncPublisher(settings)
        try:
            with pytest.raises(InvalidEvent) as info:
                await pub.product_view("s\udc00", "p1")
            assert info.value.field == "sessionId"
            with pytest.raises(TypeError, match="'messageid'"):
                await pub.category_view("s", "c1", messageid="x")  # type: ignore[call-arg]
            assert pub.stats.published == 0
        finally:
            await pub.aclose()

    with Publisher(settings) as pub:
        for call, field in (
            (lambda: pub.product_view("sur\ud800x", "p1"), "sessionId"),
            (lambda: pub.shop_the_look("s", "p\udfff"), "data.id"),
            (lambda: pub.category_view("s", "c1", user_id="u\ud800"), "userId"),
            (lambda: pub.publish_many(None), "events"),  # type: ignore[arg-type]
            (lambda: pub.publish_many({"sessionId": "s"}), "events"),  # type: ignore[dict-item]  # not a list
        ):
            with pytest.raises(InvalidEvent) as info:
                call()
            assert info.value.field == field
        with pytest.raises(TypeError, match="'messageid'"):
            pub.product_view("s", "p1", messageid="m")  # type: ignore[call-arg]
        assert pub.product_view("sé", "p1").outcome == "published"  # text beyond ASCII is fine
        assert pub.stats.published == 1
    asyncio.run(on_asyncio())
    _queued(settings)  # the one published event, taken off the queue

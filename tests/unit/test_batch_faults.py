"""BatchProcessor under store outages and foreign input, on its seams (no Redis, no sleeping)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from fashionai_pipeline.producers import keys
from fashionai_pipeline.worker.delivery import Delivered
from fashionai_pipeline.worker.health import StoreHealth
from tests.unit.fakes import envelope, failed
from tests.unit.test_batch import TOKEN, Rig

OTHER_TOKEN = "tok-other-tenant-0a1b2c3d"


def test_outcomes_are_held_through_a_cache_outage_and_never_sent_twice():
    rig = Rig()
    rig.store.cache_failures = 6
    result = asyncio.run(rig.processor.process([envelope("a", "s1"), envelope("b", "s2")]))
    assert len(rig.sender.sent) == 2  # one call per event, whatever the outage
    assert result["cached"] == 2 and len(rig.store.commits) == 1
    assert rig.store.calls.count("write_rankings") == 7
    # Capped, jittered backoff: each wait within [c/2, c], c = min(cap, base * 2**n).
    health = rig.health
    for n, slept in enumerate(rig.clock.sleeps, 1):
        ceiling = min(health.cap, health.base * 2 ** (n - 1))
        assert ceiling / 2 <= slept <= ceiling
    assert health.healthy and health.outages == 1


def test_a_state_store_outage_after_the_cache_write_retries_only_the_commit():
    rig = Rig()
    rig.store.state_failures = 2
    asyncio.run(rig.processor.process([envelope("a", "s1")]))
    assert rig.store.calls == ["recorded", "recorded", "recorded", "write_rankings", "commit"]


def test_no_lane_sends_while_the_store_is_unhealthy():
    rig = Rig()
    health = rig.health

    async def run() -> list[str]:
        order: list[str] = []
        gate = asyncio.Event()

        async def down() -> None:
            order.append("probe")
            if not gate.is_set():
                raise OSError("store down (injected)")

        prober = asyncio.create_task(health.call("probe", down))
        await asyncio.sleep(0)
        assert not health.healthy
        sending = asyncio.create_task(rig.processor.process([envelope("a", "s1")]))
        for _ in range(20):
            await asyncio.sleep(0)
        order.append(f"sent while down: {len(rig.sender.sent)}")
        gate.set()
        await prober
        await sending
        order.append(f"sent after: {len(rig.sender.sent)}")
        return order

    order = asyncio.run(run())
    assert "sent while down: 0" in order and order[-1] == "sent after: 1"


def test_store_health_logs_once_per_change_of_state(caplog):
    caplog.set_level(logging.INFO, logger="fashionai.worker")
    rig = Rig()
    rig.store.cache_failures = 10
    asyncio.run(rig.processor.process([envelope(f"m{i}", f"s{i}") for i in range(5)]))
    lines = [r.getMessage() for r in caplog.records if "store" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("store unavailable (cache write: ConnectionError")
    assert lines[1].startswith("store answers again")


def test_backoff_is_capped():
    health = StoreHealth(base=0.2, cap=5.0, rand=lambda lo, hi: hi)
    assert [health.backoff(n) for n in (1, 2, 3, 6, 20)] == [0.2, 0.4, 0.8, 5.0, 5.0]


def test_a_recorded_id_delivered_again_is_dropped_but_its_retry_is_not():
    rig = Rig(lambda body: failed(503))
    first = rig.run([envelope("a", "s1")])
    assert first["retried"] == 1
    again = rig.run([envelope("a", "s1")])  # a producer's second publish, or a redelivery
    assert again.as_counts() == {"received": 1, "duplicate": 1}
    member = rig.store.retries[-1][1]
    retry = rig.run([member], lease_members=[member])  # the worker's own retry of that event
    assert retry["calls"] == 1 and retry["duplicate"] == 0
    assert len(rig.sender.sent) == 2


def test_an_unrecorded_redelivery_is_not_dropped():
    rig = Rig()
    rig.store.state_failures = 0
    assert rig.run([envelope("a", "s1")])["cached"] == 1
    assert rig.run([envelope("b", "s1")])["duplicate"] == 0  # another id: never seen recorded


def test_a_duplicate_mark_expires_after_the_window():
    rig = Rig(duplicate_window=60)
    rig.run([envelope("a", "s1")])
    rig.clock.advance(61)
    assert rig.run([envelope("a", "s1")])["duplicate"] == 0


def test_an_envelope_of_another_tenant_is_dead_lettered_never_sent_or_cached():
    rig = Rig()
    result = rig.run([envelope("x", "s1", tenant="intruder"), envelope("a", "s2")])
    assert result["foreign"] == 1 and result["dead"] == 1 and result["cached"] == 1
    assert [b["sessionId"] for _, b in rig.sender.sent] == ["s2"]
    assert not any(":intruder:" in k or k.startswith("fashionai:intruder") for k in rig.store.rankings)
    (entry,) = rig.store.dead
    assert (
        entry["kind"] == "foreign" and entry["tenant"] == "intruder" and entry["event"]["sessionId"] == "s1"
    )


def test_an_oversize_message_is_dead_lettered_with_a_bounded_entry():
    rig = Rig()
    huge = json.dumps({"v": 1, "id": "big", "pad": "x" * 5_000_000}).encode()
    result = rig.run([huge, envelope("a", "s1")])
    assert result["invalid"] == 1 and result["cached"] == 1
    (entry,) = rig.store.dead
    assert entry["reason"].startswith("undecodable message: message too large: 5000")
    assert len(json.dumps(entry)) < 5_000


def test_a_far_future_timestamp_is_clamped_so_newer_rankings_still_win():
    rig = Rig()
    rig.run([envelope("f", "s1", "p1", ts=1e12)])
    key = keys.ranking("t", "productView", "p1", "s1", None)
    assert rig.store.rankings[key][0] == int(rig.clock.time() * 1000)
    rig.clock.advance(1)
    later = rig.run([envelope("n", "s1", "p1", ts=rig.clock.time())])
    assert later["cached"] == 1 and later["stale"] == 0


@pytest.mark.parametrize("ts", [float("inf"), float("nan")])
def test_a_non_finite_timestamp_is_clamped(ts):
    rig = Rig()
    raw = envelope("f", "s1").replace(b'"ts":999990.0', f'"ts":{json.dumps(ts)}'.encode())
    assert rig.run([raw])["cached"] == 1


def test_tokens_echoed_by_the_upstream_are_masked_in_dead_letters_and_logs(caplog):
    echoed = json.dumps({"error": "bad", "headers": {"X-FashionAI-APP-Token": TOKEN}, "also": OTHER_TOKEN})
    rig = Rig(
        lambda body: failed(400, body=echoed), secrets=(OTHER_TOKEN,)
    )  # another tenant's, as the pump passes
    caplog.set_level(logging.INFO)
    rig.run([envelope("a", "s1")])
    stored = json.dumps(rig.store.dead)
    assert TOKEN not in stored and OTHER_TOKEN not in stored and "***" in stored
    (line,) = [r.getMessage() for r in caplog.records if "dead letter" in r.getMessage()]
    assert "message a" in line and "refused by upstream (HTTP 400)" in line
    assert TOKEN not in caplog.text and "headers" not in line


def test_a_ranking_is_stored_as_the_upstream_answered_within_its_bound():
    rig = Rig(lambda body: Delivered([f"p{i}" for i in range(3)]))
    rig.run([envelope("a", "s1")])
    (value,) = [v for _, v in rig.store.rankings.values()]
    assert json.loads(value)[1:] == ["p0", "p1", "p2"]


def test_one_failed_call_is_retried_at_once_and_is_no_outage(caplog):
    caplog.set_level(logging.INFO, logger="fashionai.worker")
    rig = Rig()
    rig.store.cache_failures = 1  # a pooled connection that died with a restarted Redis
    result = rig.run([envelope("a", "s1")])
    assert result["cached"] == 1 and rig.clock.sleeps == []
    assert rig.health.outages == 0 and "store" not in caplog.text

"""BatchProcessor on its seams: outcomes, backoff, cooldown and recording, with no Redis and no sleeping."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.message import decode
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.batch import AUTH_PAUSE, BatchProcessor
from fashionai_pipeline.worker.clock import MockedClock
from fashionai_pipeline.worker.delivery import Delivered
from fashionai_pipeline.worker.health import StoreHealth
from fashionai_pipeline.worker.retry import RetryPolicy
from tests.unit.fakes import MemoryStore, RecordingLimiter, ScriptedSender, envelope, failed

TOKEN = "tok-unit-5f4e3d2c1b0a"


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"tenant": "t", "app_token": TOKEN, "max_attempts": 3, "max_age": 600.0}
    values.update(overrides)
    return Settings(**values)


def highest(lo: float, hi: float) -> float:
    return hi  # the jitter's upper end: makes each backoff exact


class Rig:
    def __init__(self, script: Any = None, *, secrets: tuple[str, ...] = (), **overrides: Any) -> None:
        self.clock = MockedClock()
        self.store = MemoryStore(self.clock)
        self.sender = ScriptedSender(self.clock, script)
        self.limiter = RecordingLimiter()
        self.settings = settings(**overrides)
        self.health = StoreHealth(base=0.2, cap=5.0, clock=self.clock)
        policy = RetryPolicy(0.5, 10.0, self.settings.max_attempts, self.settings.max_age, rand=highest)
        self.processor = BatchProcessor(
            self.settings,
            self.sender,
            self.store,
            limiter=self.limiter,
            policy=policy,
            clock=self.clock,
            health=self.health,
            secrets=secrets,
        )

    def run(self, raws: list[bytes], **kwargs: Any) -> Any:
        return asyncio.run(self.processor.process(raws, **kwargs))


def test_delivered_events_are_cached_counted_and_recorded_in_one_commit():
    rig = Rig()
    result = rig.run([envelope("a", "s1", "p1"), envelope("b", "s2", "p2")])
    assert result is not None
    assert result.as_counts() == {"received": 2, "calls": 2, "delivered": 2, "cached": 2}
    key = keys.ranking("t", "productView", "p1", "s1", None)
    ts_ms, value = rig.store.rankings[key]
    assert json.loads(value) == [ts_ms, "r1", "r2"] and ts_ms == 999_990_000
    (commit,) = rig.store.commits
    assert commit.counts == result.as_counts()
    assert [round(ms) for ms in commit.latencies_ms] == [10_000, 10_000]  # clock 1,000,000 - ts 999,990


def test_a_5xx_schedules_a_retry_with_exponential_backoff_and_one_more_attempt():
    rig = Rig(lambda body: failed(503))
    first = rig.run([envelope("a", "s1")])
    assert first is not None and first.as_counts() == {"received": 1, "calls": 1, "retried": 1}
    ((delay, member),) = rig.store.retries
    assert delay == 0.5  # base * 2**0, at the top of the jitter
    assert decode(member).attempt == 1 and decode(member).id == "a"
    second = rig.run([member], lease_members=[member])
    assert second is not None
    assert rig.store.retries[-1][0] == 1.0  # base * 2**1
    assert rig.store.commits[-1].release == [member]  # the lease goes in the same commit


def test_retries_end_in_a_dead_letter_after_max_attempts_with_the_last_reason():
    rig = Rig(lambda body: failed(502))
    rig.run([envelope("a", "s1")])
    for _ in range(2):  # the retries, claimed from the retry set
        raw = rig.store.retries[-1][1]
        rig.run([raw], lease_members=[raw])
    (entry,) = rig.store.dead
    assert entry["kind"] == "exhausted" and entry["attempts"] == 3
    assert entry["reason"] == "gave up after 3 attempts; last: upstream error (HTTP 502)"
    assert entry["id"] == "a" and entry["status"] == 502


def test_an_event_older_than_max_age_is_given_up_at_its_next_failure():
    rig = Rig(lambda body: failed(500), max_age=5.0)
    result = rig.run([envelope("a", "s1", ts=rig.clock.time() - 6)])
    assert result is not None and result["dead"] == 1
    assert rig.store.dead[0]["reason"].startswith("gave up: older than 5s")


def test_a_4xx_refusal_is_dead_lettered_at_once_with_status_and_body():
    rig = Rig(lambda body: failed(400, body='{"error": "unknown id"}'))
    result = rig.run([envelope("a", "s1")])
    assert result is not None and result.as_counts() == {"received": 1, "calls": 1, "dead": 1}
    (entry,) = rig.store.dead
    assert (entry["kind"], entry["status"], entry["attempts"]) == ("refused", 400, 1)
    assert "unknown id" in entry["response"] and entry["event"]["sessionId"] == "s1"


def test_a_401_pauses_every_worker_and_keeps_the_event_without_spending_an_attempt():
    rig = Rig(lambda body: failed(401))
    result = rig.run([envelope("a", "s1", attempt=2)])
    assert result is not None and result["auth_failures"] == 1 and result["retried"] == 1
    assert rig.limiter.pauses == [(AUTH_PAUSE, "401")]
    assert decode(rig.store.retries[0][1]).attempt == 2


def test_a_429_pauses_for_retry_after_and_the_retry_waits_at_least_that_long():
    rig = Rig(lambda body: failed(429, retry_after=7))
    result = rig.run([envelope("a", "s1", ts=rig.clock.time() - 1)])
    assert result is not None and result["retried"] == 1 and result["throttled"] == 1
    assert rig.limiter.pauses == [(7.0, "429")]
    assert rig.store.retries[0][0] == 7.0


def test_429s_spend_no_attempt_only_max_age_ends_them():
    rig = Rig(lambda body: failed(429), max_attempts=2, max_age=100.0)
    raw = envelope("a", "s1", ts=rig.clock.time())
    result = rig.run([raw])
    for _ in range(20):  # far more 429s than max_attempts
        raw = rig.store.retries[-1][1]
        rig.clock.advance(1)
        result = rig.run([raw], lease_members=[raw])
        assert result["dead"] == 0
    assert decode(rig.store.retries[-1][1]).attempt == 0
    # The throttled backoff grows with the event's age (it cannot grow with attempts).
    assert rig.store.retries[-1][0] > rig.store.retries[0][0]
    rig.clock.advance(100)
    raw = rig.store.retries[-1][1]
    result = rig.run([raw], lease_members=[raw])
    assert result["dead"] == 1 and rig.store.dead[0]["reason"].startswith("gave up: older than 100s")


def test_undecodable_messages_are_dead_lettered_and_do_not_reject_the_batch():
    rig = Rig()
    result = rig.run([b"{not json", envelope("a", "s1")])
    assert result is not None
    assert result.as_counts() == {
        "received": 2,
        "calls": 1,
        "delivered": 1,
        "cached": 1,
        "dead": 1,
        "invalid": 1,
    }
    (entry,) = rig.store.dead
    assert entry["kind"] == "undecodable" and entry["reason"].startswith(
        "undecodable message: not valid JSON"
    )


def test_identical_events_make_one_call_and_the_window_coalesces_later_ones():
    rig = Rig(coalesce_window_ms=5000)
    same = [envelope(f"m{i}", "s1", "p1", ts=999_990.0 + i) for i in range(3)]
    first = rig.run(same)
    assert first is not None and first["calls"] == 1 and first["coalesced"] == 2 and first["cached"] == 3
    second = rig.run([envelope("m9", "s1", "p1")])
    assert second is not None and second["calls"] == 0 and second["coalesced"] == 1
    rig.clock.advance(6)  # past the window
    third = rig.run([envelope("m10", "s1", "p1")])
    assert third is not None and third["calls"] == 1
    assert len(rig.sender.sent) == 2


def test_one_sessions_events_are_sent_in_enqueue_order():
    rig = Rig()
    raws = [envelope(f"m{i}", "s1", f"p{i}", ts=999_990.0 - i) for i in range(5)]
    rig.run(raws)
    assert [b["data"]["id"] for _, b in rig.sender.sent] == ["p4", "p3", "p2", "p1", "p0"]


def test_an_older_ranking_is_counted_stale_not_cached():
    rig = Rig()
    assert rig.run([envelope("new", "s1", "p1", ts=999_995.0)]) is not None
    older = rig.run([envelope("old", "s1", "p1", ts=999_980.0)])
    assert older is not None and older["stale"] == 1 and older["cached"] == 0
    assert older.latencies_ms == []  # nothing reached the cache for it
    key = keys.ranking("t", "productView", "p1", "s1", None)
    assert rig.store.rankings[key][0] == 999_995_000


def test_an_empty_ranking_is_cached_and_counted_empty():
    rig = Rig(lambda body: Delivered([]))
    result = rig.run([envelope("a", "s1")])
    assert result is not None and result["cached"] == 1 and result["empty"] == 1


def test_waiters_are_told_after_the_rankings_are_written_and_before_the_commit():
    rig = Rig()
    rig.run(
        [
            envelope("a", "s1", "p1", notify="proc7"),
            envelope("b", "s2", "p2"),
            envelope("c", "s3", "p3", notify="key"),
        ]
    )
    assert (
        rig.store.calls.index("write_rankings")
        < rig.store.calls.index("announce")
        < rig.store.calls.index("commit")
    )
    ranking_a = rig.store.rankings[keys.ranking("t", "productView", "p1", "s1", None)][1]
    ranking_c_key = keys.ranking("t", "productView", "p3", "s3", None)
    assert rig.store.announced == [
        (keys.reply_channel("proc7"), f"a {ranking_a}"),  # the waiter's process, matched by message id
        (keys.landed_channel(ranking_c_key), rig.store.rankings[ranking_c_key][1]),  # a key's readers
    ]


def test_a_batch_nobody_waits_for_announces_nothing():
    rig = Rig()
    rig.run([envelope("a", "s1", "p1"), envelope("b", "s2", "p2")])
    assert "announce" not in rig.store.calls and rig.store.announced == []

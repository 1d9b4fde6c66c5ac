"""Poison messages of every kind are dead-lettered with the right reason; replay delivers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import redis
from kombu import Producer

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.broker import connect, event_queue
from fashionai_pipeline.producers.event import make_event
from fashionai_pipeline.producers.message import encode
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.producers.reader import RankingReader
from fashionai_pipeline.worker.local import settings_env
from tests.conftest import STATE_URL, TOKEN, make_settings, wait_until

pytestmark = pytest.mark.integration


def _raw_publish(settings, payloads: list[bytes]) -> None:
    """What a foreign or broken producer puts on the queue."""
    with connect(settings, timeout=5) as conn:
        producer = Producer(conn.channel())
        for payload in payloads:
            producer.publish(
                payload,
                routing_key=settings.queue,
                declare=[event_queue(settings)],
                content_type="application/json",
                content_encoding="utf-8",
            )


def _cli(settings, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(settings)}
    return subprocess.run(
        [sys.executable, "-m", "fashionai_pipeline.worker.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _letters(tenant: str) -> list[dict]:
    rows: Any = redis.Redis.from_url(STATE_URL).xrange(keys.dead_letters())
    entries = [json.loads(fields[b"entry"]) | {"dlq_id": rid.decode()} for rid, fields in rows]
    return [
        e
        for e in entries
        if e["tenant"] in (tenant, None) and (e["tenant"] or tenant in json.dumps(e["message"]))
    ]


def test_poison_messages_are_dead_lettered_and_replay_delivers(broker_url, sandbox, cache, state, workers):
    settings = make_settings(broker_url, sandbox.url)
    t = settings.tenant
    redis.Redis.from_url(STATE_URL).delete(keys.dead_letters())
    sandbox.configure(refuse_ids=[f"gone-{t}"])
    bad_type = encode("bt", t, 1.0, {"sessionId": f"s-{t}", "eventType": "pageView", "data": {"id": "x"}})
    no_session = encode("ns", t, 1.0, {"eventType": "productView", "data": {"id": "x"}})
    _raw_publish(settings, [f"{{not json {t}".encode(), bad_type, no_session])
    good = [make_event("productView", f"ok-{t}-{i}", f"p{i}") for i in range(20)]
    refused = make_event("productView", f"refused-{t}", f"gone-{t}", "u5")
    with Publisher(settings) as pub:
        for event in [*good[:10], refused, *good[10:]]:
            pub.publish(event)
    worker = workers(settings, "-c", "1")
    wait_until(
        lambda: len(_letters(t)) >= 4 and int(state.hget(keys.stats(t), "cached") or 0) >= 20,
        60,
        "four dead letters and the good events cached",
    )

    letters = {e["kind"] + ":" + e["reason"].split(":")[0]: e for e in _letters(t)}
    undecodable = [e for e in _letters(t) if e["kind"] == "undecodable"]
    reasons = sorted(e["reason"] for e in undecodable)
    assert len(undecodable) == 3
    assert any("not valid JSON" in r for r in reasons)
    assert any("event.eventType: must be one of" in r for r in reasons)
    assert any("event.sessionId: required" in r for r in reasons)
    (refusal,) = [e for e in letters.values() if e["kind"] == "refused"]
    assert refusal["status"] == 400 and "unknown to the catalog" in refusal["response"]
    assert refusal["event"] == refused.body() and refusal["attempts"] == 1 and refusal["id"]
    assert TOKEN not in json.dumps(_letters(t))

    # The worker kept running: new events still flow.
    with Publisher(settings) as pub:
        pub.product_view(f"after-{t}", "p-after")
    wait_until(lambda: int(state.hget(keys.stats(t), "cached") or 0) >= 21, 30, "a later event")
    assert worker.alive()

    listed = _cli(settings, "dlq", "list")
    assert listed.returncode == 0 and "refused by upstream (HTTP 400)" in listed.stdout
    shown = _cli(settings, "dlq", "show", refusal["dlq_id"])
    assert json.loads(shown.stdout)["event"] == refused.body()
    assert _cli(settings, "dlq", "show", "1-0").returncode == 1

    # Fix the cause, replay only the refusals: it is delivered; the undecodable stay.
    sandbox.configure(refuse_ids=[])
    replay = _cli(settings, "dlq", "replay", "--reason", "HTTP 400")
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1" in replay.stdout and "1/1" in replay.stderr  # the progress bar
    with RankingReader(settings) as reader:
        wait_until(
            lambda: reader.get("productView", f"gone-{t}", f"refused-{t}", "u5") is not None,
            30,
            "the replayed event to be cached",
        )
    assert sorted(e["kind"] for e in _letters(t)) == ["undecodable"] * 3
    purge = _cli(settings, "dlq", "purge", "--yes")
    assert purge.returncode == 0 and "purged 3" in purge.stdout
    assert _letters(t) == []


def test_exhausted_retries_are_dead_lettered_with_attempts(sandbox, cache, state, workers):
    sandbox.configure(rate_5xx=1.0)
    settings = make_settings(
        "redis://127.0.0.1:6379/14", sandbox.url, max_attempts=3, retry_base=0.02, retry_cap=0.05
    )
    event = make_event("shopTheLook", f"ex-{settings.tenant}", "p1")
    with Publisher(settings) as pub:
        pub.publish(event)
    workers(settings, "-c", "1")
    wait_until(lambda: int(state.hget(keys.stats(settings.tenant), "dead") or 0) >= 1, 30, "a dead letter")
    (entry,) = [e for e in _letters(settings.tenant) if e["event"] == event.body()]
    assert entry["kind"] == "exhausted" and entry["attempts"] == 3
    assert entry["reason"].startswith("gave up after 3 attempts") and entry["status"] in (500, 502, 503)
    assert len(sandbox.requests()) == 3

"""End to end with real processes: publisher -> broker -> worker -> sandbox -> Redis -> reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fashionai_pipeline.producers.event import make_event
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.producers.reader import RankingReader
from fashionai_pipeline.worker.local import settings_env
from tests.conftest import make_settings, wait_until

pytestmark = pytest.mark.integration

CONTRACT_CASES = [
    (event_type, user)
    for event_type in ("productView", "categoryView", "shopTheLook", "customShelf")
    for user in (None, "90")
]


def _stats(state, settings) -> dict[str, int]:
    from fashionai_pipeline.producers import keys

    return {k.decode(): int(v) for k, v in state.hgetall(keys.stats(settings.tenant)).items()}


def test_events_reach_the_sandbox_exactly_and_rankings_come_back(
    broker_url, sandbox, cache, state, workers, request
):
    settings = make_settings(broker_url, sandbox.url)
    events = []
    for n, (event_type, user) in enumerate(CONTRACT_CASES):
        item = "" if event_type == "customShelf" else f"item-{n}"
        events.append(make_event(event_type, f"contract-{settings.tenant}-{n}", item, user))
    # A storefront's worth more, every one unique so ids can be compared.
    for n in range(150):
        kind = ("productView", "categoryView", "shopTheLook")[n % 3]
        events.append(
            make_event(kind, f"bulk-{settings.tenant}-{n % 40}", f"x{n}", "u7" if n % 5 == 0 else None)
        )

    with Publisher(settings) as publisher:
        for event in events:
            assert publisher.publish(event).outcome == "published"
    workers(settings)
    wait_until(lambda: _stats(state, settings).get("cached", 0) >= len(events), 60, "every event cached")

    log = sandbox.requests()
    # Contract: exactly the seed's body, the token header, JSON content type.
    received = [r["body"] for r in log]
    for event in events[: len(CONTRACT_CASES)]:
        assert event.body() in received
    for entry in log:
        assert entry["headers"]["token_ok"] is True
        assert entry["headers"]["content-type"] == "application/json"
        assert set(entry["body"]) <= {"userId", "sessionId", "eventType", "data"}
        assert entry["body"].get("userId", "x") is not None

    # Rankings readable through the reader API equal what the sandbox answered.
    answered = {json.dumps(r["body"], sort_keys=True): r["products"] for r in log if r["status"] == 200}
    assert len(answered) == len(events)
    reader = RankingReader(settings)
    request.addfinalizer(reader.close)
    for event in events:
        ranking = reader.get(event.eventType, event.data.id, event.sessionId, event.userId)
        assert ranking is not None, event
        assert ranking.products == answered[json.dumps(event.body(), sort_keys=True)]

    # ... and through the CLI.
    env = {**os.environ, **settings_env(settings)}
    for event in (events[0], events[3], events[-1]):
        argv = [
            sys.executable,
            "-m",
            "fashionai_pipeline.worker.cli",
            "rankings",
            "get",
            "--event-type",
            event.eventType,
            "--id",
            event.data.id,
            "--session",
            event.sessionId,
        ]
        if event.userId:
            argv += ["--user", event.userId]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=True)
        printed = json.loads(out.stdout)
        assert printed["products"] == answered[json.dumps(event.body(), sort_keys=True)]
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "fashionai_pipeline.worker.cli",
            "rankings",
            "get",
            "--event-type",
            "productView",
            "--id",
            "never-seen",
            "--session",
            "nobody",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 1
    assert "no ranking cached" in missing.stderr


def test_empty_ranking_falls_back_to_native_ordering(broker_url, sandbox, cache, state, workers, request):
    settings = make_settings(broker_url, sandbox.url)
    session = f"fresh-{settings.tenant}"
    with Publisher(settings) as publisher:
        publisher.custom_shelf(session)  # a brand-new session: the sandbox has no data yet
    workers(settings, "-c", "1")
    wait_until(lambda: _stats(state, settings).get("cached", 0) >= 1, 60, "the ranking to be cached")

    assert [r["products"] for r in sandbox.requests()] == [[]]
    reader = RankingReader(settings)
    request.addfinalizer(reader.close)
    ranking = reader.get("customShelf", "", session)
    assert ranking is not None and ranking.empty
    native = [f"n{i}" for i in range(200)]
    assert reader.order("customShelf", "", session, native) == native
    assert _stats(state, settings)["empty"] == 1


def test_reader_serves_native_ordering_when_nothing_is_cached_or_cache_is_down(sandbox):
    settings = make_settings("redis://127.0.0.1:6379/14", sandbox.url)
    native = ["a", "b", "c"]
    with RankingReader(settings) as reader:
        assert reader.order("productView", "p", "s", native) == native
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with RankingReader(down) as reader:
        assert reader.order("productView", "p", "s", native) == native


def test_cli_publish_from_jsonl_reports_bad_lines_and_publishes_the_rest(sandbox, cache, tmp_path):
    settings = make_settings("redis://127.0.0.1:6379/14", sandbox.url)
    lines = [
        json.dumps({"sessionId": "s1", "eventType": "productView", "data": {"id": "p1"}}),
        json.dumps({"sessionId": "s1", "eventType": "customShelf", "data": {"id": "oops"}}),
        "{not json",
        json.dumps({"userId": "9", "sessionId": "s2", "eventType": "categoryView", "data": {"id": "c1"}}),
        json.dumps({"eventType": "productView", "data": {"id": "p1"}}),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    env = {**os.environ, **settings_env(settings)}
    out = subprocess.run(
        [sys.executable, "-m", "fashionai_pipeline.worker.cli", "publish", "--file", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "line 2: refused: data.id" in out.stderr
    assert "line 3: refused: not valid JSON" in out.stderr
    assert "line 5: refused: sessionId: required" in out.stderr
    assert "published 2 event(s), refused 3" in out.stdout
    import redis as _redis

    broker = _redis.Redis.from_url(settings.broker_url)
    try:
        assert broker.llen(settings.queue) == 2
        ok = subprocess.run(
            [
                sys.executable,
                "-m",
                "fashionai_pipeline.worker.cli",
                "publish",
                "--event-type",
                "shopTheLook",
                "--id",
                "p9",
                "--session",
                "s3",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert ok.returncode == 0 and broker.llen(settings.queue) == 3
        stdin = subprocess.run(
            [sys.executable, "-m", "fashionai_pipeline.worker.cli", "publish", "--file", "-"],
            env=env,
            input=lines[0] + "\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert stdin.returncode == 0 and broker.llen(settings.queue) == 4
    finally:
        broker.delete(settings.queue)

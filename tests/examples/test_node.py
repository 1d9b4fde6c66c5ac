"""examples/node: events published from Node.js straight to the Redis broker (docs/QUEUE.md).

Real processes only: `node publish.mjs` with the npm `redis` client, the shared Redis,
a real worker and the sandbox.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import redis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.kombu_redis import encode_message, message_body
from fashionai_pipeline.producers.message import decode
from fashionai_pipeline.producers.reader import RankingReader
from fashionai_pipeline.worker.deadletter import DeadLetterStore
from fashionai_pipeline.worker.local import settings_env
from tests.conftest import BROKERS, delivered_bodies, make_settings, wait_until

pytestmark = pytest.mark.integration

EVENTS = [
    {"sessionId": "node-s1", "eventType": "productView", "data": {"id": "p0007"}},
    {"userId": "node-u9", "sessionId": "node-s1", "eventType": "categoryView", "data": {"id": "c03"}},
    {"sessionId": "node-s2", "eventType": "shopTheLook", "data": {"id": "p0042"}},
    {"sessionId": "node-s1", "eventType": "customShelf", "data": {"id": ""}},
]


def _node(folder: Path, env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", "publish.mjs", *args],
        cwd=folder,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _scratch_queue(request, settings) -> redis.Redis:
    """A broker client; the test's queue is deleted at the end."""
    client = redis.Redis.from_url(settings.broker_url)

    def cleanup() -> None:
        client.delete(settings.queue)
        client.close()

    request.addfinalizer(cleanup)
    return client


def _jsonl(events) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def test_node_events_are_delivered_and_their_rankings_cached(
    node_example, base_env, sandbox, workers, request
):
    settings = make_settings(BROKERS["redis"], sandbox.url)
    workers(settings)
    env = {**base_env, **settings_env(settings)}
    done = _node(node_example, env, "--file", "-", stdin=_jsonl(EVENTS))
    assert done.returncode == 0, done.stderr
    published = [json.loads(line) for line in done.stdout.splitlines()]
    assert [p["queue"] for p in published] == [settings.queue] * len(EVENTS)
    assert len({p["id"] for p in published}) == len(EVENTS)

    wait_until(lambda: len(delivered_bodies(sandbox)) >= len(EVENTS), 60, "the sandbox to get every event")
    # Exactly the seed's bodies reached the upstream, with the token.
    log = sandbox.requests()
    assert sorted(json.dumps(r["body"], sort_keys=True) for r in log) == sorted(
        json.dumps(e, sort_keys=True) for e in EVENTS
    )
    assert all(r["headers"]["token_ok"] for r in log)

    reader = RankingReader(settings)
    request.addfinalizer(reader.close)
    answered = {json.dumps(r["body"], sort_keys=True): r["products"] for r in log}

    def cached(event):
        return reader.get(event["eventType"], event["data"]["id"], event["sessionId"], event.get("userId"))

    wait_until(lambda: all(cached(e) is not None for e in EVENTS), 30, "every ranking cached")
    for event in EVENTS:
        ranking = cached(event)
        assert ranking is not None
        assert ranking.products == answered[json.dumps(event, sort_keys=True)]
        # The cache orders writes by the envelope's ts, which Node stamped from its clock.
        assert abs(ranking.enqueued_at - time.time()) < 120

    stats = redis.Redis.from_url(settings.state_store_url()).hgetall(keys.stats(settings.tenant))
    assert int(stats.get(b"invalid", 0)) == 0
    assert int(stats[b"cached"]) == len(EVENTS)


def test_node_frame_is_the_python_publishers_frame(node_example, base_env, request):
    """What Node LPUSHes decodes as the worker decodes it, and has kombu's shape key for key."""
    settings = make_settings(BROKERS["redis"], "http://127.0.0.1:9/unused")
    client = _scratch_queue(request, settings)
    env = {**base_env, **settings_env(settings)}
    event = {"userId": "ü-90", "sessionId": "s:1", "eventType": "productView", "data": {"id": 'p"1'}}
    before = time.time()
    done = _node(node_example, env, "--file", "-", stdin=_jsonl([event]))
    assert done.returncode == 0, done.stderr
    (msg_id,) = [json.loads(line)["id"] for line in done.stdout.splitlines()]

    raw = client.rpop(settings.queue)
    assert isinstance(raw, bytes)
    frame = json.loads(raw)
    envelope = decode(message_body(frame))
    assert envelope.id == msg_id
    assert envelope.tenant == settings.tenant
    assert envelope.attempt == 0
    assert envelope.event.body() == event
    assert before - 1 <= envelope.ts <= time.time() + 1

    python = json.loads(encode_message(envelope.encode(), settings.queue, tag=msg_id))
    assert list(frame) == list(python)
    assert frame["properties"] == python["properties"]
    assert {k: v for k, v in frame.items() if k != "body"} == {k: v for k, v in python.items() if k != "body"}
    # The worker's pop script finds the delivery tag by a pattern, not by decoding.
    assert f'"delivery_tag":"{msg_id}"' in raw.decode()


def test_node_refuses_bad_events_naming_the_field_and_publishes_the_rest(node_example, base_env, request):
    settings = make_settings(BROKERS["redis"], "http://127.0.0.1:9/unused")
    client = _scratch_queue(request, settings)
    env = {**base_env, **settings_env(settings)}
    lines = [
        json.dumps(EVENTS[0]),
        json.dumps({"sessionId": "s", "eventType": "customShelf", "data": {"id": "p1"}}),
        json.dumps({"userId": None, "sessionId": "s", "eventType": "productView", "data": {"id": "p1"}}),
        json.dumps({"sessionId": "s", "eventType": "pageView", "data": {"id": "p1"}}),
        json.dumps({"sessionId": "s", "eventType": "productView", "data": {"id": "p1"}, "extra": 1}),
        json.dumps({"sessionId": "s", "eventType": "productView", "data": {"id": "x" * 513}}),
        "{not json",
    ]
    done = _node(node_example, env, "--file", "-", stdin="\n".join(lines) + "\n")
    assert done.returncode == 1
    errors = done.stderr.splitlines()
    assert errors == [
        'refused: line 2: data.id: must be "" for customShelf',
        "refused: line 3: userId: must be left out when absent, not null",
        "refused: line 4: eventType: must be one of productView, categoryView, shopTheLook, customShelf",
        "refused: line 5: extra: unknown field",
        "refused: line 6: data.id: must be at most 512 characters",
        errors[5],
    ]
    assert errors[5].startswith("refused: line 7: not valid JSON")
    assert client.llen(settings.queue) == 1
    assert len(done.stdout.splitlines()) == 1


def test_node_reports_an_unreachable_broker_within_its_bound(node_example, base_env):
    env = {
        **base_env,
        "FASHIONAI_BROKER_URL": "redis://127.0.0.1:1/0",
        "FASHIONAI_PUBLISH_TIMEOUT": "0.5",
    }
    start = time.monotonic()
    done = _node(node_example, env, "--event-type", "productView", "--id", "p1", "--session", "s1")
    assert done.returncode == 3
    assert "broker redis://127.0.0.1:1/0 unavailable" in done.stderr
    assert time.monotonic() - start < 30  # generous: node's own start-up is most of it


def test_a_foreign_message_the_worker_cannot_use_is_dead_lettered_with_the_field(
    node_example, base_env, sandbox, workers
):
    """docs/QUEUE.md's promise to other-language publishers: a bad envelope is never lost
    silently; it becomes a dead letter whose reason names the field."""
    settings = make_settings(BROKERS["redis"], sandbox.url)
    workers(settings)
    script = """
import { encodeEnvelope, kombuFrame, newId, settingsFromEnv, queueFor } from './publisher.mjs';
import { createClient } from 'redis';
const settings = settingsFromEnv();
const id = newId();
// No validateEvent: the body lacks sessionId, as a careless publisher might send it.
const body = { eventType: 'productView', data: { id: 'p0001' } };
const payload = encodeEnvelope({ id, tenant: settings.tenant, ts: Date.now() / 1000, body });
const frame = kombuFrame(payload, queueFor(settings), id);
const client = createClient({ url: settings.brokerUrl });
await client.connect();
await client.lPush(queueFor(settings), frame);
await client.close();
console.log(id);
"""
    env = {**base_env, **settings_env(settings)}
    started = time.time()
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        cwd=node_example,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    msg_id = done.stdout.strip()
    store = DeadLetterStore(redis.Redis.from_url(settings.state_store_url()))

    def mine():
        return [
            letter
            for letter in store.iter(since=started - 1)
            if (letter.entry.get("message") or {}).get("id") == msg_id
        ]

    wait_until(lambda: bool(mine()), 60, "the dead letter")
    (letter,) = mine()
    assert letter.entry["kind"] == "undecodable"
    assert "event.sessionId" in letter.entry["reason"]
    assert sandbox.requests() == []
    store.delete([letter.dlq_id])

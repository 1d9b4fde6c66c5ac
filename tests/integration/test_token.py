"""The token appears in no captured output of a full run at DEBUG level, failures included."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis
from kombu import Producer

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.broker import connect, event_queue
from fashionai_pipeline.producers.event import make_event
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.worker.local import settings_env
from tests.conftest import STATE_URL, TOKEN, make_settings, wait_until

pytestmark = pytest.mark.integration


def test_token_never_leaks_at_debug_level(broker_url, sandbox, cache, state, workers, capfd, caplog):
    caplog.set_level("DEBUG")
    sandbox.configure(rate_5xx=0.2, seed=3)
    settings = make_settings(broker_url, sandbox.url, log_level="DEBUG", max_attempts=3)
    with Publisher(settings) as pub:
        for n in range(60):
            pub.publish(make_event("productView", f"leak-{settings.tenant}-{n}", f"p{n}", "u1"))
        assert TOKEN not in repr(pub) and TOKEN not in repr(pub.settings)
    with connect(settings, timeout=5) as conn:  # a poison message from a foreign producer
        Producer(conn.channel()).publish(
            b"{definitely not json",
            routing_key=settings.queue,
            declare=[event_queue(settings)],
            content_type="application/json",
        )
    worker = workers(settings, "-c", "1")

    def settled() -> int:
        counts = state.hmget(keys.stats(settings.tenant), "cached", "dead")
        return sum(int(c or 0) for c in counts)

    wait_until(lambda: settled() >= 60, 60, "every event cached or dead-lettered")

    # Now the upstream stops accepting the token: a 401 is a configuration error.
    sandbox.configure(token="rotated-elsewhere-0000", rate_5xx=0.0)
    with Publisher(settings) as pub:
        pub.product_view(f"leak-{settings.tenant}-401", "p401")
    wait_until(lambda: int(state.hget(keys.stats(settings.tenant), "auth_failures") or 0) >= 1, 30, "a 401")

    env = {**os.environ, **settings_env(settings)}
    cli_out = []
    for argv in (
        ["stats"],
        ["dlq", "list"],
        [
            "rankings",
            "get",
            "--event-type",
            "productView",
            "--id",
            "p1",
            "--session",
            f"leak-{settings.tenant}-1",
            "--user",
            "u1",
        ],
        ["publish", "--event-type", "productView", "--id", "p", "--session", "s", "--user", ""],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "fashionai_pipeline.worker.cli", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        cli_out.append(done.stdout + done.stderr)
    worker.stop()

    log = worker.output()
    assert "DEBUG" in log and "CONFIGURATION ERROR" in log and "401" in log  # it did log, loudly
    dlq = redis.Redis.from_url(STATE_URL).xrange(keys.dead_letters())
    stored = [
        json.dumps(v)
        for v in redis.Redis.from_url(STATE_URL, decode_responses=True)
        .hgetall(keys.stats(settings.tenant))
        .items()
    ]
    captured = capfd.readouterr()
    everything = "\n".join(
        [
            log,
            *cli_out,
            captured.out,
            captured.err,
            caplog.text,
            str(dlq),
            *stored,
            json.dumps(sandbox.requests()),
        ]
    )
    assert "userId" in everything  # the haystack is real output, not empty
    assert TOKEN not in everything

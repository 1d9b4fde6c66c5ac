"""A cache outage costs the upstream nothing and loses no event (real processes).

The cache is a private redis-server run as a pure cache (no persistence),
SIGKILLed mid-drain while events wait in the retry set, kept down for 60 s and
restarted empty on the same port. The worker is never restarted. The state
store (retries, marks, counters) is the shared Redis, in keys of the test's own
tenant. Once per broker.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest
import redis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.event import make_event
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.worker.local import start_redis
from tests.conftest import make_settings, wait_until

pytestmark = pytest.mark.integration

OUTAGE = 60.0  # seconds the cache stays down
PROCESSES = 2  # pool children ("-c 2"), one pump each


def _key(body: object) -> str:
    return json.dumps(body, sort_keys=True)


def test_a_cache_outage_holds_outcomes_sends_nothing_new_and_loses_nothing(
    broker_url, sandbox, state, workers, tmp_path
):
    cache_proc, cache_url = start_redis(log_dir=str(tmp_path))
    port = int(cache_url.rsplit(":", 1)[1].split("/", 1)[0])
    restarted = None
    try:
        sandbox.configure(latency_ms=100, rate_5xx=0.3, seed=5)
        settings = make_settings(
            broker_url,
            sandbox.url,
            redis_url=cache_url,
            batch_size=20,
            concurrency=40,
            retry_base=1.0,
            retry_cap=2.0,
            max_attempts=50,
            store_retry_cap=2.0,
            visibility_timeout=30,  # Redis broker: the outage outlasts it twice over
        )
        t = settings.tenant
        events = [make_event("productView", f"out-{t}-{i}", f"p{i}") for i in range(1500)]
        with Publisher(settings) as pub:
            for event in events:
                pub.publish(event)
        worker = workers(settings, "-c", str(PROCESSES))
        wait_until(
            lambda: (
                state.zcard(keys.retry(t)) + state.zcard(keys.retry_lease(t)) >= 5
                and len(sandbox.requests()) >= 200
            ),
            60,
            "retries scheduled mid-drain",
        )
        in_retry = state.zcard(keys.retry(t)) + state.zcard(keys.retry_lease(t))
        cache_proc.signal(signal.SIGKILL)
        cache_proc.popen.wait(10)
        killed_at = time.time()
        time.sleep(OUTAGE)
        up_at = time.time()
        restarted, _ = start_redis(log_dir=str(tmp_path), port=port)
        sandbox.configure(rate_5xx=0.0)

        wanted = {_key(e.body()) for e in events}

        def delivered() -> set[str]:
            return {_key(r["body"]) for r in sandbox.requests() if r["status"] == 200}

        wait_until(lambda: wanted <= delivered(), 180, "every event delivered after the outage")
        log = sandbox.requests()
        during = [r for r in log if killed_at < r["t"] < up_at]
        # What may still reach the upstream once the cache is gone: the batches each pump
        # had in flight (its prefetch, 2 x batch_size) and one claimed retry batch.
        bound = PROCESSES * (2 * settings.batch_size + settings.batch_size)
        print(
            f"upstream calls during the {OUTAGE:.0f}s outage: {len(during)} (bound {bound}); "
            f"{in_retry} in the retry set at the kill"
        )
        assert len(during) <= bound, f"{len(during)} upstream calls during a {OUTAGE:.0f}s cache outage"
        repeats = Counter(_key(r["body"]) for r in during)
        assert max(repeats.values(), default=0) <= 1, "an in-flight event was sent twice during the outage"
        assert in_retry >= 5
        # Held batches were neither handed to another consumer (the pump re-stamps its
        # unacked deliveries; the outage outlasts the visibility timeout) nor
        # re-claimed from the retry set (the lease is extended): one answer per event.
        answered = Counter(_key(r["body"]) for r in log if r["status"] == 200)
        assert max(answered.values()) == 1, f"{sum(answered.values()) - len(wanted)} events answered twice"

        output = worker.output()
        assert worker.alive(), "the worker must ride out the outage"
        assert output.count("pump started") == PROCESSES and "pump stopped" not in output
        # Logged once per change of state and per pump, not per batch.
        assert 1 <= output.count("store unavailable") <= PROCESSES, output[-3000:]
        assert output.count("store answers again") == output.count("store unavailable"), output[-3000:]
        assert "Traceback" not in output, output[-3000:]

        wait_until(
            lambda: (
                int(state.hget(keys.stats(t), "cached") or 0) + int(state.hget(keys.stats(t), "stale") or 0)
                >= len(events)
            ),
            60,
            "every event counted as recorded",
        )
        assert int(state.hget(keys.stats(t), "dead") or 0) == 0
        # The cache came back empty and is filled again: rankings are the only thing it held.
        fresh = redis.Redis.from_url(cache_url)
        assert fresh.dbsize() > 0
        fresh.close()
    finally:
        for proc in (cache_proc, restarted):
            if proc is not None:
                proc.stop()

"""Every Lua script the project sends compiles on the real Redis; the retry lease holds.

The unit tests drive the batch processor through a fake store, so a script Redis
refuses (a Lua keyword used as a name, say) would only show as behaviour lost at
run time: the lease extension once failed that way, silently, and a retry batch
held through a cache outage was claimed and sent again by another worker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.worker import crowd, scripts
from fashionai_pipeline.worker.brokers import redis as redis_broker
from fashionai_pipeline.worker.store import RedisStore, StateRecord
from tests.conftest import STATE_URL

pytestmark = pytest.mark.integration

SCRIPTS = {
    "scripts.WRITE_RANKINGS": scripts.WRITE_RANKINGS,
    "scripts.SCHEDULE_RETRIES": scripts.SCHEDULE_RETRIES,
    "scripts.CLAIM_RETRIES": scripts.CLAIM_RETRIES,
    "scripts.EXTEND_LEASE": scripts.EXTEND_LEASE,
    "scripts.GCRA_ACQUIRE": scripts.GCRA_ACQUIRE,
    "scripts.PAUSE": scripts.PAUSE,
    "crowd.CAS": crowd.CAS,
    "brokers.redis.POP_BATCH": redis_broker.POP_BATCH,
    "brokers.redis.RESTORE_EXPIRED": redis_broker.RESTORE_EXPIRED,
    "brokers.redis.KEEP_ALIVE": redis_broker.KEEP_ALIVE,
}


def test_the_list_names_every_script_of_the_modules():
    found = {
        f"{prefix}.{name}"
        for prefix, module in (("scripts", scripts), ("crowd", crowd), ("brokers.redis", redis_broker))
        for name, value in vars(module).items()
        if isinstance(value, str) and "redis.call" in value
    }
    assert found == set(SCRIPTS)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(STATE_URL)
    yield c
    c.close()


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_the_script_compiles(client, name):
    sha = client.script_load(SCRIPTS[name])
    assert client.script_exists(sha) == [True]


def test_an_extended_lease_outlives_its_first_term_and_a_released_one_is_not_revived():
    async def scenario() -> None:
        state = aioredis.from_url(STATE_URL)
        store = RedisStore(state, state)
        tenant = "t" + uuid.uuid4().hex[:10]
        try:
            await state.zadd(keys.retry(tenant), {b"m1": time.time() - 1, b"m2": time.time() - 1})
            claimed = sorted(await store.claim_retries(tenant, 10, lease=1.0))
            assert claimed == [b"m1", b"m2"]
            await store.extend_lease(tenant, claimed, lease=30.0)
            await asyncio.sleep(1.3)  # past the first term
            assert await store.claim_retries(tenant, 10, lease=1.0) == [], "an extended lease was reclaimed"

            # Recorded: the lease of m1 is released; extending it afterwards must not bring it back.
            await store.commit(StateRecord(tenant, release=[b"m1"]), mark_ttl=60)
            await store.extend_lease(tenant, claimed, lease=30.0)
            assert await state.zrange(keys.retry_lease(tenant), 0, -1) == [b"m2"]

            # Not extended: the lease runs out and the retry is claimable again.
            await state.zadd(keys.retry_lease(tenant), {b"m2": time.time() - 0.1})
            assert await store.claim_retries(tenant, 10, lease=1.0) == [b"m2"]
        finally:
            await state.delete(keys.retry(tenant), keys.retry_lease(tenant), keys.stats(tenant))
            await state.aclose()

    asyncio.run(scenario())

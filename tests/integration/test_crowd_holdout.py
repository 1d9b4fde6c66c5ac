"""Crowd and holdout with real processes: a worker builds the crowd from several shoppers'
rankings and a new shopper is served it; the holdout is stable, near its fraction, labelled."""

from __future__ import annotations

import json

import pytest

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.event import make_event
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.producers.reader import RankingReader
from fashionai_pipeline.producers.serving import RankingServer
from tests.conftest import BROKERS, make_settings, wait_until

pytestmark = pytest.mark.integration

PRODUCT = "p0101"  # in the sandbox's demo catalog: a productView ranks its similar products
NATIVE = [f"p{i:04d}" for i in range(1, 3001)]  # the demo catalog, in the shop's own order


def _ranked(reader: RankingReader, session: str):
    return lambda: reader.get("productView", PRODUCT, session) is not None


def test_a_worker_builds_the_crowd_and_a_new_shopper_is_served_it(sandbox, workers, cache):
    settings = make_settings(BROKERS["redis"], sandbox.url, crowd=True, crowd_min_shoppers=3, crowd_ttl=600)
    workers(settings)
    shoppers = [f"crowd-{settings.tenant}-{i}" for i in range(3)]
    with Publisher(settings) as publisher, RankingReader(settings) as reader:
        # Two shoppers: not a crowd yet, so a newcomer still gets the native ordering.
        for session in shoppers[:2]:
            publisher.publish(make_event("productView", session, PRODUCT))
        for session in shoppers[:2]:
            wait_until(_ranked(reader, session), 30, "rankings")
        crowd_key = keys.crowd(settings.tenant, "productView", PRODUCT)
        wait_until(
            lambda: cache.exists(keys.crowd_state(settings.tenant, "productView", PRODUCT)), 30, "state"
        )
        assert cache.get(crowd_key) is None
        assert reader.serve("productView", PRODUCT, "newcomer-0", NATIVE).source == "native"

        publisher.publish(make_event("productView", shoppers[2], PRODUCT))
        wait_until(lambda: cache.get(crowd_key) is not None, 30, "the crowd ranking")

        mine = [reader.get("productView", PRODUCT, s) for s in shoppers]
        served = reader.serve("productView", PRODUCT, "newcomer-1", NATIVE)
        assert served.source == "crowd" and served.age_ms is not None and served.age_ms >= 0
        crowd = json.loads(cache.get(crowd_key))[1:]
        assert served.products[: len(crowd)] == crowd
        # It is what Fashion.AI ranked for them: every product came from their rankings.
        ranked_for_them = {p for r in mine if r is not None for p in r.products}
        assert set(crowd) <= ranked_for_them and crowd
        # Agreement at the top: the shoppers' common first product leads the crowd.
        firsts = [r.products[0] for r in mine if r is not None and r.products]
        if len(set(firsts)) == 1:
            assert crowd[0] == firsts[0]
        assert 0 < cache.pttl(crowd_key) <= 600_000  # the TTL, renewed by each update
        assert len(crowd) <= settings.crowd_size
        # A shopper with a ranking of their own is served theirs, not the crowd's.
        assert reader.serve("productView", PRODUCT, shoppers[0], NATIVE).source == "cached"
        # Off in the reader's settings: never read.
        with RankingReader(settings.model_copy(update={"crowd": False})) as plain:
            assert plain.serve("productView", PRODUCT, "newcomer-2", NATIVE).source == "native"
        assert reader.stats.snapshot()["served"]["crowd"] == 1


def test_without_the_setting_the_worker_builds_no_crowd(sandbox, workers, cache):
    settings = make_settings(BROKERS["redis"], sandbox.url)
    workers(settings)
    with Publisher(settings) as publisher, RankingReader(settings) as reader:
        for i in range(3):
            publisher.publish(make_event("productView", f"nocrowd-{settings.tenant}-{i}", PRODUCT))
        for i in range(3):
            wait_until(_ranked(reader, f"nocrowd-{settings.tenant}-{i}"), 30, "rankings")
    assert not cache.exists(keys.crowd_state(settings.tenant, "productView", PRODUCT))
    assert not cache.exists(keys.crowd(settings.tenant, "productView", PRODUCT))


def test_holdout_is_stable_near_its_fraction_and_labelled(cache):
    settings = make_settings(BROKERS["redis"], "http://127.0.0.1:9/unused", holdout=0.2, holdout_salt="exp-7",
                             read_timeout_ms=1000)  # fmt: skip
    sessions = [f"ho-{settings.tenant}-{i}" for i in range(1500)]
    pipe = cache.pipeline(transaction=False)
    for s in sessions:  # every shopper has a ranking: only the holdout can make a page native
        pipe.set(
            keys.ranking(settings.tenant, "productView", "p1", s, None), json.dumps([1, "n3"]), px=120_000
        )
    pipe.execute()
    native = ["n1", "n2", "n3"]
    with RankingReader(settings) as reader, RankingReader(settings) as other:
        first = {s: reader.serve("productView", "p1", s, native) for s in sessions}
        held = {s for s, served in first.items() if served.source == "holdout"}
        assert 0.17 <= len(held) / len(sessions) <= 0.23
        assert all(first[s].products == native and first[s].age_ms is None for s in held)
        assert all(first[s].source == "cached" and first[s].products[0] == "n3" for s in set(sessions) - held)
        # Stable: another reader (another process would be the same: a pure hash) agrees.
        assert {
            s for s in sessions if other.serve("productView", "p1", s, native).source == "holdout"
        } == held
        assert {s for s in sessions if reader.in_holdout(s)} == held
        assert reader.stats.snapshot()["served"]["holdout"] == len(held)
    # Publish-and-wait: a held-out session is published for, and answered at once as "holdout".
    with RankingServer(settings) as server:
        one = sorted(held)[0]
        served = server.view(make_event("productView", one, "p1"), native, wait_ms=2_000)
        assert served.source == "holdout" and served.message_id is not None

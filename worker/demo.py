"""`fashionai-pipeline demo`: the whole pipeline on this machine, end to end, with a story to judge.

It starts the sandbox (the embedded default upstream, with its demo fashion
catalog) and a worker, uses the local Redis (or a private redis-server when none
answers), and publishes two things through the real pipeline:

1. storefront traffic: concurrent shoppers browsing categories, opening
   products, shopping looks and seeing shelves;
2. one shopper's story, printed as it happens: Ana, logged in, browses floral
   summer dresses; her shelf and her shop-the-look lean that way; then the shop
   saves Shop the Look settings (looks under R$ 300) and the same look is asked
   again, so the effect of one type's settings shows, the other types untouched.

Every ranking shown is read back from the Redis cache the pipeline wrote (the
storefront's view); names and prices come from the sandbox's catalog. It waits
until every event is cached or dead-lettered, prints what happened, and stops
what it started.
"""

from __future__ import annotations

import random
import secrets
import sys
import time
import uuid
from dataclasses import dataclass

import httpx
import redis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.producers.reader import Ranking, RankingReader
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.sandbox.catalog import Catalog, Product
from fashionai_pipeline.sandbox.demo_catalog import demo_catalog
from fashionai_pipeline.worker.local import (
    Proc,
    redis_answers,
    scratch_dir,
    start_redis,
    start_sandbox,
    start_worker,
)

LOOK_BUDGET = 300  # R$: the Shop the Look price range the story saves mid-way


@dataclass(frozen=True)
class Visit:
    event_type: str
    item_id: str
    session_id: str
    user_id: str | None


def storefront_traffic(sessions: int, rng: random.Random, catalog: Catalog) -> list[Visit]:
    """Shopper sessions: browse categories, open products, shop a look, see a shelf.

    Sessions are interleaved, as concurrent shoppers are: each session's visits
    keep their order, and the sessions take turns.
    """
    run = uuid.uuid4().hex[:6]
    per_session = [_session_visits(n, rng, run, catalog) for n in range(sessions)]
    visits: list[Visit] = []
    while any(per_session):
        for queue in per_session:
            if queue:
                visits.append(queue.pop(0))
    return visits


def _session_visits(n: int, rng: random.Random, run: str, catalog: Catalog) -> list[Visit]:
    session = f"demo-{run}-s{n:03d}"
    user = f"u{rng.randint(1, 40)}" if rng.random() < 0.35 else None
    visits = [Visit("customShelf", "", session, user)]  # the home page, before any history
    for _ in range(rng.randint(1, 2)):
        category = rng.choice(catalog.categories)
        visits.append(Visit("categoryView", category, session, user))
        for _ in range(rng.randint(1, 4)):
            product = catalog.products[rng.choice(catalog.members[category])].id
            visits.append(Visit("productView", product, session, user))
            if rng.random() < 0.3:
                visits.append(Visit("shopTheLook", product, session, user))
    visits.append(Visit("customShelf", "", session, user))
    return visits


def _money(cents: int) -> str:
    return f"R$ {cents / 100:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")


def _card(product: Product | None) -> str:
    if product is None:
        return "(not in the catalog)"
    sale = f" ({product.discount:g}% off)" if product.discount else ""
    return f"{product.name} [{product.category}] {_money(product.sale_cents)}{sale}"


class _Story:
    """Ana's visit, published through the pipeline and read back from the cache."""

    def __init__(
        self, publisher: Publisher, reader: RankingReader, control: httpx.Client, catalog: Catalog, run: str
    ) -> None:
        self.publisher = publisher
        self.reader = reader
        self.control = control
        self.catalog = catalog
        self.session = f"ana-{run}"
        self.user = f"ana-{run}"
        self.published = 0

    def ask(self, event_type: str, item_id: str = "", timeout: float = 30.0) -> Ranking | None:
        """Publish one event and wait for its ranking to reach the cache."""
        sent = time.time()
        self.publisher.publish(
            {"userId": self.user, "sessionId": self.session, "eventType": event_type, "data": {"id": item_id}}
        )
        self.published += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ranking = self.reader.get(event_type, item_id, self.session, self.user)
            if ranking is not None and ranking.enqueued_at >= sent - 0.01:
                return ranking
            time.sleep(0.05)
        print(f"    (no ranking within {timeout:.0f} s)")
        return None

    def products(self, ranking: Ranking | None) -> list[Product]:
        found = (self.catalog.get(pid) for pid in (ranking.products if ranking else []))
        return [p for p in found if p is not None]

    def show(self, ranking: Ranking | None, count: int = 6) -> list[Product]:
        products = self.products(ranking)
        if not products:
            print("    -> empty: not enough data about Ana yet, so the shop shows its own ordering")
        for p in products[:count]:
            print(f"    -> {_card(p)}")
        if len(products) > count:
            print(f"       ... {len(products) - count} more")
        return products

    def run(self) -> None:
        florals = [
            p
            for p in self.catalog.products
            if p.category == "dresses" and p.pattern == "floral" and p.season == "summer" and p.units > 0
        ][:3]
        print("\nAna's visit (logged in), every ranking read back from the cache")
        print("  Ana opens the home page (customShelf):")
        self.show(self.ask("customShelf"))
        print("  she opens the Dresses category (categoryView dresses):")
        self.show(self.ask("categoryView", "dresses"), 3)
        for dress in florals:
            print(f"  she opens {_card(dress)} (productView); similar products:")
            self.show(self.ask("productView", dress.id), 3)
        print("  back on the home page, her shelf leans on what she browsed (customShelf):")
        shelf = self.show(self.ask("customShelf"), 8)
        if shelf:
            floral = sum(p.pattern == "floral" for p in shelf)
            summer = sum(p.season == "summer" for p in shelf)
            dresses = sum(p.category == "dresses" for p in shelf)
            print(f"    ({floral} of {len(shelf)} floral, {summer} summer, {dresses} dresses)")
        main = florals[-1]
        print(f"  she presses 'shop the look' on {main.name} (shopTheLook):")
        before = self.show(self.ask("shopTheLook", main.id), 8)
        print(
            f"  the shop saves its Shop the Look settings: price range R$ 0 - {LOOK_BUDGET} "
            "(Product and Category settings untouched)"
        )
        budget = {"priceRange": {"mode": "custom", "min": 0, "max": LOOK_BUDGET}}
        self.control.put("/_sandbox/settings/shopTheLook", json=budget).raise_for_status()
        print("  Ana asks for the same look again:")
        after = self.show(self.ask("shopTheLook", main.id), 8)
        if before and after:
            print(
                f"    (before: most expensive piece {_money(max(p.sale_cents for p in before))};"
                f" now {_money(max(p.sale_cents for p in after))}, every piece within R$ {LOOK_BUDGET})"
            )
        saved = self.control.get("/_sandbox/settings").json()["settings"]
        print(
            f"    (Product settings still: discount {saved['product']['discount']},"
            f" price range {saved['product']['priceRange']['mode']})"
        )
        self.control.delete("/_sandbox/settings/shopTheLook").raise_for_status()
        print("  the shop clears the Shop the Look settings again")


def run_demo(base: Settings, *, sessions: int = 60, timeout: float = 120.0) -> int:
    started: list[Proc] = []
    log_dir = scratch_dir("fashionai-demo-")
    rng = random.Random(7)
    try:
        redis_url = base.redis_url
        broker_url = base.broker_url
        if not redis_answers(redis_url):
            try:
                proc, private = start_redis(log_dir=log_dir)
            except FileNotFoundError:
                print(
                    f"No Redis answers at {redis_url} and no redis-server is on the PATH.\n"
                    "Fix: start Redis (e.g. `apt-get install redis-server && redis-server --daemonize yes`)"
                    " or set FASHIONAI_REDIS_URL and FASHIONAI_BROKER_URL.",
                    file=sys.stderr,
                )
                return 2
            started.append(proc)
            redis_url = private.replace("/0", "/1")
            broker_url = private
            print(f"started a private redis-server at {private}")
        token = "demo-" + secrets.token_hex(12)
        sandbox = start_sandbox(
            token, log_dir=log_dir, knobs=["--latency-ms", "40", "--rate-5xx", "0.03", "--seed", "7"]
        )
        started.append(sandbox)
        settings = base.model_copy(
            update={
                "api_url": sandbox.extra["url"],
                "app_token": base.app_token.__class__(token),
                "redis_url": redis_url,
                "broker_url": broker_url,
                # A private Redis replaces the configured one: the state store with it.
                "state_url": base.state_url if broker_url == base.broker_url else None,
                "queue": f"fashionai.demo.{uuid.uuid4().hex[:8]}",
                "tenant": "demo",
                "retry_base": 0.2,
                "log_level": "WARNING",
            }
        )
        # Counters and latency samples live in the state store (docs/ARCHITECTURE.md).
        state = redis.Redis.from_url(settings.state_store_url(), decode_responses=True)
        state.delete(keys.stats("demo"), keys.latency("demo"))
        catalog = demo_catalog()
        summary = httpx.get(f"{sandbox.extra['base_url']}/_sandbox/catalog", timeout=10).json()
        print(
            f"sandbox at {sandbox.extra['base_url']} (40 ms latency, 3% 5xx), catalog of "
            f"{summary['products']} products in {len(summary['categories'])} categories; starting a worker..."
        )
        worker = start_worker(settings, log_dir=log_dir, args=["-c", "2"])
        started.append(worker)

        visits = storefront_traffic(sessions, rng, catalog)
        publisher = Publisher(settings)
        t0 = time.perf_counter()
        for i, v in enumerate(visits):
            user = {"userId": v.user_id} if v.user_id else {}
            publisher.publish(
                {**user, "sessionId": v.session_id, "eventType": v.event_type, "data": {"id": v.item_id}}
            )
            # About 200 page views a second across the store, as live traffic arrives.
            time.sleep(max(0.0, t0 + (i + 1) / 200 - time.perf_counter()))
        publish_s = time.perf_counter() - t0

        reader = RankingReader(settings)
        with httpx.Client(base_url=sandbox.extra["base_url"], timeout=10) as control:
            story = _Story(publisher, reader, control, catalog, uuid.uuid4().hex[:6])
            story.run()
        total = len(visits) + story.published
        print(
            f"\npublished {total} events: {len(visits)} from {sessions} concurrent shoppers over "
            f"{publish_s:.1f} s, {story.published} from Ana's visit"
        )

        stats = _wait(state, total, timeout)
        _report(stats, total, state, reader, catalog, visits)
        reader.close()
        state.close()
        if _settled(stats) < total:
            print(
                f"NOT everything was delivered within {timeout:.0f}s; see logs in {log_dir}", file=sys.stderr
            )
            return 1
        return 0
    finally:
        for proc in reversed(started):
            proc.stop()
        print("stopped everything the demo started")


def _settled(stats: dict[str, int]) -> int:
    """Events whose outcome is recorded: cached, superseded by a newer ranking, or dead-lettered."""
    return stats.get("cached", 0) + stats.get("stale", 0) + stats.get("dead", 0)


def _wait(state: redis.Redis, expected: int, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    stats: dict[str, int] = {}
    while time.monotonic() < deadline:
        stats = {str(k): int(v) for k, v in state.hgetall(keys.stats("demo")).items()}
        if _settled(stats) >= expected:
            break
        time.sleep(0.2)
    return stats


def _report(
    stats: dict[str, int],
    published: int,
    state: redis.Redis,
    reader: RankingReader,
    catalog: Catalog,
    visits: list[Visit],
) -> None:
    # Latency samples live in the state store beside the counters, not in the cache.
    lat = sorted(float(x) for x in state.lrange(keys.latency("demo"), 0, -1))

    def pct(p: float) -> str:
        return f"{lat[min(len(lat) - 1, int(p * len(lat)))]:.0f} ms" if lat else "n/a"

    rows = [
        ("published", published),
        ("delivered (upstream calls answered 2xx)", stats.get("delivered", 0)),
        ("cached rankings written", stats.get("cached", 0)),
        ("  of which empty (not enough data yet)", stats.get("empty", 0)),
        ("superseded by a newer ranking (not written)", stats.get("stale", 0)),
        ("coalesced duplicates", stats.get("coalesced", 0)),
        ("retried", stats.get("retried", 0)),
        ("failed (dead-lettered)", stats.get("dead", 0) + stats.get("invalid", 0)),
    ]
    print("\nwhat happened")
    for label, value in rows:
        print(f"  {label:<42} {value:>6}")
    print(f"  {'enqueue -> cache latency p50 / p99':<42} {pct(0.5):>6} / {pct(0.99)}")
    print("\na few cached rankings of the other shoppers (the top 3, by name)")
    examples: list[Visit] = []
    seen_types: set[str] = set()
    for v in visits[::-1]:  # the latest visit of each type
        if v.event_type not in seen_types:
            seen_types.add(v.event_type)
            examples.append(v)
    for v in examples:
        ranking = reader.get(v.event_type, v.item_id, v.session_id, v.user_id)
        if ranking is None:
            continue
        what = catalog.get(v.item_id)
        asked = what.name if what is not None else (v.item_id or "(the home page)")
        top = "; ".join(_card(catalog.get(p)) for p in ranking.products[:3]) or "(empty: not enough data yet)"
        print(f"  {v.event_type:<12} {asked}\n      -> {top}")
    # Each session's first shelf was empty (the AI knew nothing yet) and was then
    # replaced by a newer one; a shopper who just arrived shows the fallback.
    native = [f"p{n:04d}" for n in range(1, 7)]
    fresh = reader.order("customShelf", "", f"just-arrived-{uuid.uuid4().hex[:6]}", native)
    print(f"  {'customShelf':<12} a shopper who just arrived -> no ranking yet; native ordering {fresh}")

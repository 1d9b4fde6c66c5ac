"""The reader's sans-I/O core: every decision of a read, as plans that its shells run.

`ReaderCore.serve_plan(query)` and `get_plan(key)` are generators: they yield the I/O they
need — a `Command` on the ranking cache or the storefront's Redis (read-only, safe to send
twice), or a `Call` of the caller's stock check or facts source — and are sent each answer, or
the exception instead of it. They decide everything else: the holdout, the circuit breakers,
the sources ("fresh", "cached", "crowd", "native", "fallback", "holdout"), the local checks
(producers.stock), the counts (producers.attribution). producers.reader's `RankingReader` and
`AsyncRankingReader` only run them. Also here: the ranking format (`Ranking`,
`decode_ranking`) and the merge with a page's native ordering.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import filterfalse
from typing import Any, Final

import redis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.attribution import ReadOutcome, ReadStats, Served, Source, Store
from fashionai_pipeline.producers.breaker import Breaker
from fashionai_pipeline.producers.direct import NoReply
from fashionai_pipeline.producers.errors import CacheUnavailable, ConfigurationError
from fashionai_pipeline.producers.event import EVENT_TYPES
from fashionai_pipeline.producers.holdout import Holdout
from fashionai_pipeline.producers.recsettings import ProductFacts, RecommendationSettings, TypeSettings
from fashionai_pipeline.producers.settings import Settings, redact_url
from fashionai_pipeline.producers.stock import (
    FactsSource,
    PageFill,
    RedisFacts,
    RedisStock,
    StockCheck,
    filter_ranked,
    settings_for,
)
from fashionai_pipeline.producers.transport import Failures, Tuning, cache_failures

log = logging.getLogger("fashionai.reader")

Filters = RecommendationSettings | TypeSettings


@dataclass(frozen=True, slots=True)
class Ranking:
    """A cached ranking: product ids best first, and when its event was enqueued."""

    products: list[str]
    enqueued_at: float

    @property
    def empty(self) -> bool:
        """True while Fashion.AI lacks data for this shopper (docs/UPSTREAM.md: use native ordering)."""
        return not self.products


def decode_ranking(raw: bytes | str) -> Ranking:
    """A cached value as a Ranking. Raises CacheUnavailable for a value not in the reader's format."""
    try:
        values = json.loads(raw)
        products = values[1:]
        if not all(map(str.__instancecheck__, products)):  # the worker writes ids as strings
            products = [str(p) for p in products]
        return Ranking(products=products, enqueued_at=values[0] / 1000.0)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise CacheUnavailable("ranking cache holds a value that is not a ranking") from exc


def merge(ranked: Sequence[str], native: Sequence[str]) -> list[str]:
    """Ranked ids that the page has, in ranked order, then the rest in native order.

    Ids the storefront does not list in `native` (out of stock, unknown, filtered)
    are left out: the native list is the authority on what can be rendered. Each id
    appears once: a repeat in either list keeps its first place.
    """
    page = dict.fromkeys(native)  # the native order, each id once
    if not ranked:
        return list(page)
    chosen = page.keys() & ranked
    if not chosen:
        return list(page)
    head = [pid for pid in dict.fromkeys(ranked) if pid in chosen]
    head.extend(filterfalse(chosen.__contains__, page))
    return head


# -- the plan's I/O requests -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """One Redis command (read-only, safe to send twice) on the cache or the storefront's Redis."""

    store: Store
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Prefetched:
    """The reply to the plan's first cache command, sent before the plan ran (with the page's
    publish, in one round trip: producers.integrations): Redis's reply, or the CacheUnavailable
    it came to. It stands in for that command's I/O, through the same breaker and decoding."""

    args: tuple[str, ...]
    reply: Any


@dataclass(frozen=True, slots=True)
class Call:
    """Call the caller's stock check or facts source with `ids` (awaited if it is async)."""

    fn: Callable[[Sequence[str]], Any]
    ids: list[str]


Plan = Generator[Command | Call, Any, Any]


@dataclass(frozen=True, slots=True)
class Query:
    """One `serve`: the key, the page, the checks, and for publish-and-wait what it knows."""

    event_type: str
    item_id: str
    session_id: str
    user_id: str | None
    tenant: str | None
    native: Sequence[str] | None
    page_size: int | None = None
    stock: StockCheck | None = None
    facts: FactsSource | None = None
    filters: Filters | None = None
    since_ms: int | None = None  # publish-and-wait: a ranking enqueued at or after this is "fresh"
    notice: Ranking | None = None  # publish-and-wait: the ranking its notice carried (no read)
    message_id: str | None = None


_KNOWN_NO_REPLY: Final = (NoReply, redis.TimeoutError, TimeoutError)


class _ShortCircuit(CacheUnavailable):
    """Not tried: the breaker of that Redis is open."""


def read_outcome(exc: CacheUnavailable) -> ReadOutcome:
    """What a failed read was: short-circuited, no answer within the bound, or unavailable."""
    if isinstance(exc, _ShortCircuit):
        return "short_circuit"
    return "timeout" if isinstance(exc.__cause__, _KNOWN_NO_REPLY) else "unavailable"


class ReaderCore:
    """Sans-I/O: every decision of a read, as plans the shells run (module doc)."""

    def __init__(
        self,
        settings: Settings,
        *,
        stock: StockCheck | None = None,
        facts: FactsSource | None = None,
        filters: Filters | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.tuning = Tuning.of(settings)
        self.clock = clock
        self.stats = ReadStats()
        self.bound = settings.read_timeout_ms / 1000
        self.holdout = Holdout(settings.holdout, settings.holdout_salt)
        self.breakers: dict[Store, Breaker] = {
            store: Breaker(
                failures=settings.read_breaker_failures,
                open_for=settings.read_breaker_open_ms / 1000,
                probe_for=max(1.0, 4 * self.bound),
                clock=monotonic,
                listener=self._listener(store),
            )
            for store in ("cache", "storefront")
        }
        tenant = settings.tenant
        if settings.storefront_redis_url and settings.storefront_redis_url == settings.redis_url:
            raise ConfigurationError(
                "FASHIONAI_STOREFRONT_REDIS_URL: must not be the ranking cache"
                " (FASHIONAI_REDIS_URL), which may evict"
            )
        if stock is None and settings.stock_layout != "off":
            stock = RedisStock(settings.stock_key or keys.stock(tenant), settings.stock_layout)
        if facts is None and settings.facts_layout != "off":
            facts = RedisFacts(settings.facts_key or keys.facts(tenant))
        self.stock, self.facts = stock, facts
        # The settings' default keys are per tenant: a call for another tenant reads its own.
        self._tenant_keys = (
            settings.stock_layout != "off" and not settings.stock_key and isinstance(stock, RedisStock),
            settings.facts_layout != "off" and not settings.facts_key and isinstance(facts, RedisFacts),
        )
        self.filters = filters if filters is not None else settings.recommendation_filters()
        if not settings.storefront_redis_url and (
            isinstance(stock, RedisStock) or isinstance(facts, RedisFacts)
        ):
            raise ConfigurationError(
                "FASHIONAI_STOREFRONT_REDIS_URL: needed for a Redis stock check or facts"
            )

    def _listener(self, store: Store) -> Callable[[bool], None]:
        what = "ranking cache" if store == "cache" else "storefront Redis"

        def changed(is_open: bool) -> None:
            self.stats.breaker_changed(store, is_open)
            if is_open:
                log.warning(
                    "%s is failing: reads short-circuited, one probe every %d ms until it answers",
                    what,
                    self.settings.read_breaker_open_ms,
                )
            else:
                log.info("%s answers again: reads resumed", what)

        return changed

    def transport(self, store: Store) -> dict[str, Any]:
        """How a shell builds the transport of `store`: the read bound is the whole call's budget."""
        if store == "cache":
            url, name, failures = self.settings.redis_url, "fashionai-reader", cache_failures()
        else:
            url = self.settings.storefront_redis_url
            failures = Failures(f"storefront redis {redact_url(url)}", CacheUnavailable, CacheUnavailable)
            name = "fashionai-stock"
        return {
            "url": url,
            "timeout": self.bound,
            "budget": self.bound,
            "name": name,
            "tuning": self.tuning,
            "failures": failures,
        }

    def key(
        self, event_type: str, item_id: str, session_id: str, user_id: str | None, tenant: str | None
    ) -> str:
        """The ranking's key; ValueError naming the first argument no ranking can have (check_read)."""
        check_read(event_type, item_id, session_id, user_id, tenant)
        return keys.ranking(tenant or self.settings.tenant, event_type, item_id, session_id, user_id)

    # -- plans -------------------------------------------------------------------------

    def _command(self, store: Store, args: tuple[str, ...], prefetched: Prefetched | None = None) -> Plan:
        """Run one command through the store's breaker: the reply, or a CacheUnavailable
        (returned); `prefetched` answers it without I/O when it is that command."""
        breaker = self.breakers[store]
        if not breaker.allow():
            return _ShortCircuit(
                f"{'ranking cache' if store == 'cache' else 'storefront redis'}: circuit open"
            )
        if prefetched is not None and store == "cache" and prefetched.args == args:
            reply = prefetched.reply
        else:
            reply = yield Command(store, args)
        if isinstance(reply, CacheUnavailable) and not isinstance(reply.__cause__, redis.ResponseError):
            breaker.failure()
        else:
            breaker.success()  # an error reply (WRONGTYPE...) is Redis answering: no reason to stop asking
        return reply

    def get_plan(self, key: str) -> Plan:
        """The ranking at `key`, None for none; raises CacheUnavailable (counted)."""
        reply = yield from self._command("cache", ("GET", key))
        if isinstance(reply, CacheUnavailable):
            self.stats.count_read(read_outcome(reply))
            raise reply
        try:
            ranking = None if reply is None else decode_ranking(reply)
        except CacheUnavailable:
            self.stats.count_read("invalid")
            raise
        self.stats.count_read("miss" if ranking is None else "empty" if ranking.empty else "hit")
        return ranking

    def first_read(self, q: Query) -> tuple[str, ...] | None:
        """The cache command `serve_plan(q)` sends first, or None when it sends none at once
        (the holdout, a notice, the cache's breaker open): what a caller may send ahead."""
        if q.session_id in self.holdout or q.notice is not None or self.breakers["cache"].is_open:
            return None
        return self._find_args(q)[0]

    def _find_args(self, q: Query) -> tuple[tuple[str, ...], str | None]:
        """The shopper's ranking read (with the crowd's key when the crowd is on), and the crowd key."""
        crowd_key = None
        if self.settings.crowd:
            crowd_key = keys.crowd(q.tenant or self.settings.tenant, q.event_type, q.item_id)
        key = self.key(q.event_type, q.item_id, q.session_id, q.user_id, q.tenant)
        return (("GET", key) if crowd_key is None else ("MGET", key, crowd_key)), crowd_key

    def serve_plan(self, q: Query, prefetched: Prefetched | None = None) -> Plan:
        """The `Served` for a query (module doc). Never raises for I/O. `prefetched`: the
        reply to `first_read(q)`, sent ahead."""
        check_page_size(q.page_size)
        now = self.clock()
        ranked: list[str] | None = None
        age: int | None = None
        source: Source
        if q.session_id in self.holdout:
            source = "holdout"
        else:
            source, ranking, crowd = yield from self._find(q, prefetched)
            # The ranked ids may repeat; merge keeps the first of each, so only the paths
            # that do not merge (filters, no native list) take them out here.
            if ranking is not None and not ranking.empty:
                ranked, age = ranking.products, _age(ranking, now)
                fresh = q.since_ms is not None and round(ranking.enqueued_at * 1000) >= q.since_ms
                source = "fresh" if fresh else "cached"
            elif crowd is not None and not crowd.empty:
                ranked, age, source = crowd.products, _age(crowd, now), "crowd"
        if ranked is not None and (q.filters is not None or self.filters is not None):
            ranked = yield from self._filtered(q, list(dict.fromkeys(ranked)))
        if q.native is None:
            order = list(dict.fromkeys(ranked)) if ranked else []
        else:
            order = merge(ranked or (), q.native)  # no ranking: the native order, each id once
        if q.stock is not None or self.stock is not None:
            products = yield from self._in_stock(q, order)
        else:
            products = order if q.page_size is None else order[: q.page_size]
        self.stats.count_served(source)
        return Served(products, source, age, q.message_id)

    def _find(self, q: Query, prefetched: Prefetched | None = None) -> Plan:
        """(source if nothing is usable, the shopper's ranking, the crowd ranking)."""
        args, crowd_key = self._find_args(q)
        if q.notice is not None:
            if not q.notice.empty or crowd_key is None:
                return "native", q.notice, None
            reply = yield from self._command("cache", ("GET", crowd_key))
            return "native", q.notice, _crowd(None if isinstance(reply, CacheUnavailable) else reply)
        reply = yield from self._command("cache", args, prefetched)
        if isinstance(reply, CacheUnavailable):
            self.stats.count_read(read_outcome(reply))
            return "fallback", None, None
        own, crowd_raw = (reply, None) if crowd_key is None else (reply[0], reply[1])
        crowd = _crowd(crowd_raw)
        if own is None:
            self.stats.count_read("miss")
            return "native", None, crowd
        try:
            ranking = decode_ranking(own)
        except CacheUnavailable:
            self.stats.count_read("invalid")
            return "fallback", None, crowd
        self.stats.count_read("empty" if ranking.empty else "hit")
        return "native", ranking, crowd

    def _filtered(self, q: Query, ranked: list[str]) -> Plan:
        """The ranked ids that pass the local settings of the page's type (module doc of stock)."""
        chosen = settings_for(q.filters if q.filters is not None else self.filters, q.event_type)
        source = q.facts if q.facts is not None else self.facts
        if isinstance(source, RedisFacts) and q.facts is None and self._tenant_keys[1] and q.tenant:
            source = replace(source, key=keys.facts(q.tenant))
        if chosen is None or source is None or not ranked:
            return ranked
        facts = yield from self._check("facts", source, ranked)
        if facts is None:
            return ranked
        kept, dropped, missing = filter_ranked(chosen, ranked, facts)
        self.stats.count_removed("settings", dropped)
        self.stats.count_facts_missing(missing)
        return kept

    def _in_stock(self, q: Query, order: list[str]) -> Plan:
        check = q.stock if q.stock is not None else self.stock
        if isinstance(check, RedisStock) and q.stock is None and self._tenant_keys[0] and q.tenant:
            check = replace(check, key=keys.stock(q.tenant))
        if check is None:
            return order if q.page_size is None else order[: q.page_size]
        fill = PageFill(order, q.page_size)
        while not fill.done:
            chunk = fill.next_chunk()
            available = yield from self._check("stock", check, chunk)
            if available is None:
                fill.unchecked(chunk)
                break
            fill.take(chunk, available)
        self.stats.count_removed("stock", fill.removed)
        return fill.result()

    def _check(self, which: str, source: Any, ids: list[str]) -> Plan:
        """Ask a stock check or facts source about `ids`: its answer, or None when it failed (counted)."""
        check: Any = "stock" if which == "stock" else "facts"
        if isinstance(source, RedisStock | RedisFacts):
            reply = yield from self._command("storefront", source.command(ids))
            if isinstance(reply, CacheUnavailable):
                self.stats.count_check(
                    check, "short_circuit" if isinstance(reply, _ShortCircuit) else "failed"
                )
                return None
            try:
                answer: Any = (
                    source.available(ids, reply)
                    if isinstance(source, RedisStock)
                    else source.decode(ids, reply)
                )
            except ValueError:
                self.stats.count_check(check, "failed")
                return None
        else:
            answer = yield Call(source, ids)
            if not isinstance(answer, BaseException):
                try:
                    answer = _stock_answer(answer) if check == "stock" else _facts_answer(answer, ids)
                except Exception as exc:  # the caller's code answered something unusable
                    answer = exc
            if isinstance(answer, BaseException):
                name = type(answer).__name__
                log.warning("the %s callable failed (%s: %s); nothing removed for it", which, name, answer)
                self.stats.count_check(check, "failed")
                return None
        self.stats.count_check(check, "ok")
        return answer


def _stock_answer(answer: Any) -> set[str]:
    """A stock callable's answer as the set of available ids. Raises TypeError for one that is
    not an iterable of ids (a str would be read as its characters; None, a count, a coroutine
    from a sync reader's check are mistakes), or whatever iterating it raised."""
    if isinstance(answer, str | bytes) or inspect.isawaitable(answer) or not isinstance(answer, Iterable):
        _discard(answer)
        name = type(answer).__name__
        raise TypeError(f"a stock check returns the available ids (an iterable of str), not {name}")
    return set(answer)


def _facts_answer(answer: Any, ids: Sequence[str]) -> dict[str, ProductFacts]:
    """A facts callable's answer, the entries for `ids`. Raises TypeError for one that is not
    a mapping of id -> ProductFacts."""
    if not isinstance(answer, Mapping):
        _discard(answer)
        name = type(answer).__name__
        raise TypeError(f"a facts source returns a mapping of id -> ProductFacts, not {name}")
    out = {pid: answer[pid] for pid in ids if pid in answer}
    for pid, facts in out.items():
        if not isinstance(facts, ProductFacts):
            raise TypeError(f"facts of {pid!r}: a ProductFacts, not {type(facts).__name__}")
    return out


def _discard(answer: Any) -> None:
    """Close a coroutine a sync reader cannot await (no "never awaited" warning later)."""
    if inspect.iscoroutine(answer):
        answer.close()


def _age(ranking: Ranking, now: float) -> int:
    return max(0, round(now * 1000) - round(ranking.enqueued_at * 1000))


def _crowd(raw: Any) -> Ranking | None:
    """A crowd value as a Ranking; None for none or a value that does not decode (not served)."""
    if raw is None:
        return None
    try:
        return decode_ranking(raw)
    except CacheUnavailable:
        return None


_READ_TYPES: Final = frozenset(EVENT_TYPES)


def check_read(
    event_type: object, item_id: object, session_id: object, user_id: object, tenant: object
) -> None:
    """ValueError naming the first of a read's arguments that no ranking can have: an event
    type the API does not have, an id that is not text (a lone surrogate is not), an empty
    session or user id (the event contract refuses both, so no event made that ranking)."""
    if (
        type(event_type) is str
        and type(item_id) is str
        and type(session_id) is str
        and session_id
        and (user_id is None or (type(user_id) is str and user_id))
        and (tenant is None or type(tenant) is str)
        and event_type in _READ_TYPES
        and item_id.isascii()
        and session_id.isascii()
        and (user_id is None or user_id.isascii())
    ):
        return  # the usual read: nothing more to look at
    if not isinstance(event_type, str) or event_type not in _READ_TYPES:
        raise ValueError(f"event_type: must be one of {', '.join(EVENT_TYPES)}")
    for name, value, empty in (
        ("item_id", item_id, True), ("session_id", session_id, False), ("user_id", user_id, False),
        ("tenant", tenant, True),
    ):  # fmt: skip
        if value is None and name in ("user_id", "tenant"):
            continue
        if not isinstance(value, str) or (not value and not empty):
            raise ValueError(f"{name}: must be a {'' if empty else 'non-empty '}string")
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError(f"{name}: must be valid Unicode text (it holds a lone surrogate)") from None


def check_page_size(page_size: object) -> None:
    """ValueError naming `page_size` unless it is None or a whole number >= 1."""
    if page_size is not None and (
        isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1
    ):
        raise ValueError("page_size: must be a whole number >= 1")


def run_plan(plan: Plan, do: Callable[[Command | Call], Any]) -> Any:
    """Drive a plan synchronously: each request's answer sent back (an exception as the value)."""
    try:
        request = next(plan)
        while True:
            request = plan.send(do(request))
    except StopIteration as stop:
        return stop.value

"""Publish-and-wait's sans-I/O core: every decision of a view or a waiting read, as plans.

`ServerCore.view_plan(...)` and `read_plan(...)` are generators, like the reader's
(producers.readcore): they yield the I/O they need — `Publish` the event, `Expect` its
notice or `Watch` a ranking key's channel, `Wait` for the hub's subscription or for the
notice, `Serve` a query through the reader — and are sent each answer. They decide
everything else: the checks of the arguments, the deadline, whether to wait at all (the
holdout, an open breaker, a hub that cannot listen, a cache that does not answer, a publish
that was dropped), the message id an answer shows, the query the reader serves and when a
ranking waited for is served. producers.serving's `RankingServer` and `AsyncRankingServer`
only do the requests.

A notice comes through the cache Redis (the worker writes and announces rankings there), so
a view waits for one only while that can happen: not while the cache's breaker is open, not
while the hub says "down" (refused, failing, its subscription lost or never confirmed), and
not when the hub has not confirmed its subscription within the reader's read bound and a
read of the cache then fails. In each case the view publishes its event (without asking for
a notice) and serves one read's answer: the best older ranking it could read, else the
fallback, counted by the reader like any read. A waiter whose hub loses its connection
meanwhile is released by the hub (producers.waiters) and reads the cache once.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, Protocol

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.attribution import Served
from fashionai_pipeline.producers.errors import CacheUnavailable, PublishUnknown
from fashionai_pipeline.producers.event import Event, parse_event
from fashionai_pipeline.producers.message import new_id
from fashionai_pipeline.producers.publishing import Receipt
from fashionai_pipeline.producers.readcore import Filters, Query, Ranking, check_page_size, decode_ranking
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.producers.stock import FactsSource, StockCheck

MAX_WAIT_MS: Final = 5_000  # a page that waits longer than this has gone out anyway


def check_wait(wait_ms: int) -> float:
    """`wait_ms` as seconds; ValueError naming the field outside 0..MAX_WAIT_MS."""
    if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or not 0 <= wait_ms <= MAX_WAIT_MS:
        raise ValueError(f"wait_ms: must be an integer from 0 to {MAX_WAIT_MS}")
    return wait_ms / 1000


# -- the plans' I/O requests -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish `event` (publish()'s arguments): answered with its Receipt, or with the
    PublishUnknown it raised (any other error of the publisher propagates)."""

    event: Event
    tenant: str | None
    message_id: str | None = None
    notify: str | None = None


@dataclass(frozen=True, slots=True)
class Expect:
    """Listen for the notice of `message_id` until the plan ends (sent before its publish)."""

    message_id: str


@dataclass(frozen=True, slots=True)
class Watch:
    """Subscribe to `key`'s channel until the plan ends: answered True once Redis confirmed it
    within `timeout` seconds, else False (then nothing is watched)."""

    key: str
    timeout: float


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait at most `timeout` seconds: "ready", for the hub's verdict on its subscription
    (answered with its state, producers.waiters.HubState: "listening", "down", or still
    "connecting"); "notice", for the notice expected or watched (answered with its value, or
    None: none within `timeout`, or the hub lost its connection)."""

    until: Literal["ready", "notice"]
    timeout: float


@dataclass(frozen=True, slots=True)
class Serve:
    """The reader's `serve_query(query)`: answered with its Served."""

    query: Query


Request = Publish | Expect | Watch | Wait | Serve
Plan = Generator[Request, Any, Served]


class Gate(Protocol):
    """What a plan asks the reader without I/O (both readers of producers.reader answer it)."""

    def in_holdout(self, session_id: str) -> bool: ...

    @property
    def cache_open(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Checks:
    """A call's page size and local checks (producers.stock); None: the reader's own."""

    page_size: int | None = None
    stock: StockCheck | None = None
    facts: FactsSource | None = None
    filters: Filters | None = None

    def query(
        self,
        ev: Event,
        native: Sequence[str] | None,
        tenant: str | None,
        *,
        since_ms: int | None = None,
        notice: Ranking | None = None,
        message_id: str | None = None,
    ) -> Query:
        return Query(
            ev.eventType, ev.data.id, ev.sessionId, ev.userId, tenant, native, self.page_size,
            self.stock, self.facts, self.filters, since_ms, notice, message_id,
        )  # fmt: skip


_WAITABLE: Final = frozenset({"published", "unknown"})


class ServerCore:
    """Sans-I/O: every decision of publish-and-wait, as plans the servers run (module doc)."""

    def __init__(self, settings: Settings, reader: Gate) -> None:
        self.settings = settings
        self.reader = reader
        self.read_bound = settings.read_timeout_ms / 1000

    def view_plan(
        self,
        event: Event | Mapping[str, Any],
        native: Sequence[str] | None,
        wait_ms: int,
        tenant: str | None,
        checks: Checks,
        token: str,
    ) -> Plan:
        """RankingServer.view (its doc), the notice asked for with the hub's `token`.

        Waits for a notice only while one can come (module doc). Raises InvalidEvent or
        ValueError before any request.
        """
        ev = parse_event(event)
        check_page_size(checks.page_size)
        started = time.monotonic()
        deadline = started + check_wait(wait_ms)
        if self.reader.in_holdout(ev.sessionId) or self.reader.cache_open:
            return (yield from _unwaited(ev, native, tenant, checks))
        msg_id = new_id()
        yield Expect(msg_id)  # before publishing: a notice can never come too early
        # The first call in a process waits for Redis to confirm the subscription, for at
        # most half the bound: past that the event is sent anyway, and a notice missed
        # for want of the subscription is made up by the cache read at the bound. Once the
        # hub listens (the usual case) this answers at once; "down" also comes at once.
        ready_by = started + (deadline - started) / 2
        hub = yield Wait("ready", min(self.read_bound, ready_by - time.monotonic()))
        if hub == "connecting" and wait_ms:
            # Not confirmed within a read's bound: ask the cache itself, with one bounded read.
            # A cache that does not answer it cannot confirm a subscription or carry a notice.
            # (A cache that answers it is read once more at the end: a cold start's cost.)
            probe = yield from _serve(checks.query(ev, native, tenant))
            if probe.source == "fallback":
                outcome, published = _outcome((yield Publish(ev, tenant)))
                return replace(probe, message_id=published if outcome != "dropped" else None)
            hub = yield Wait("ready", ready_by - time.monotonic())
        if hub == "down":
            return (yield from _unwaited(ev, native, tenant, checks))
        since_ms = int(time.time() * 1000)
        outcome, _ = _outcome((yield Publish(ev, tenant, msg_id, token)))
        notice = None
        if outcome in _WAITABLE:
            notice = _decoded((yield Wait("notice", max(0.0, deadline - time.monotonic()))))
        shown = msg_id if outcome != "dropped" else None
        q = checks.query(ev, native, tenant, since_ms=since_ms, notice=notice, message_id=shown)
        return (yield from _serve(q))

    def read_plan(
        self,
        event_type: str,
        item_id: str,
        session_id: str,
        native: Sequence[str] | None,
        user_id: str | None,
        wait_ms: int,
        tenant: str | None,
        checks: Checks,
    ) -> Plan:
        """AsyncRankingServer.read (its doc; with `wait_ms` 0, RankingServer.read): raises
        ValueError for a bad `wait_ms` before any request."""
        deadline = time.monotonic() + check_wait(wait_ms)
        c = checks
        q = Query(
            event_type, item_id, session_id, user_id, tenant, native, c.page_size, c.stock, c.facts, c.filters
        )
        if not wait_ms or self.reader.in_holdout(session_id) or self.reader.cache_open:
            return (yield from _serve(q))
        key = keys.ranking(tenant or self.settings.tenant, event_type, item_id, session_id, user_id)
        watched = yield Watch(key, deadline - time.monotonic())
        served = yield from _serve(q)
        if served.source not in ("native", "crowd") or not watched:
            return served
        ranking = _decoded((yield Wait("notice", max(0.0, deadline - time.monotonic()))))
        if ranking is None:
            return (yield from _serve(q))
        # Announced during this wait, so written after the read above found none: new.
        return (yield from _serve(replace(q, since_ms=0, notice=ranking)))


def _unwaited(ev: Event, native: Sequence[str] | None, tenant: str | None, checks: Checks) -> Plan:
    """Publish (asking for no notice) and serve one read's answer: no notice is waited for."""
    outcome, msg_id = _outcome((yield Publish(ev, tenant)))
    shown = msg_id if outcome != "dropped" else None
    return (yield from _serve(checks.query(ev, native, tenant, message_id=shown)))


def _serve(q: Query) -> Plan:
    served: Served = yield Serve(q)
    return served


def _outcome(answer: Receipt | PublishUnknown) -> tuple[str, str | None]:
    """(outcome, message id) of a publish's answer; PublishUnknown is the outcome "unknown"."""
    if isinstance(answer, PublishUnknown):
        return "unknown", answer.message_ids[0] if answer.message_ids else None
    return answer.outcome, answer.id


def _decoded(value: str | None) -> Ranking | None:
    """A notice's ranking value, or None for none or one that does not decode (read the cache then)."""
    if value is None:
        return None
    try:
        return decode_ranking(value)
    except CacheUnavailable:  # decode_ranking's word for a value that is not a ranking
        return None

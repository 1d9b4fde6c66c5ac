"""The publishers' sans-I/O core: routing, envelopes, outcomes, the drop policy, counters.

`Publisher` and `AsyncPublisher` (producers.publisher) are thin shells over one
`PublisherCore`: they only move bytes to a sink (producers.sink) and back, as httpx's
`Client` and `AsyncClient` do over `BaseClient`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fashionai_pipeline.producers.errors import BrokerUnavailable, InvalidEvent, PublishError, PublishUnknown
from fashionai_pipeline.producers.event import Event, body_of, event_body
from fashionai_pipeline.producers.message import check_id, check_notify, new_id
from fashionai_pipeline.producers.settings import Settings, redact_url
from fashionai_pipeline.producers.spool import Send, Spool, Stored
from fashionai_pipeline.producers.transport import Tuning

log = logging.getLogger("fashionai.publisher")

Outcome = Literal["published", "spooled", "dropped", "unknown"]


@dataclass(frozen=True, slots=True)
class Receipt:
    """What became of one published event.

    `id` is the envelope's message id: publish again with `message_id=id` to retry the same
    event (the worker drops an id it has already recorded). `outcome`: "published" (the
    broker has it), "dropped" (not published, `on_broker_down="drop"`), "unknown" (sent, not
    confirmed within the bound, `on_broker_down="drop"`), "spooled" (the broker did not take
    it and the disk spool did: producers.spool). True when the event is safe: published or
    spooled.
    """

    id: str
    outcome: Outcome

    def __bool__(self) -> bool:
        return self.outcome in ("published", "spooled")


@dataclass
class PublishStats:
    """Events by outcome since the publisher was made (approximate under threads)."""

    published: int = 0
    dropped: int = 0
    unknown: int = 0
    spooled: int = 0


@dataclass(frozen=True, slots=True)
class Batch:
    """One publish, validated: its queue, its message ids, and (payload, id) per envelope."""

    queue: str
    ids: list[str]
    messages: list[tuple[str, str]]


def _one_id(message_id: str | None) -> list[str] | None:
    return None if message_id is None else [check_id(message_id, "message_id")]


# While the spool holds events because the broker failed, publishes go straight to the spool
# for this long before the broker is tried again: a page during an outage pays a spool write,
# not the publish bound, and each process tries the broker at most once per window.
SPOOL_WINDOW_S = 2.0
SKIPPED = "the broker failed moments ago (spooling)"  # the reason of `skipped`


class PublisherCore:
    """Everything a publish decides without touching the network. Not thread-safe by itself:
    the shells call it under their lock (sync) or from their event loop (async)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tuning = Tuning.of(settings)
        self.stats = PublishStats()
        self.budget = 2 * settings.publish_timeout  # the documented bound of one publish
        self._queues: dict[str, str] = {}
        self._failing = False  # drop mode logs once per change of the broker's state
        self.spool: Spool | None = None
        if settings.spool_dir:
            self.spool = Spool(
                settings.spool_dir,
                max_bytes=settings.spool_max_bytes,
                max_age=settings.spool_max_age,
                fsync=settings.spool_fsync,
            )
        self._spool_until = 0.0  # monotonic: spool without trying the broker until then

    def describe(self, cls: str) -> str:
        return f"<{cls} broker={redact_url(self.settings.broker_url)} queue={self.settings.queue}>"

    def route(self, tenant: str | None) -> tuple[str, str]:
        """(queue, tenant) for `tenant` (default: settings.tenant). Raises InvalidEvent("tenant")."""
        tenant = tenant or self.settings.tenant
        queue = self._queues.get(tenant)
        if queue is None:
            known = sorted(self.settings.tenants) if self.settings.tenants else [self.settings.tenant]
            if tenant not in known:
                raise InvalidEvent("tenant", f"unknown tenant {tenant!r} (configured: {', '.join(known)})")
            self._queues[tenant] = queue = self.settings.queue_for(tenant)
        return queue, tenant

    @staticmethod
    def one(
        event: Event | Mapping[str, Any], message_id: str | None
    ) -> tuple[list[dict[str, Any]], list[str] | None]:
        """publish()'s event and `message_id`, checked (InvalidEvent naming the field, the id first)."""
        ids = _one_id(message_id)
        return [body_of(event)], ids

    @staticmethod
    def typed(
        kind: str, session_id: str, item_id: str, user_id: str | None, message_id: str | None
    ) -> tuple[list[dict[str, Any]], list[str] | None]:
        """A typed helper's (product_view...) event and `message_id`, checked (the event first)."""
        body = event_body(kind, session_id, item_id, user_id)
        return [body], _one_id(message_id)

    @staticmethod
    def bodies(events: Iterable[Event | Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Validate every event first; InvalidEvent names its position ("events[3].data.id")."""
        if isinstance(events, Mapping | Event | str | bytes) or not isinstance(events, Iterable):
            raise InvalidEvent("events", f"must be a list of events, not {type(events).__name__}")
        out = []
        for i, event in enumerate(events):
            try:
                out.append(body_of(event))
            except InvalidEvent as exc:
                raise InvalidEvent(f"events[{i}].{exc.field}", exc.rule) from None
        return out

    @staticmethod
    def ids(count: int, given: Sequence[str] | None, field: str = "message_ids") -> list[str]:
        """The envelopes' ids: `given` (checked: InvalidEvent naming the field), else new ones."""
        if given is None:
            return [new_id() for _ in range(count)]
        if isinstance(given, str) or len(given) != count:
            raise InvalidEvent(field, f"must be a list of {count} message ids, one per event")
        return [check_id(msg_id, f"{field}[{i}]") for i, msg_id in enumerate(given)]

    def envelopes(
        self, tenant: str, bodies: Sequence[dict[str, Any]], ids: Sequence[str], notify: str | None = None
    ) -> list[tuple[str, str]]:
        """(payload, id) per validated body: the wire envelope (producers.message), stamped now.

        `notify` (checked: InvalidEvent naming it) goes into every envelope.
        """
        if notify is not None:
            check_notify(notify)
        now = time.time()
        envelope = self.tuning.codec.envelope
        return [
            (envelope(msg_id, tenant, now, body, 0, notify), msg_id)
            for body, msg_id in zip(bodies, ids, strict=True)
        ]

    def prepare(
        self,
        tenant: str | None,
        bodies: Sequence[dict[str, Any]],
        ids: Sequence[str] | None,
        notify: str | None,
    ) -> Batch:
        """The batch of validated `bodies`: `route`, `ids` and `envelopes` (InvalidEvent naming the field)."""
        queue, tenant = self.route(tenant)
        msg_ids = self.ids(len(bodies), ids)
        return Batch(queue, msg_ids, self.envelopes(tenant, bodies, msg_ids, notify))

    def deadline(self) -> float:
        return time.monotonic() + self.budget

    @staticmethod
    def share(exc: PublishError, ids: Sequence[str]) -> PublishError | None:
        """`exc` as seen by the caller of `ids`, one of several sent together (None: published)."""
        concerned = set(exc.message_ids) or set(ids)  # an error naming no id is about every one
        mine = [msg_id for msg_id in ids if msg_id in concerned]
        return type(exc)(exc.reason, mine) if mine else None

    def published(self, ids: Sequence[str]) -> list[Receipt]:
        self.stats.published += len(ids)
        if self._failing:
            self._failing = False
            log.info(
                "broker %s takes events again (so far: %d dropped, %d unknown)",
                redact_url(self.settings.broker_url),
                self.stats.dropped,
                self.stats.unknown,
            )
        return [Receipt(msg_id, "published") for msg_id in ids]

    # -- the disk spool (off unless settings.spool_dir) ------------------------------------

    def start_replayer(self, send: Send) -> None:
        """Make sure this process replays the spool (idempotent; a forked child starts its own)."""
        if self.spool is not None:
            self.spool.start_replayer(send)

    def spooling(self) -> bool:
        """True while publishes skip the broker (it failed moments ago and the spool holds events)."""
        return self.spool is not None and time.monotonic() < self._spool_until

    def skipped(self, batch: Batch) -> BrokerUnavailable | None:
        """What `batch` meets instead of the broker while `spooling`, else None (send it)."""
        if not self.spooling():
            return None
        return BrokerUnavailable(SKIPPED, batch.ids)

    def unconfirmed(
        self, exc: PublishError, messages: Sequence[tuple[str, str]], ids: Sequence[str]
    ) -> list[tuple[str, str]]:
        """The messages `exc` names (not queued, or unknown): what the spool would keep."""
        concerned = set(exc.message_ids) or set(ids)
        return [m for m in messages if m[1] in concerned]

    def put_in_spool(self, queue: str, messages: Sequence[tuple[str, str]], timeout: float) -> Stored:
        """The spool's write (I/O: the shells run it where blocking is allowed): what became of it."""
        if self.spool is None:
            return "failed"
        return self.spool.store(queue, messages, timeout=max(0.01, timeout))

    def after_spool(self, exc: PublishError, ids: Sequence[str], stored: Stored) -> list[Receipt]:
        """Receipts once the spool took the messages `exc` names (`stored`), else `failed`.

        A spool that is full (the error then says so, and its limit), or could not be written
        within the publish's bound, leaves them to `failed` (raised, or dropped/unknown in drop
        mode).
        """
        if stored != "stored" or self.spool is None:
            return self.failed(self._spool_full(exc) if stored == "full" else exc, ids)
        concerned = set(exc.message_ids) or set(ids)
        if not self.spooling():
            log.warning(
                "%s: spooling events to %s (for %gs at a time), replayed when the broker answers",
                exc.reason,
                self.spool.path,
                SPOOL_WINDOW_S,
            )
        self._spool_until = time.monotonic() + SPOOL_WINDOW_S
        done = [msg_id for msg_id in ids if msg_id not in concerned]
        if done:
            self.published(done)
        self.stats.spooled += len(ids) - len(done)
        return [Receipt(msg_id, "spooled" if msg_id in concerned else "published") for msg_id in ids]

    def _spool_full(self, exc: PublishError) -> PublishError:
        """`exc`, saying the spool is full and its limit; the broker's own reason follows, as
        redacted as it was."""
        assert self.spool is not None
        broker = "the broker failed moments ago" if exc.reason == SKIPPED else exc.reason
        limit = f"FASHIONAI_SPOOL_MAX_BYTES={self.spool.max_bytes} bytes"
        out = type(exc)(
            f"the disk spool is full ({limit}) and cannot keep the event; {broker}", exc.message_ids
        )
        out.__cause__ = exc.__cause__
        return out

    def failed(self, exc: PublishError, ids: Sequence[str]) -> list[Receipt]:
        """Receipts for `ids` after `exc`, or `exc` raised (on_broker_down="raise").

        The ids `exc` names share its fate (not queued, or unknown); the others were confirmed.
        """
        concerned = set(exc.message_ids) or set(ids)
        done = [msg_id for msg_id in ids if msg_id not in concerned]
        rest = [msg_id for msg_id in ids if msg_id in concerned]
        if done:
            self.published(done)
        if self.settings.on_broker_down != "drop":
            raise type(exc)(exc.reason, rest) from (exc.__cause__ or exc)
        fate: Outcome = "unknown" if isinstance(exc, PublishUnknown) else "dropped"
        if fate == "unknown":
            self.stats.unknown += len(rest)
        else:
            self.stats.dropped += len(rest)
        if not self._failing:
            self._failing = True
            log.warning(
                "%s: event dropped or unknown (on_broker_down=drop); counting in stats.dropped and "
                "stats.unknown, logging again when the broker takes events",
                exc.reason,
            )
        return [Receipt(msg_id, "published" if msg_id not in concerned else fate) for msg_id in ids]

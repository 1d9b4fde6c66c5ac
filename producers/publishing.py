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

from fashionai_pipeline.producers.errors import InvalidEvent, PublishError, PublishUnknown
from fashionai_pipeline.producers.event import Event, parse_event
from fashionai_pipeline.producers.message import check_id, check_notify, new_id
from fashionai_pipeline.producers.settings import Settings, redact_url
from fashionai_pipeline.producers.transport import Tuning

log = logging.getLogger("fashionai.publisher")

Outcome = Literal["published", "spooled", "dropped", "unknown"]


@dataclass(frozen=True, slots=True)
class Receipt:
    """What became of one published event.

    `id` is the envelope's message id: publish again with `message_id=id` to retry the same
    event (the worker drops an id it has already recorded). `outcome`: "published" (the
    broker has it), "dropped" (not published, `on_broker_down="drop"`), "unknown" (sent, not
    confirmed within the bound, `on_broker_down="drop"`), "spooled" (reserved for a disk
    spool). True when the event is safe: published or spooled.
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
    def bodies(events: Iterable[Event | Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Validate every event first; InvalidEvent names its position ("events[3].data.id")."""
        out = []
        for i, event in enumerate(events):
            try:
                out.append(parse_event(event).body())
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

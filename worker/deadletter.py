"""The dead-letter store: a Redis stream of events that will not be retried.

Each stream entry has one field, `entry`, holding a JSON object::

    {"kind": "refused" | "exhausted" | "undecodable" | "foreign", "reason": "...",
     "status": 400 | null, "response": "<upstream body, <= 2000 chars>",
     "attempts": 1, "id": "<message id>", "tenant": "default",
     "enqueued_at": 1764240000.1, "dead_at": 1764240003.5,
     "event": {seed body} | null,
     "message": {undecodable message} | {"raw": "<first 2000 chars>", "size": n} | null}

- refused: the upstream refused the event (4xx, a malformed answer); replayable.
- exhausted: retries ran out (attempts or age); replayable.
- undecodable: not an envelope at all, or larger than `max_message_bytes`; no
  event, so not replayable (fix and publish it by hand).
- foreign: an envelope naming another tenant than its queue's; replayable once
  that tenant is configured (replay publishes to the named tenant's queue).

Never the token: entries are built from the envelope and the upstream's answer,
never from request headers, and every configured token (each tenant's) is
masked in the whole entry before it is stored (`redact_entry`), since an
upstream answer may echo request headers. Sizes are bounded: a stored message
or response is at most 2000 characters. The stream's own id (e.g.
1764240003500-0) is the DLQ id the CLI shows.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.errors import FashionAIError, PublishError
from fashionai_pipeline.producers.message import Envelope, compact_json
from fashionai_pipeline.producers.redaction import redact

log = logging.getLogger("fashionai.worker")

Kind = Literal["refused", "exhausted", "undecodable", "foreign"]
STORED_TEXT = 2000  # characters of a response or a raw message kept in an entry


def peek(raw: bytes | str) -> dict[str, Any]:
    """A bounded view of an undecodable message (never raises, never over ~2 kB)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if len(text) <= STORED_TEXT:
        try:
            obj = json.loads(text)
        except ValueError:
            pass
        else:
            return obj if isinstance(obj, dict) else {"raw": obj}
    return {"raw": text[:STORED_TEXT], "size": len(raw)}


def redact_entry(entry: dict[str, Any], secrets: Sequence[str]) -> dict[str, Any]:
    """`entry` with every secret masked anywhere in it (a response, a message, an event)."""
    text = compact_json(entry)
    masked = redact(text, secrets)
    return entry if masked == text else dict(json.loads(masked))


def entry_for(
    kind: Kind,
    reason: str,
    *,
    envelope: Envelope | None = None,
    raw: bytes | str | None = None,
    status: int | None = None,
    response: str = "",
    attempts: int = 0,
    now: float | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": kind,
        "reason": reason,
        "status": status,
        "response": response[:STORED_TEXT],
        "attempts": attempts,
        "dead_at": time.time() if now is None else now,
        "id": None,
        "tenant": None,
        "enqueued_at": None,
        "event": None,
        "message": None,
    }
    if envelope is not None:
        entry.update(
            id=envelope.id,
            tenant=envelope.tenant,
            enqueued_at=envelope.ts,
            event=envelope.event.body(),
        )
    elif raw is not None:
        entry["message"] = peek(raw)
    return entry


def encode_entry(entry: dict[str, Any]) -> dict[Any, Any]:
    return {"entry": compact_json(entry)}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    dlq_id: str
    entry: dict[str, Any]

    @property
    def dead_at(self) -> float:
        return float(self.entry.get("dead_at") or 0.0)


class DeadLetterStore:
    """Synchronous access for the CLI and tests."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self.key = keys.dead_letters()

    def count(self) -> int:
        return int(self._redis.xlen(self.key))

    def iter(self, *, reason: str | None = None, since: float | None = None) -> Iterator[DeadLetter]:
        """Oldest first. `reason` matches as a substring; `since` is a unix time."""
        start = "-" if since is None else f"{int(since * 1000)}-0"
        while True:
            rows = self._redis.xrange(self.key, min=start, max="+", count=500)
            if not rows:
                return
            for raw_id, fields in rows:
                letter = _decode(raw_id, fields)  # type: ignore[arg-type]
                if reason is None or reason in str(letter.entry.get("reason", "")):
                    yield letter
            start = "(" + _s(rows[-1][0])  # type: ignore[arg-type]

    def get(self, dlq_id: str) -> DeadLetter | None:
        rows = self._redis.xrange(self.key, min=dlq_id, max=dlq_id, count=1)
        return _decode(*rows[0]) if rows else None  # type: ignore[arg-type]

    def delete(self, dlq_ids: list[str]) -> int:
        return int(self._redis.xdel(self.key, *dlq_ids)) if dlq_ids else 0

    def purge(self) -> int:
        n = self.count()
        self._redis.delete(self.key)
        return n

    def replay(
        self,
        republish: Callable[[dict[str, Any], str], None],
        *,
        reason: str | None = None,
        since: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ReplayReport:
        """Publish each matching dead letter's event again, then remove it.

        `republish(event_body, tenant)` must raise if the broker did not take it.
        An entry that cannot be replayed (no event: undecodable; an event or a
        tenant the publisher refuses, e.g. a tenant not configured) is skipped,
        reported with why, left in the store, and the replay goes on with the
        next. A `PublishError` (the broker is down) is not the entry's fault: it
        stops the replay and propagates; what was replayed so far is removed.
        """
        letters = list(self.iter(reason=reason, since=since))
        report = ReplayReport()
        for i, letter in enumerate(letters, 1):
            event = letter.entry.get("event")
            if event is None:
                report.skipped.append((letter.dlq_id, "no event to replay (undecodable message)"))
            else:
                try:
                    republish(event, letter.entry.get("tenant") or "default")
                except PublishError:
                    raise
                except (FashionAIError, ValueError, TypeError) as exc:
                    report.skipped.append((letter.dlq_id, f"not replayable: {exc}"))
                else:
                    self.delete([letter.dlq_id])
                    report.replayed += 1
            if progress is not None:
                progress(i, len(letters))
        return report


@dataclass
class ReplayReport:
    replayed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (dlq id, why)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(raw_id: bytes | str, fields: dict[Any, Any]) -> DeadLetter:
    data = fields.get(b"entry", fields.get("entry", b"{}"))
    return DeadLetter(_s(raw_id), json.loads(data))

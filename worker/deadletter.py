"""The dead-letter store: a Redis stream of events that will not be retried.

Each stream entry has one field, `entry`, holding a JSON object::

    {"kind": "refused" | "exhausted" | "undecodable", "reason": "...",
     "status": 400 | null, "response": "<upstream body, <= 2000 chars>",
     "attempts": 1, "id": "<message id>", "tenant": "default",
     "enqueued_at": 1764240000.1, "dead_at": 1764240003.5,
     "event": {seed body} | null, "message": {undecodable message} | null}

Never the token: entries are built from the envelope and the upstream's answer,
never from request headers. The stream's own id (e.g. 1764240003500-0) is the
DLQ id the CLI shows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import redis

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.message import Envelope, compact_json, peek

Kind = Literal["refused", "exhausted", "undecodable"]


def entry_for(
    kind: Kind,
    reason: str,
    *,
    envelope: Envelope | None = None,
    raw: bytes | str | None = None,
    status: int | None = None,
    response: str = "",
    attempts: int = 0,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": kind,
        "reason": reason,
        "status": status,
        "response": response[:2000],
        "attempts": attempts,
        "dead_at": time.time(),
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
    ) -> tuple[int, int]:
        """Publish each matching dead letter's event again, then remove it.

        `republish(event_body, tenant)` must raise if the broker did not take it;
        that entry then stays in the store. Undecodable messages have no event and
        are skipped (fix and publish them by hand). Returns (replayed, skipped).
        """
        letters = list(self.iter(reason=reason, since=since))
        replayed = skipped = 0
        for i, letter in enumerate(letters, 1):
            event = letter.entry.get("event")
            if event is None:
                skipped += 1
            else:
                republish(event, letter.entry.get("tenant") or "default")
                self.delete([letter.dlq_id])
                replayed += 1
            if progress is not None:
                progress(i, len(letters))
        return replayed, skipped


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(raw_id: bytes | str, fields: dict[Any, Any]) -> DeadLetter:
    data = fields.get(b"entry", fields.get("entry", b"{}"))
    return DeadLetter(_s(raw_id), json.loads(data))

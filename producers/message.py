"""The wire format of an event on the broker queue.

A plain JSON object, not a Celery task message: the worker consumes the queue
with its own kombu consumer, so the envelope carries only what delivery needs::

    {"v": 1, "id": "9f1c...", "tenant": "default", "ts": 1764240000.123,
     "attempt": 0, "event": {"sessionId": "s1", "eventType": "productView",
                             "data": {"id": "p1"}}}

- `id`: unique per published event (128 random bits, 32 lowercase hex digits), or the id the
  caller gave to publish the same event again; dead letters and logs name it.
- `ts`: enqueue time (producer's clock, seconds). It orders cache writes
  (a late, older ranking never overwrites a newer one) and bounds retry age.
- `attempt`: upstream attempts already made (0 when published).
- `event`: the upstream body, exactly the contract's shape (docs/UPSTREAM.md).
- `notify` (optional, last): ask the worker to announce this event's ranking once it
  is cached: a waiter's token (its reply channel, producers.keys.reply_channel) or
  "key" (the ranking key's channel). Envelopes without it, and decoders that predate
  it, are unaffected: a decoder ignores keys it does not know, and a malformed value
  is ignored, never a reason to refuse the event.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, replace
from typing import Any

from fashionai_pipeline.producers.errors import InvalidEvent, InvalidMessage
from fashionai_pipeline.producers.event import Event, parse_event
from fashionai_pipeline.producers.templates import ENVELOPE_VERSION as VERSION
from fashionai_pipeline.producers.templates import body_json, compact_json, envelope_json

CONTENT_TYPE = "application/json"
# Names the worker side imports from here.
__all__ = ["CONTENT_TYPE", "VERSION", "Envelope", "InvalidMessage", "body_json", "compact_json"]
__all__ += ["NOTIFY_KEY", "check_id", "check_notify", "decode", "encode", "encode_text", "new_id", "peek"]

NOTIFY_KEY = "key"  # `notify` value: announce on the ranking key's channel
_NOTIFY = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class Envelope:
    id: str
    tenant: str
    ts: float
    attempt: int
    event: Event
    notify: str | None = None

    def encode(self) -> bytes:
        return encode(self.id, self.tenant, self.ts, self.event.body(), self.attempt, self.notify)

    def next_attempt(self) -> Envelope:
        return replace(self, attempt=self.attempt + 1)


def encode(
    msg_id: str, tenant: str, ts: float, body: dict[str, Any], attempt: int = 0, notify: str | None = None
) -> bytes:
    """Serialise one envelope. `body` must already be a validated event body."""
    return encode_text(msg_id, tenant, ts, body, attempt, notify).encode()


def encode_text(
    msg_id: str, tenant: str, ts: float, body: dict[str, Any], attempt: int = 0, notify: str | None = None
) -> str:
    """encode() as text (producers.templates writes it; the request path picks its codec).

    A `notify` a decoder would drop raises InvalidEvent naming it.
    """
    if notify is not None:
        check_notify(notify)
    return envelope_json(msg_id, tenant, ts, body, attempt, notify)


def check_notify(notify: object) -> str:
    """`notify` if it is a valid value of the envelope's optional field; InvalidEvent otherwise."""
    if type(notify) is not str or not _NOTIFY.fullmatch(notify):
        raise InvalidEvent("notify", f"must match {_NOTIFY.pattern}")
    return notify


# os.urandom releases the GIL around getrandom(2). On a threaded page server (gunicorn gthread)
# each release lets another thread take the interpreter, and the page waits to get it back:
# about 50 us of CPU per page with 8 threads (docs/PERFORMANCE.md). So ids are cut from a
# per-thread buffer of os.urandom bytes, refilled every _IDS_PER_FILL ids. A forked child starts
# a new generation: the bytes its parent buffered are never used twice.
_IDS_PER_FILL = 64


class _IdBuffer(threading.local):
    buf = b""
    at = 0
    generation = -1


_ids = _IdBuffer()
_generation = 0


def _new_generation() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_new_generation)


def new_id() -> str:
    """A unique message id: 128 random bits (os.urandom) as 32 hex digits, like uuid4().hex."""
    ids = _ids
    at = ids.at
    if at >= len(ids.buf) or ids.generation != _generation:
        ids.buf, ids.generation, at = os.urandom(16 * _IDS_PER_FILL), _generation, 0
    ids.at = at + 16
    return ids.buf[at : at + 16].hex()


_ID = re.compile(r"[0-9a-f]{32}")


def check_id(msg_id: object, field: str = "message_id") -> str:
    """`msg_id` if it is a message id as new_id() makes them (32 lowercase hex digits).

    Raises InvalidEvent naming `field` otherwise. A caller that retries a publish passes the
    id it got back (Receipt.id, PublishError.message_ids), so the worker can drop the copy.
    """
    if type(msg_id) is not str or not _ID.fullmatch(msg_id):
        raise InvalidEvent(field, "must be 32 lowercase hex digits, as a Receipt's id")
    return msg_id


def decode(raw: bytes | str) -> Envelope:
    """Parse and validate one message body. Raises InvalidMessage with a readable reason."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidMessage(f"envelope: must be a JSON object, not {type(obj).__name__}")
    if obj.get("v") != VERSION:
        raise InvalidMessage(f"v: unsupported envelope version {obj.get('v')!r}")
    try:
        msg_id, tenant, ts, attempt = obj["id"], obj["tenant"], obj["ts"], obj["attempt"]
    except KeyError as exc:
        raise InvalidMessage(f"{exc.args[0]}: required") from None
    if not isinstance(msg_id, str) or not isinstance(tenant, str):
        raise InvalidMessage("id/tenant: must be strings")
    if not isinstance(ts, int | float) or not isinstance(attempt, int):
        raise InvalidMessage("ts/attempt: must be numbers")
    try:
        event = parse_event(obj.get("event"))  # type: ignore[arg-type]
    except InvalidEvent as exc:
        raise InvalidMessage(f"event.{exc}") from None
    notify = obj.get("notify")
    if not isinstance(notify, str) or not _NOTIFY.fullmatch(notify):
        notify = None  # a hint only: a bad one costs the waiter its notice, never the event
    return Envelope(msg_id, tenant, float(ts), attempt, event, notify)


def peek(raw: bytes | str) -> dict[str, Any]:
    """Best-effort view of an undecodable message for a dead letter (never raises)."""
    try:
        obj = json.loads(raw)
        return obj if isinstance(obj, dict) else {"raw": obj}
    except (ValueError, UnicodeDecodeError):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return {"raw": text[:2000]}

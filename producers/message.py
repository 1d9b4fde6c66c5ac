"""The wire format of an event on the broker queue.

A plain JSON object, not a Celery task message: the worker consumes the queue
with its own kombu consumer, so the envelope carries only what delivery needs::

    {"v": 1, "id": "9f1c...", "tenant": "default", "ts": 1764240000.123,
     "attempt": 0, "event": {"sessionId": "s1", "eventType": "productView",
                             "data": {"id": "p1"}}}

- `id`: unique per published event (128 random bits, hex); dead letters and logs name it.
- `ts`: enqueue time (producer's clock, seconds). It orders cache writes
  (a late, older ranking never overwrites a newer one) and bounds retry age.
- `attempt`: upstream attempts already made (0 when published).
- `event`: the upstream body, exactly the seed's shape.
- `notify` (optional): ask the worker to announce this event's ranking once it
  is cached: a waiter's token (its reply channel, producers.keys.reply_channel)
  or "key" (the ranking key's channel). Envelopes without it, and decoders that
  predate it, are unaffected: a decoder ignores keys it does not know, and a
  malformed value is ignored, never a reason to refuse the event.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from fashionai_pipeline.producers.errors import FashionAIError, InvalidEvent
from fashionai_pipeline.producers.event import Event, parse_event

VERSION = 1
CONTENT_TYPE = "application/json"
NOTIFY_KEY = "key"  # `notify` value: announce on the ranking key's channel
_NOTIFY = re.compile(r"[A-Za-z0-9_-]{1,64}")


class InvalidMessage(FashionAIError):
    """A message on the queue that cannot be decoded; it goes to the dead letters."""


@dataclass(frozen=True, slots=True)
class Envelope:
    id: str
    tenant: str
    ts: float
    attempt: int
    event: Event
    notify: str | None = None

    def encode(self) -> bytes:
        return encode(self.id, self.tenant, self.ts, self.event.body(), self.attempt)

    def next_attempt(self) -> Envelope:
        return replace(self, attempt=self.attempt + 1)


def encode(msg_id: str, tenant: str, ts: float, body: dict[str, Any], attempt: int = 0) -> bytes:
    """Serialise one envelope. `body` must already be a validated event body."""
    return encode_text(msg_id, tenant, ts, body, attempt).encode()


def encode_text(
    msg_id: str, tenant: str, ts: float, body: dict[str, Any], attempt: int = 0, notify: str | None = None
) -> str:
    """encode() as text, for framing it again (producers.kombu_redis) without a decode.

    `notify` adds the optional field (see the module docstring); it must match
    `[A-Za-z0-9_-]{1,64}` (ValueError otherwise), so a decoder never has to drop it.
    """
    # A template rather than json.dumps of a dict: this runs on the request path.
    text = _ENVELOPE % (VERSION, quote(msg_id), quote(tenant), repr(float(ts)), int(attempt), body_json(body))
    if notify is None:
        return text
    if not _NOTIFY.fullmatch(notify):
        raise ValueError(f"notify: must match {_NOTIFY.pattern}")
    return f'{text[:-1]},"notify":{quote(notify)}}}'


_ENVELOPE = '{"v":%d,"id":%s,"tenant":%s,"ts":%s,"attempt":%d,"event":%s}'
# json.dumps(..., separators=...) builds a new encoder on every call (py-spy put
# that at ~5% of a pump's CPU); one shared encoder does the same work.
compact_json = json.JSONEncoder(separators=(",", ":")).encode
# A str as a JSON string, as json.dumps writes it (ensure_ascii), without
# json.dumps's per-call checks: the C function json.dumps itself ends in.
quote: Callable[[str], str] = json.encoder.encode_basestring_ascii

_BODY = '{"sessionId":%s,"eventType":%s,"data":{"id":%s}}'
_BODY_USER = '{"userId":%s,"sessionId":%s,"eventType":%s,"data":{"id":%s}}'


def body_json(body: dict[str, Any]) -> str:
    """compact_json(body) for an event body (Event.body()), filled into a template.

    It runs once per event on the request path and again in the worker; the
    encoder costs ~1.3 us here, this ~0.5 us. Anything not exactly that shape
    (more keys, a non-string value) goes through compact_json.
    """
    try:
        data = body["data"]
        if len(data) == 1:
            if len(body) == 3:
                return _BODY % (quote(body["sessionId"]), quote(body["eventType"]), quote(data["id"]))
            if len(body) == 4:
                return _BODY_USER % (
                    quote(body["userId"]),
                    quote(body["sessionId"]),
                    quote(body["eventType"]),
                    quote(data["id"]),
                )
    except (KeyError, TypeError):
        pass
    return compact_json(body)


def new_id() -> str:
    """A unique message id: 128 random bits as 32 hex digits, like uuid4().hex.

    uuid.uuid4() builds a UUID object around the same os.urandom(16); that cost
    ~6 us per publish on the request path here, this ~1 us.
    """
    return os.urandom(16).hex()


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

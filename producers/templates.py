"""The wire texts of the request path, two ways: string templates, or json.dumps.

The third of the request path's optimisations (switch: `FASHIONAI_JSON_TEMPLATES`, chosen
in producers.transport). An envelope (producers.message), its event body and kombu's Redis
frame (producers.kombu_redis) are written on every publish; filling fixed templates with C
string quoting (`quote`, the function json.dumps itself ends in) skips json.dumps's per-call
checks and dict building. `TEMPLATES` and `PLAIN` write the same bytes for every input
(tests/unit/test_wire.py checks them against each other and against json.dumps); anything a
template does not fit exactly (more keys, a non-string value) goes through the encoder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

ENVELOPE_VERSION = 1

# json.dumps(..., separators=...) builds a new encoder on every call (py-spy put that at
# ~5% of a pump's CPU); one shared encoder does the same work.
compact_json: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":")).encode
# A str as a JSON string, as json.dumps writes it (ensure_ascii), without its per-call checks.
quote: Callable[[str], str] = json.encoder.encode_basestring_ascii

_BODY = '{"sessionId":%s,"eventType":%s,"data":{"id":%s}}'
_BODY_USER = '{"userId":%s,"sessionId":%s,"eventType":%s,"data":{"id":%s}}'
_ENVELOPE = '{"v":%d,"id":%s,"tenant":%s,"ts":%s,"attempt":%d,"event":%s}'
# The JSON object kombu builds for a Redis-broker message, as a template.
_FRAME = (
    '{"body":%s,"content-encoding":"utf-8","content-type":%s,"headers":{},'
    '"properties":{"delivery_mode":2,"delivery_info":{"exchange":"","routing_key":%s},'
    '"priority":0,"delivery_tag":%s}}'
)


def body_json(body: dict[str, Any]) -> str:
    """compact_json(body) for an event body (Event.body()), filled into a template."""
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


def envelope_json(
    msg_id: str, tenant: str, ts: float, body: dict[str, Any], attempt: int = 0, notify: str | None = None
) -> str:
    """The wire envelope as text, filled into a template; `notify`, when given, goes last."""
    text = _ENVELOPE % (
        ENVELOPE_VERSION,
        quote(msg_id),
        quote(tenant),
        repr(float(ts)),
        attempt,
        body_json(body),
    )
    return text if notify is None else f'{text[:-1]},"notify":{quote(notify)}}}'


def frame_json(payload: str, queue: str, content_type: str, tag: str) -> str:
    """kombu's Redis frame around `payload` (stored as text, not base64), filled into a template."""
    return _FRAME % (quote(payload), quote(content_type), quote(queue), quote(tag))


def plain_envelope_json(
    msg_id: str, tenant: str, ts: float, body: dict[str, Any], attempt: int = 0, notify: str | None = None
) -> str:
    """envelope_json by json.dumps."""
    envelope = {"v": ENVELOPE_VERSION, "id": msg_id, "tenant": tenant, "ts": float(ts), "attempt": attempt}
    tail = {} if notify is None else {"notify": notify}
    return compact_json({**envelope, "event": body, **tail})


def plain_frame_json(payload: str, queue: str, content_type: str, tag: str) -> str:
    """frame_json by json.dumps."""
    info = {"exchange": "", "routing_key": queue}
    properties = {"delivery_mode": 2, "delivery_info": info, "priority": 0, "delivery_tag": tag}
    frame = {"body": payload, "content-encoding": "utf-8", "content-type": content_type, "headers": {}}
    return compact_json({**frame, "properties": properties})


class EnvelopeWriter(Protocol):
    def __call__(
        self,
        msg_id: str,
        tenant: str,
        ts: float,
        body: dict[str, Any],
        attempt: int = 0,
        notify: str | None = None,
    ) -> str: ...


@dataclass(frozen=True, slots=True)
class Codec:
    """How the request path writes its texts; `TEMPLATES` or `PLAIN`, the same bytes."""

    body: Callable[[dict[str, Any]], str]
    envelope: EnvelopeWriter
    frame: Callable[[str, str, str, str], str]


TEMPLATES = Codec(body_json, envelope_json, frame_json)
PLAIN = Codec(compact_json, plain_envelope_json, plain_frame_json)

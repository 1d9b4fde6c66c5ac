"""kombu's Redis transport wire format, written and read without kombu's per-message path.

kombu keeps a Redis-broker message as a JSON object in a list (LPUSH by producers,
RPOP by consumers) and, while a consumer holds it unacked, under its delivery tag
in the hash `unacked` (value `[message, exchange, routing_key]`) and the sorted
set `unacked_index` (score: delivery time). Its restore sweep puts messages
back once they are older than the visibility timeout.

The project's fast paths (producers.sink on Redis, worker.brokers.redis)
use exactly these structures, so kombu, Celery tools and our own consumers can
read each other's messages, and kombu's recovery keeps working, while a publish
costs one LPUSH and a batch costs one script call and one ack pipeline instead
of three round trips per message (measured: docs/PERFORMANCE.md).
"""

from __future__ import annotations

import base64
from typing import Any

from fashionai_pipeline.producers.message import CONTENT_TYPE
from fashionai_pipeline.producers.templates import frame_json

UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"


def encode_message(body: bytes | str, queue: str, content_type: str = CONTENT_TYPE, *, tag: str) -> str:
    """A message for LPUSH onto `queue`; the body is stored as text, not base64.

    `tag` is the delivery tag, unique per message; the publisher passes the envelope's own
    id, which is one. Written by the template codec (producers.templates); the publisher
    frames with the codec its settings choose.
    """
    text = body if isinstance(body, str) else body.decode()
    return frame_json(text, queue, content_type, tag)


def message_body(message: dict[str, Any]) -> bytes:
    """The body of a decoded kombu message, base64 or not."""
    body = message.get("body", "")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    if message.get("properties", {}).get("body_encoding") == "base64":
        return base64.b64decode(raw)
    return raw

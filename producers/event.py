"""The event contract of Fashion.AI's Personalization API, as pydantic models.

The contract is described in docs/UPSTREAM.md. One event per POST::

    {"userId": "90", "sessionId": "sess456", "eventType": "productView",
     "data": {"id": "id789"}}

`userId` is optional and left out of the body when absent (never null);
`sessionId` is required and non-empty; `data.id` is required, non-empty for
productView/categoryView/shopTheLook and exactly "" for customShelf.
Validation is strict: no type coercion, no unknown fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fashionai_pipeline.producers.errors import InvalidEvent

EventType = Literal["productView", "categoryView", "shopTheLook", "customShelf"]
EVENT_TYPES: Final[tuple[str, ...]] = get_args(EventType)
_TYPES: Final = frozenset(EVENT_TYPES)

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)
MAX_LEN: Final = 512  # characters, for every id


class EventData(BaseModel):
    model_config = _STRICT

    id: str = Field(max_length=MAX_LEN)


class Event(BaseModel):
    """One storefront event, exactly as the upstream receives it."""

    model_config = _STRICT

    userId: str | None = Field(default=None, min_length=1, max_length=MAX_LEN)
    sessionId: str = Field(min_length=1, max_length=MAX_LEN)
    eventType: EventType
    data: EventData

    @model_validator(mode="after")
    def _check_data_id(self) -> Event:
        if self.eventType == "customShelf":
            if self.data.id != "":
                raise ValueError('data.id: must be "" for customShelf')
        elif self.data.id == "":
            raise ValueError(f"data.id: must be a non-empty id for {self.eventType}")
        return self

    def body(self) -> dict[str, Any]:
        """The upstream JSON body in the contract's key order, userId left out when absent."""
        return _body(self.userId, self.sessionId, self.eventType, self.data.id)


def _body(user_id: str | None, session_id: str, event_type: str, item_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"sessionId": session_id, "eventType": event_type, "data": {"id": item_id}}
    return body if user_id is None else {"userId": user_id, **body}


def parse_event(raw: Mapping[str, Any] | Event) -> Event:
    """Validate `raw` against the contract.

    Raises InvalidEvent naming the first bad field ("sessionId", "data.id", ...).
    Pure and idempotent; an Event passes through unchanged.
    """
    if isinstance(raw, Event):
        return raw
    if not isinstance(raw, Mapping):
        raise InvalidEvent("body", f"must be a JSON object, not {type(raw).__name__}")
    if raw.get("userId", "") is None:
        raise InvalidEvent("userId", "must be left out when absent, not null")
    return _validated(raw)


def make_event(event_type: str, session_id: str, item_id: str = "", user_id: str | None = None) -> Event:
    """Build and validate an event from its parts (typed helpers build on this)."""
    # parse_event's checks on the mapping itself hold by construction here.
    return _validated(_body(user_id, session_id, event_type, item_id))


def event_body(
    event_type: str, session_id: str, item_id: str = "", user_id: str | None = None
) -> dict[str, Any]:
    """make_event(...).body(), without building the model when the parts are plainly valid.

    The typed publish helpers run this on the request path, where building the
    model is a measurable part of a publish (docs/PERFORMANCE.md). Only exact ASCII
    `str`s within the model's limits take the short way; anything else, valid or
    not, goes through make_event, so every error is the model's own (InvalidEvent
    naming the field; a lone surrogate, which no JSON encoder can send, among them).
    """
    body = _plain(event_type, session_id, item_id, user_id)
    return body if body is not None else make_event(event_type, session_id, item_id, user_id).body()


_ABSENT: Final = object()
_KEYS: Final = frozenset({"sessionId", "eventType", "data", "userId"})


def body_of(raw: Mapping[str, Any] | Event) -> dict[str, Any]:
    """parse_event(raw).body(), without building the model for a plain dict whose parts are
    plainly valid (the page views' events, the HTTP service's): the same body, or the same
    InvalidEvent, since anything else goes through parse_event."""
    if type(raw) is dict and raw.keys() <= _KEYS:
        data, user = raw.get("data"), raw.get("userId", _ABSENT)
        if type(data) is dict and len(data) == 1 and user is not None:
            body = _plain(
                raw.get("eventType"), raw.get("sessionId"), data.get("id"), None if user is _ABSENT else user
            )
            if body is not None:
                return body
    return parse_event(raw).body()


def _plain(event_type: object, session_id: object, item_id: object, user_id: object) -> dict[str, Any] | None:
    """The body of plainly valid parts (exact ASCII `str`s within the model's limits), else None."""
    if (
        type(session_id) is str
        and 0 < len(session_id) <= MAX_LEN
        and session_id.isascii()
        and type(item_id) is str
        and len(item_id) <= MAX_LEN
        and item_id.isascii()
        and type(event_type) is str
        and event_type in _TYPES
        and (item_id == "") is (event_type == "customShelf")
        and (user_id is None or (type(user_id) is str and 0 < len(user_id) <= MAX_LEN and user_id.isascii()))
    ):
        return _body(user_id, session_id, event_type, item_id)
    return None


def _validated(raw: Mapping[str, Any]) -> Event:
    try:
        return Event.model_validate(raw)
    except ValidationError as exc:
        raise _to_invalid(exc) from None


def _to_invalid(exc: ValidationError) -> InvalidEvent:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in err["loc"])
    message = err["msg"]
    if err["type"] == "value_error":
        # Our own validator already wrote "field: rule"; pydantic prefixes "Value error, ".
        message = message.removeprefix("Value error, ")
        field, _, rule = message.partition(": ")
        return InvalidEvent(field, rule)
    if err["type"] == "extra_forbidden":
        return InvalidEvent(loc, "unknown field")
    if err["type"] == "missing":
        return InvalidEvent(loc, "required")
    if err["type"] == "literal_error":
        return InvalidEvent(loc, "must be one of " + ", ".join(EVENT_TYPES))
    return InvalidEvent(loc or "body", message[:1].lower() + message[1:])

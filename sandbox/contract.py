"""The request contract of Fashion.AI's recommendation endpoint, checked strictly.

Written from the upstream's description (docs/UPSTREAM.md) on its
own, without importing the producer side, so the sandbox is an independent
second reading of the contract: if a producer and the sandbox disagree, one of
them misread the API description.

A valid body is a JSON object with exactly these keys::

    userId     optional; when present a non-empty string (null is refused)
    sessionId  required non-empty string
    eventType  required, one of EVENT_TYPES
    data       required object with exactly the key ``id``, a string that is
               non-empty for productView/categoryView/shopTheLook and exactly ""
               for customShelf

Every refusal is a :class:`ContractError` whose ``reason`` starts with the
field it concerns (``sessionId: required``, ``data.id: must be "" for
customShelf``), so a 400 tells the caller what to fix. Checks run in a fixed
order and the first failure wins, which keeps reasons deterministic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, Literal, get_args

EventType = Literal["productView", "categoryView", "shopTheLook", "customShelf"]
EVENT_TYPES: Final[tuple[EventType, ...]] = get_args(EventType)

_TOP_LEVEL_KEYS: Final = ("userId", "sessionId", "eventType", "data")
_DATA_KEYS: Final = ("id",)
_EVENT_TYPE_BY_NAME: Final[dict[str, EventType]] = {name: name for name in EVENT_TYPES}
_EVENT_TYPE_RULE: Final = "eventType: must be one of " + ", ".join(EVENT_TYPES)


class ContractError(ValueError):
    """A request body broke the contract; ``reason`` names the field and the rule."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Event:
    """One accepted recommendation request.

    ``item_id`` is ``data.id``: a product id (productView, shopTheLook), a
    category id (categoryView) or "" (customShelf).
    """

    event_type: EventType
    item_id: str
    session_id: str
    user_id: str | None = None


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json.loads silently keeps the last of two equal keys; the upstream may
    # keep the first, so an ambiguous body is refused rather than guessed at.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ContractError(f"{key}: duplicate key")
            seen.add(key)
    return obj


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# One decoder for every request: json.loads with hooks builds a new one per call.
_DECODER: Final = json.JSONDecoder(object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)


def decode_json(raw: bytes) -> object:
    """Parse ``raw`` as strict UTF-8 JSON (no BOM, NaN/Infinity or duplicate keys).

    Raises :class:`ContractError` (``body: not valid JSON`` or
    ``<key>: duplicate key``). A body nested too deeply for the parser's
    recursion (``[`` x 30,000) is ``body: not valid JSON`` too, never a
    ``RecursionError``. Pure; does not check the contract itself.
    """
    try:
        return _DECODER.decode(raw.decode("utf-8"))
    except ContractError:
        raise
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ContractError("body: not valid JSON") from None


def _non_empty_string(obj: dict[str, object], key: str, label: str) -> str:
    if key not in obj:
        raise ContractError(f"{label}: required")
    value = obj[key]
    if not isinstance(value, str) or not value:
        raise ContractError(f"{label}: must be a non-empty string")
    return value


def _unknown_keys(obj: dict[str, object], allowed: tuple[str, ...], prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            raise ContractError(f"{prefix}{key}: unknown field (allowed: {', '.join(allowed)})")


def _user_id(body: dict[str, object]) -> str | None:
    if "userId" not in body:
        return None
    value = body["userId"]
    if value is None:
        raise ContractError("userId: must be a non-empty string, not null")
    if not isinstance(value, str) or not value:
        raise ContractError("userId: must be a non-empty string")
    return value


def _event_type(body: dict[str, object]) -> EventType:
    if "eventType" not in body:
        raise ContractError("eventType: required")
    value = body["eventType"]
    event_type = _EVENT_TYPE_BY_NAME.get(value) if isinstance(value, str) else None
    if event_type is None:
        raise ContractError(_EVENT_TYPE_RULE)
    return event_type


def _item_id(body: dict[str, object], event_type: EventType) -> str:
    if "data" not in body:
        raise ContractError("data: required")
    data = body["data"]
    if not isinstance(data, dict):
        raise ContractError("data: must be an object")
    _unknown_keys(data, _DATA_KEYS, "data.")
    if "id" not in data:
        raise ContractError("data.id: required")
    item_id = data["id"]
    if not isinstance(item_id, str):
        raise ContractError("data.id: must be a string")
    if event_type == "customShelf":
        if item_id != "":
            raise ContractError('data.id: must be "" for customShelf')
    elif not item_id:
        raise ContractError(f"data.id: must be a non-empty string for {event_type}")
    return item_id


def validate(body: object) -> Event:
    """Check a decoded body against the contract and return the :class:`Event`.

    Raises :class:`ContractError` naming the first offending field, checked in
    the order: unknown keys, sessionId, userId, eventType, data. Pure.
    """
    if not isinstance(body, dict):
        raise ContractError("body: must be a JSON object")
    _unknown_keys(body, _TOP_LEVEL_KEYS, "")
    session_id = _non_empty_string(body, "sessionId", "sessionId")
    user_id = _user_id(body)
    event_type = _event_type(body)
    return Event(event_type, _item_id(body, event_type), session_id, user_id)


def parse_body(raw: bytes) -> Event:
    """Decode and validate in one step; raises :class:`ContractError`."""
    return validate(decode_json(raw))

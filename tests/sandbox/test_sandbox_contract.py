"""The contract check on its own: the seed's examples pass, each break names its field."""

from __future__ import annotations

import pytest

from fashionai_pipeline.sandbox.contract import (
    EVENT_TYPES,
    ContractError,
    Event,
    decode_json,
    parse_body,
    validate,
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "userId": "90",
                "sessionId": "sess456",
                "eventType": "productView",
                "data": {"id": "id789"},
            },
            Event("productView", "id789", "sess456", "90"),
        ),
        (
            {"sessionId": "sess456", "eventType": "categoryView", "data": {"id": "category789"}},
            Event("categoryView", "category789", "sess456", None),
        ),
        (
            {
                "userId": "90",
                "sessionId": "s",
                "eventType": "shopTheLook",
                "data": {"id": "product789"},
            },
            Event("shopTheLook", "product789", "s", "90"),
        ),
        (
            {"sessionId": "s", "eventType": "customShelf", "data": {"id": ""}},
            Event("customShelf", "", "s", None),
        ),
    ],
)
def test_seed_examples_are_accepted(body: dict[str, object], expected: Event) -> None:
    assert validate(body) == expected


def test_event_types_are_the_four_from_the_seed() -> None:
    assert set(EVENT_TYPES) == {"productView", "categoryView", "shopTheLook", "customShelf"}


def _valid() -> dict[str, object]:
    return {"userId": "u", "sessionId": "s", "eventType": "productView", "data": {"id": "p"}}


def _with(**changes: object) -> dict[str, object]:
    body = _valid()
    for key, value in changes.items():
        if value is KeyError:
            del body[key]
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_with(sessionId=KeyError), "sessionId: required"),
        (_with(sessionId=""), "sessionId: must be a non-empty string"),
        (_with(sessionId=123), "sessionId: must be a non-empty string"),
        (_with(userId=None), "userId: must be a non-empty string, not null"),
        (_with(userId=""), "userId: must be a non-empty string"),
        (_with(userId=90), "userId: must be a non-empty string"),
        (_with(eventType=KeyError), "eventType: required"),
        (_with(eventType="productview"), "eventType: must be one of productView"),
        (_with(eventType=["productView"]), "eventType: must be one of"),
        (_with(data=KeyError), "data: required"),
        (_with(data="p"), "data: must be an object"),
        (_with(data={}), "data.id: required"),
        (_with(data={"id": 7}), "data.id: must be a string"),
        (_with(data={"id": ""}), "data.id: must be a non-empty string for productView"),
        (_with(eventType="customShelf"), 'data.id: must be "" for customShelf'),
        (_with(extra=1), "extra: unknown field"),
        (_with(data={"id": "p", "sku": "x"}), "data.sku: unknown field"),
        ([], "body: must be a JSON object"),
        (None, "body: must be a JSON object"),
    ],
)
def test_each_break_is_refused_naming_the_field(body: object, reason: str) -> None:
    with pytest.raises(ContractError) as caught:
        validate(body)
    assert caught.value.reason.startswith(reason)


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"\xff\xfe", b'{"sessionId": NaN}', b"\xef\xbb\xbf{}", b"{'a': 1}"],
)
def test_non_json_is_refused(raw: bytes) -> None:
    with pytest.raises(ContractError, match=r"^body: not valid JSON$"):
        decode_json(raw)


def test_duplicate_keys_are_refused_rather_than_guessed() -> None:
    raw = b'{"sessionId": "a", "sessionId": "b", "eventType": "customShelf", "data": {"id": ""}}'
    with pytest.raises(ContractError, match=r"^sessionId: duplicate key$"):
        parse_body(raw)


def test_parse_body_accepts_utf8_text() -> None:
    raw = '{"sessionId": "sessão", "eventType": "categoryView", "data": {"id": "calças"}}'
    assert parse_body(raw.encode()) == Event("categoryView", "calças", "sessão")

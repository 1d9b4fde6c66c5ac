import json

import pytest

from fashionai_pipeline.producers.errors import InvalidEvent
from fashionai_pipeline.producers.event import EVENT_TYPES, event_body, make_event, parse_event
from fashionai_pipeline.producers.message import InvalidMessage, decode, encode


@pytest.mark.parametrize("event_type", EVENT_TYPES)
@pytest.mark.parametrize("user", [None, "90"])
def test_body_is_exactly_the_seed_shape(event_type, user):
    item = "" if event_type == "customShelf" else "id789"
    body = make_event(event_type, "sess456", item, user).body()
    expected = {"sessionId": "sess456", "eventType": event_type, "data": {"id": item}}
    if user is not None:
        expected = {"userId": user, **expected}
    assert body == expected
    assert list(body) == list(expected)  # the seed's key order, userId first when present
    assert "null" not in json.dumps(body)


@pytest.mark.parametrize(
    ("raw", "field", "rule"),
    [
        ({"eventType": "productView", "data": {"id": "p"}}, "sessionId", "required"),
        ({"sessionId": "", "eventType": "productView", "data": {"id": "p"}}, "sessionId", "at least 1"),
        ({"sessionId": 7, "eventType": "productView", "data": {"id": "p"}}, "sessionId", "string"),
        ({"sessionId": "s", "eventType": "pageView", "data": {"id": "p"}}, "eventType", "one of"),
        ({"sessionId": "s", "data": {"id": "p"}}, "eventType", "required"),
        ({"sessionId": "s", "eventType": "productView"}, "data", "required"),
        ({"sessionId": "s", "eventType": "productView", "data": {}}, "data.id", "required"),
        ({"sessionId": "s", "eventType": "productView", "data": {"id": ""}}, "data.id", "non-empty"),
        ({"sessionId": "s", "eventType": "categoryView", "data": {"id": ""}}, "data.id", "non-empty"),
        ({"sessionId": "s", "eventType": "shopTheLook", "data": {"id": ""}}, "data.id", "non-empty"),
        ({"sessionId": "s", "eventType": "customShelf", "data": {"id": "x"}}, "data.id", '""'),
        ({"sessionId": "s", "eventType": "productView", "data": {"id": 5}}, "data.id", "string"),
        (
            {"sessionId": "s", "userId": None, "eventType": "productView", "data": {"id": "p"}},
            "userId",
            "null",
        ),
        (
            {"sessionId": "s", "userId": 90, "eventType": "productView", "data": {"id": "p"}},
            "userId",
            "string",
        ),
        ({"sessionId": "s", "eventType": "productView", "data": {"id": "p"}, "extra": 1}, "extra", "unknown"),
        (
            {"sessionId": "s", "eventType": "productView", "data": {"id": "p", "sku": "x"}},
            "data.sku",
            "unknown",
        ),
    ],
)
def test_invalid_events_name_the_field(raw, field, rule):
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    assert info.value.field == field
    assert rule in str(info.value)
    assert str(info.value).startswith(f"{field}: ")


def test_non_object_body_is_refused():
    with pytest.raises(InvalidEvent, match="body: must be a JSON object"):
        parse_event(["not", "an", "object"])  # type: ignore[arg-type]


def test_envelope_round_trip_and_bad_messages():
    body = make_event("productView", "s", "p", "u").body()
    env = decode(encode("abc", "default", 12.5, body, 2))
    assert (env.id, env.tenant, env.ts, env.attempt, env.event.body()) == ("abc", "default", 12.5, 2, body)
    for raw, reason in [
        (b"{not json", "not valid JSON"),
        (b"[1,2]", "must be a JSON object"),
        (b'{"v": 9}', "unsupported envelope version"),
        (b'{"v":1,"id":"a","tenant":"t","ts":1,"attempt":0,"event":{"sessionId":"s"}}', "event.eventType"),
        (b'{"v":1,"tenant":"t","ts":1,"attempt":0,"event":{}}', "id: required"),
    ]:
        with pytest.raises(InvalidMessage, match=reason):
            decode(raw)


class _Str(str):
    pass


_PARTS = ["s", "", "x" * 512, "x" * 513, "雪" * 512, 7, None, _Str("sub"), b"bytes"]


def _outcome(fn, *args):
    try:
        body = fn(*args)
    except InvalidEvent as exc:
        return ("invalid", exc.field, exc.rule)
    return ("body", list(body.items()))


@pytest.mark.parametrize("event_type", [*EVENT_TYPES, "pageView", ""])
def test_event_body_shortcut_agrees_with_the_model_on_every_combination(event_type):
    # The typed publish helpers skip the model for plainly valid parts; every
    # other input must get exactly the model's answer (body, or field and rule).
    def by_model(*args):
        return make_event(*args).body()

    seen = set()
    for session_id in _PARTS:
        for item_id in _PARTS:
            for user_id in [None, *_PARTS]:
                args = (event_type, session_id, item_id, user_id)
                expected = _outcome(by_model, *args)
                assert _outcome(event_body, *args) == expected, args
                seen.add(expected[0])
    if event_type in EVENT_TYPES:
        assert seen == {"body", "invalid"}  # both kinds of outcome were exercised

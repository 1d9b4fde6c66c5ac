"""The hand-written encoders on the request path against the general ones they replace."""

import json
import random

import pytest
import redis
from redis.connection import Connection

from fashionai_pipeline.producers.direct import pack
from fashionai_pipeline.producers.event import EVENT_TYPES, make_event
from fashionai_pipeline.producers.kombu_redis import encode_message
from fashionai_pipeline.producers.message import body_json, compact_json, decode, encode, encode_text
from fashionai_pipeline.producers.reader import merge
from fashionai_pipeline.producers.templates import PLAIN, TEMPLATES

# Strings a JSON encoder must escape, and some it must not touch.
AWKWARD = ["s", 'quo"te', "back\\slash", "new\nline", "tab\t", "ctl\x01", "é", "雪", "😀", "</script>", " "]


@pytest.mark.parametrize("event_type", EVENT_TYPES)
@pytest.mark.parametrize("user", [None, *AWKWARD])
def test_body_json_writes_exactly_what_the_json_encoder_writes(event_type, user):
    # FASHIONAI_JSON_TEMPLATES switches between the two codecs: off must change nothing on the wire.
    for text in AWKWARD:
        item = "" if event_type == "customShelf" else text
        body = make_event(event_type, text, item, user).body()
        assert body_json(body) == compact_json(body) == json.dumps(body, separators=(",", ":"))
        assert TEMPLATES.body(body) == PLAIN.body(body)
        envelope = TEMPLATES.envelope("0" * 32, text, 1764240000.125, body, 2)
        assert envelope == PLAIN.envelope("0" * 32, text, 1764240000.125, body, 2)
        frames = [
            codec.frame(envelope, f"q:{text}", "application/json", "ab" * 16) for codec in (TEMPLATES, PLAIN)
        ]
        assert frames[0] == frames[1] and json.loads(frames[1])["body"] == envelope


@pytest.mark.parametrize(
    "body",
    [
        {"sessionId": "s", "eventType": "productView", "data": {"id": "p", "extra": 1}},
        {"sessionId": "s", "eventType": "productView", "data": {"id": 7}},
        {"sessionId": "s", "eventType": "productView", "data": {}},
        {"sessionId": "s", "eventType": "productView", "other": {"id": "p"}},
        {"a": 1, "b": 2, "c": 3, "d": 4},
    ],
)
def test_body_json_hands_anything_else_to_the_encoder(body):
    # Never drops a key or writes a non-string as a string.
    assert json.loads(body_json(body)) == body


def test_envelope_text_round_trips_through_kombus_frame():
    body = make_event("shopTheLook", 'se"ss', "p\n1", "ü").body()
    text = encode_text("id1", 'ten"ant', 1764240000.125, body, 3)
    assert text.encode() == encode("id1", 'ten"ant', 1764240000.125, body, 3)
    framed = json.loads(encode_message(text, "q:1", tag="id1"))
    assert framed["properties"]["delivery_info"]["routing_key"] == "q:1"
    env = decode(framed["body"])
    got = (env.id, env.tenant, env.ts, env.attempt, env.event.body())
    assert got == ("id1", 'ten"ant', 1764240000.125, 3, body)
    assert encode_message(text.encode(), "q:1", tag="id1") == encode_message(text, "q:1", tag="id1")


@pytest.mark.parametrize(
    "args",
    [
        ("PING",),
        ("LPUSH", "q", '{"body":"x"}', "ünïcode 雪"),
        ("SET", b"\x00\xffbin\r\n", 12, -3, 1.5, 0.1),
        ("GET", ""),
    ],
)
def test_pack_writes_the_bytes_redis_py_writes(args):
    assert pack(args) == b"".join(Connection().pack_command(*args))


@pytest.mark.parametrize("bad", [True, None, ["list"], {"d": 1}])
def test_pack_refuses_what_redis_py_refuses(bad):
    with pytest.raises(redis.DataError, match=type(bad).__name__):
        pack(("SET", "k", bad))


def _merge_by_definition(ranked, native):
    """The rule, written plainly: ranked ids the page has (first occurrence), then the rest
    natively (first occurrence): each product once."""
    page = set(native)
    head = []
    for pid in ranked:
        if pid in page and pid not in head:
            head.append(pid)
    for pid in native:
        if pid not in head:
            head.append(pid)
    return head


def test_merge_agrees_with_its_definition_on_random_pages():
    rng = random.Random(5)
    for _ in range(2000):
        universe = [f"p{i}" for i in range(rng.randint(0, 30))]
        native = [rng.choice(universe) for _ in range(rng.randint(0, 25))] if universe else []
        ranked = [rng.choice([*universe, "gone"]) for _ in range(rng.randint(0, 12))] if universe else ["x"]
        assert merge(ranked, native) == _merge_by_definition(ranked, native), (ranked, native)

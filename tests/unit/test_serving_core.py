"""The sans-I/O parts of publish-and-wait: the envelope's notify field and how an answer is built."""

from __future__ import annotations

import json

import pytest

from fashionai_pipeline.producers.attribution import Served
from fashionai_pipeline.producers.errors import PublishUnknown
from fashionai_pipeline.producers.event import make_event
from fashionai_pipeline.producers.message import decode, encode_text
from fashionai_pipeline.producers.publishing import Receipt
from fashionai_pipeline.producers.reader import Command, Query, Ranking, ReaderCore
from fashionai_pipeline.producers.servercore import Checks, Expect, Publish, Serve, ServerCore, Wait, Watch
from fashionai_pipeline.producers.serving import check_wait
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.notify import notices

BODY = make_event("productView", "s1", "p1").body()


def test_notify_field_round_trips_and_older_envelopes_decode_without_it():
    with_notify = encode_text("a" * 32, "default", 1.5, BODY, notify="tok123")
    assert json.loads(with_notify)["notify"] == "tok123"
    assert decode(with_notify).notify == "tok123"
    assert decode(encode_text("a" * 32, "default", 1.5, BODY)).notify is None


@pytest.mark.parametrize("bad", [5, "", "x" * 65, "a b", "../x", None])
def test_a_malformed_notify_value_is_ignored_not_a_reason_to_refuse_the_event(bad):
    obj = json.loads(encode_text("a" * 32, "default", 1.5, BODY))
    obj["notify"] = bad
    env = decode(json.dumps(obj))
    assert env.notify is None
    assert env.event.body() == BODY


def test_encode_refuses_a_notify_value_a_decoder_would_drop():
    with pytest.raises(ValueError, match="notify"):
        encode_text("a" * 32, "default", 1.5, BODY, notify="has space")


def test_notices_reach_each_waiter_of_a_coalesced_group_and_the_key_channel_once():
    raw = [
        encode_text("1" * 32, "t", 1.0, BODY, notify="procA"),
        encode_text("2" * 32, "t", 1.1, BODY),
        encode_text("3" * 32, "t", 1.2, BODY, notify="key"),
        encode_text("4" * 32, "t", 1.3, BODY, notify="key"),
        encode_text("5" * 32, "t", 1.4, BODY, notify="procB"),
    ]
    out = notices([decode(r) for r in raw], "fashionai:t:rank:productView:p1:s:s1", '[1400,"x"]')
    assert out == [
        ("fashionai:reply:procA", '11111111111111111111111111111111 [1400,"x"]'),
        ("fashionai:t:rank:productView:p1:s:s1:landed", '[1400,"x"]'),
        ("fashionai:reply:procB", '55555555555555555555555555555555 [1400,"x"]'),
    ]
    assert notices([decode(raw[1])], "k", "[1]") == []  # nobody waits: nothing to publish


def _served(ranking, native, *, since_ms, now, message_id=None, notice=True):
    """What the reader's core answers for a ranking (as a notice, or as the cached value)."""
    core = ReaderCore(Settings(), clock=lambda: now)
    raw = None if ranking is None else json.dumps([round(ranking.enqueued_at * 1000), *ranking.products])
    q = Query("productView", "p1", "s1", None, None, native, since_ms=since_ms, message_id=message_id,
              notice=ranking if notice else None)  # fmt: skip
    plan = core.serve_plan(q)
    try:
        request = next(plan)
        while True:
            assert isinstance(request, Command) and request.args[0] == "GET"
            request = plan.send(raw)
    except StopIteration as stop:
        return stop.value


@pytest.mark.parametrize("notice", [True, False])
def test_served_labels_fresh_cached_and_native_from_a_notice_or_the_cache(notice):
    native = ["a", "b", "c"]
    fresh = _served(Ranking(["c", "x", "a"], 100.0), native, since_ms=100_000, now=100.25, message_id="m",
                    notice=notice)  # fmt: skip
    assert (fresh.products, fresh.source, fresh.age_ms, fresh.message_id) == (
        ["c", "a", "b"],
        "fresh",
        250,
        "m",
    )
    older = _served(Ranking(["b"], 99.0), native, since_ms=100_000, now=100.0, notice=notice)
    assert (older.source, older.age_ms, older.products) == ("cached", 1000, ["b", "a", "c"])
    assert _served(Ranking(["b"], 99.0), native, since_ms=None, now=100.0, notice=notice).source == "cached"
    assert _served(Ranking([], 100.0), native, since_ms=0, now=100.0, notice=notice).source == "native"
    none = _served(None, native, since_ms=0, now=1.0, notice=False)
    assert (none.products, none.source, none.age_ms) == (native, "native", None)


@pytest.mark.parametrize("bad", [-1, 5_001, 1.5, True, "100"])
def test_wait_ms_outside_its_range_names_the_field(bad):
    with pytest.raises(ValueError, match="wait_ms"):
        check_wait(bad)


def test_only_a_waited_message_cuts_its_batch_short():
    from fashionai_pipeline.worker.notify import cuts_batch

    waited = encode_text("a" * 32, "t", 1.0, BODY, notify="tok123")
    assert cuts_batch(waited) and cuts_batch(waited.encode())
    assert not cuts_batch(encode_text("a" * 32, "t", 1.0, BODY, notify="key"))
    assert not cuts_batch(encode_text("a" * 32, "t", 1.0, BODY))
    # The marker inside an event's own values is escaped JSON, never the envelope's field.
    sneaky = make_event("productView", ',"notify":"x', "p1").body()
    assert not cuts_batch(encode_text("a" * 32, "t", 1.0, sneaky))


class _Gate:
    def __init__(self, *, holdout=False, cache_open=False):
        self.holdout, self.cache_open = holdout, cache_open

    def in_holdout(self, session_id):
        return self.holdout


def _requests(plan, answers):
    """Every request `plan` makes, each answered by `answers(request)`, and what it returns."""
    made = []
    try:
        request = next(plan)
        while True:
            made.append(request)
            request = plan.send(answers(request))
    except StopIteration as stop:
        return made, stop.value


def _view(gate, publish_answer, notice=None, wait_ms=150):
    core = ServerCore(Settings(), gate)
    plan = core.view_plan(BODY, ["a", "b"], wait_ms, None, Checks(page_size=2), "tok123")

    def answers(request):
        if isinstance(request, Publish):
            return publish_answer(request)
        if isinstance(request, Wait):
            return notice if request.until == "notice" else None
        if isinstance(request, Serve):
            return request.query
        return None

    return _requests(plan, answers)


def test_a_view_in_the_holdout_or_behind_an_open_breaker_publishes_and_serves_without_waiting():
    for gate in (_Gate(holdout=True), _Gate(cache_open=True)):
        made, query = _view(gate, lambda r: Receipt("m" * 32, "published"))
        assert [type(r) for r in made] == [Publish, Serve]
        assert made[0].notify is None and made[0].message_id is None
        assert (query.message_id, query.since_ms, query.notice, query.page_size) == ("m" * 32, None, None, 2)
    _, unknown = _view(_Gate(holdout=True), lambda r: PublishUnknown("no answer", ["u" * 32]))
    assert unknown.message_id == "u" * 32
    _, dropped = _view(_Gate(holdout=True), lambda r: Receipt("d" * 32, "dropped"))
    assert dropped.message_id is None


def test_a_view_expects_its_notice_before_publishing_and_serves_what_the_notice_brought():
    made, query = _view(_Gate(), lambda r: Receipt(r.message_id, "published"), notice='[1000,"b","a"]')
    assert [type(r) for r in made] == [Expect, Wait, Publish, Wait, Serve]
    expect, ready, publish, wait = made[:4]
    assert ready.until == "ready" and 0 < ready.timeout <= 0.075
    assert (publish.message_id, publish.notify) == (expect.message_id, "tok123")
    assert wait.until == "notice" and 0 < wait.timeout <= 0.15
    assert query.message_id == expect.message_id and query.notice == Ranking(["b", "a"], 1.0)


@pytest.mark.parametrize("garbled", ["not json", "[]", '{"a": 1}', '["x"]'])
def test_a_garbled_notice_is_no_notice_the_view_reads_the_cache_instead(garbled):
    made, query = _view(_Gate(), lambda r: Receipt(r.message_id, "published"), notice=garbled)
    assert [type(r) for r in made] == [Expect, Wait, Publish, Wait, Serve]
    assert query.notice is None and query.message_id == made[0].message_id


def test_a_dropped_view_is_not_waited_for_and_shows_no_message_id():
    made, query = _view(_Gate(), lambda r: Receipt(r.message_id, "dropped"))
    assert [type(r) for r in made] == [Expect, Wait, Publish, Serve]
    assert query.message_id is None


def test_bad_arguments_raise_before_any_request():
    core = ServerCore(Settings(), _Gate())
    with pytest.raises(ValueError, match="wait_ms"):
        next(core.view_plan(BODY, None, 5_001, None, Checks(), "tok123"))
    with pytest.raises(ValueError, match="page_size"):
        next(core.view_plan(BODY, None, 150, None, Checks(page_size=0), "tok123"))
    with pytest.raises(ValueError, match="wait_ms"):
        next(core.read_plan("productView", "p1", "s1", None, None, -1, None, Checks()))


def _read(gate, first_source, notice, wait_ms=200):
    core = ServerCore(Settings(), gate)
    plan = core.read_plan("productView", "p1", "s1", ["a", "b"], None, wait_ms, "shop", Checks())
    served = iter([Served(["a", "b"], first_source, None), Served(["b", "a"], "fresh", 0)])

    def answers(request):
        if isinstance(request, Watch):
            return True
        if isinstance(request, Wait):
            return notice
        return next(served)

    return _requests(plan, answers)


def test_a_waiting_read_watches_the_key_then_serves_the_ranking_announced_as_new():
    made, served = _read(_Gate(), "native", '[1000,"b","a"]')
    assert [type(r) for r in made] == [Watch, Serve, Wait, Serve]
    assert made[0].key == "fashionai:shop:rank:productView:p1:s:s1"
    assert (made[3].query.since_ms, made[3].query.notice) == (0, Ranking(["b", "a"], 1.0))
    assert served.source == "fresh"
    # Nothing announced within the bound: the cache is read once more.
    made, _ = _read(_Gate(), "crowd", None)
    assert [type(r) for r in made] == [Watch, Serve, Wait, Serve] and made[3].query.notice is None


def test_a_read_answers_at_once_without_a_wait_for_a_cached_answer_the_holdout_or_an_open_breaker():
    for gate, source, wait_ms in [
        (_Gate(), "native", 0),
        (_Gate(holdout=True), "holdout", 200),
        (_Gate(cache_open=True), "fallback", 200),
    ]:
        made, served = _read(gate, source, None, wait_ms)
        assert [type(r) for r in made] == [Serve] and served.source == source
    made, served = _read(_Gate(), "cached", None)
    assert [type(r) for r in made] == [Watch, Serve] and served.source == "cached"

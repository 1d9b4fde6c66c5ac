"""ReaderCore.first_read names the cache command serve_plan sends first, without I/O: what the
page views send along with their publish (one round trip per page)."""

from __future__ import annotations

from fashionai_pipeline.producers.readcore import Command, Prefetched, Query, ReaderCore
from tests.conftest import make_settings

NATIVE = ["a", "b", "c"]


def _core(**overrides: object) -> ReaderCore:
    return ReaderCore(make_settings("redis://127.0.0.1:9/0", "http://127.0.0.1:9/unused", **overrides))


def _query(session: str = "s1", user: str | None = None) -> Query:
    return Query("productView", "p1", session, user, None, NATIVE)


def _first_command(core: ReaderCore, q: Query) -> tuple[str, ...] | None:
    request = next(core.serve_plan(q), None)
    return request.args if isinstance(request, Command) else None


def test_first_read_is_the_plans_first_command():
    for core in (_core(), _core(crowd=True)):
        for q in (_query(), _query(user="u1")):
            first = core.first_read(q)
            assert first is not None and first == _first_command(core, q)
    assert (_core().first_read(_query()) or ("",))[0] == "GET"
    assert (_core(crowd=True).first_read(_query()) or ("",))[0] == "MGET"


def test_no_first_read_in_the_holdout_or_while_the_breaker_is_open():
    assert _core(holdout=1.0).first_read(_query()) is None
    core = _core(read_breaker_failures=1)
    core.breakers["cache"].failure()
    assert core.breakers["cache"].is_open and core.first_read(_query()) is None


def test_a_prefetched_reply_stands_in_for_the_command():
    core = _core()
    q = _query()
    first = core.first_read(q)
    assert first is not None
    plan = core.serve_plan(q, Prefetched(first, b'[1700000000000,"c","a"]'))
    try:
        request = next(plan)
    except StopIteration as done:
        served = done.value
    else:
        raise AssertionError(f"the plan asked for {request} despite the prefetch")
    assert (served.products, served.source) == (["c", "a", "b"], "cached")
    assert core.stats.reads["hit"] == 1


def test_a_prefetch_of_another_command_is_ignored():
    core = _core()
    plan = core.serve_plan(_query(), Prefetched(("GET", "some-other-key"), b'[1,"c"]'))
    request = next(plan)
    assert isinstance(request, Command) and request.args == core.first_read(_query())

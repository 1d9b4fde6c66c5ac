import email.utils
import json

import aiohttp
import httpx
import pytest

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.reader import merge
from fashionai_pipeline.worker.delivery import Delivered, Failed, classify, network_failure, parse_retry_after
from fashionai_pipeline.worker.retry import RetryPolicy


def test_merge_puts_ranked_first_and_keeps_native_authority():
    native = ["a", "b", "c", "d", "e"]
    assert merge(["d", "zz", "b", "d"], native) == ["d", "b", "a", "c", "e"]
    assert merge([], native) == native
    assert merge(["unknown"], native) == native


def test_ranking_keys_use_user_when_present_and_escape_separators():
    assert keys.ranking("t", "productView", "p1", "s1", None) == "fashionai:t:rank:productView:p1:s:s1"
    assert keys.ranking("t", "productView", "p1", "s1", "u9") == "fashionai:t:rank:productView:p1:u:u9"
    assert keys.ranking("t", "customShelf", "", "s1", None) == "fashionai:t:rank:customShelf::s:s1"
    assert keys.ranking("t", "productView", "a:s:b", "c", None) != keys.ranking(
        "t", "productView", "a", "b:s:c", None
    )


@pytest.mark.parametrize(
    ("status", "retryable", "auth"),
    [
        (400, False, False),
        (401, True, True),
        (403, False, False),
        (404, False, False),
        (422, False, False),
        (408, True, False),
        (429, True, False),
        (500, True, False),
        (502, True, False),
        (503, True, False),
    ],
)
def test_classify_statuses(status, retryable, auth):
    outcome = classify(status, b'{"error": "x"}', None)
    assert isinstance(outcome, Failed)
    assert (outcome.retryable, outcome.auth, outcome.status) == (retryable, auth, status)


def test_classify_success_and_bad_success_bodies():
    assert classify(200, b'{"products": ["a", "b"]}', None) == Delivered(["a", "b"])
    assert classify(200, b'{"products": []}', None) == Delivered([])
    for body in (b"nope", b'{"items": []}', b'{"products": [1]}', b'{"products": "a"}'):
        outcome = classify(200, body, None)
        assert isinstance(outcome, Failed) and not outcome.retryable


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("7") == 7.0
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == pytest.approx(30.0)
    assert parse_retry_after("garbage") is None
    assert classify(429, b"", "3").retry_after == 3.0  # type: ignore[union-attr]


def test_backoff_full_jitter_capped_and_honours_retry_after():
    seen: list[tuple[float, float]] = []

    def rand(lo: float, hi: float) -> float:
        seen.append((lo, hi))
        return hi

    policy = RetryPolicy(base=0.5, cap=10.0, max_attempts=5, max_age=60.0, rand=rand)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert all(lo == 0.0 for lo, _ in seen)  # full jitter draws from zero
    assert policy.delay(1, retry_after=30.0) == 30.0
    assert policy.give_up(5, 1.0) is not None
    assert policy.give_up(4, 61.0) is not None
    assert policy.give_up(4, 1.0) is None


def test_a_ranking_keeps_its_first_ids_up_to_the_bound_and_refuses_giant_ids():
    many = {"products": [f"p{i}" for i in range(800)]}
    outcome = classify(200, json.dumps(many).encode(), None, max_items=500)
    assert isinstance(outcome, Delivered) and outcome.products == [f"p{i}" for i in range(500)]
    giant = classify(200, json.dumps({"products": ["x" * 10_000]}).encode(), None)
    assert isinstance(giant, Failed) and not giant.retryable and "product id over" in giant.reason


def _mapped(cause: BaseException) -> BaseException:
    # What the httpx-aiohttp transport raises: an httpx error whose cause is aiohttp's.
    try:
        raise httpx.ConnectTimeout(str(cause)) from cause
    except httpx.ConnectTimeout as exc:
        return exc


def test_a_reset_or_an_eof_is_not_reported_as_a_timeout():
    eof = network_failure(_mapped(aiohttp.ServerDisconnectedError()), 7.0)
    reset = network_failure(_mapped(aiohttp.ClientOSError(104, "Connection reset by peer")), 7.0)
    assert eof.reason == "connection closed by upstream before an answer" and eof.retryable
    assert reset.reason == "connection error: ClientOSError" and reset.retryable
    assert network_failure(TimeoutError(), 7.0).reason == "timeout after 7s"
    assert network_failure(_mapped(aiohttp.SocketTimeoutError()), 7.0).reason == "timeout after 7s"
    assert network_failure(httpx.ReadTimeout("slow"), 7.0).reason == "timeout after 7s"

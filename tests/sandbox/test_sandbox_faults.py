"""Failure injection over real HTTP: 429, 5xx, timeouts, latency, and what gets recorded."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import pytest

from fashionai_pipeline.sandbox import SandboxServer
from fashionai_pipeline.sandbox.limits import SlidingWindowLimit

MakeEvent = Callable[..., dict[str, object]]
Post = Callable[..., httpx.Response]


def test_rate_429_answers_429_with_retry_after_seconds(
    post: Post, make_event: MakeEvent, server: SandboxServer
) -> None:
    server.configure(rate_429=1.0, retry_after=7)
    response = post(make_event("productView", "p0001"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert "error" in response.json()


def test_rate_429_can_send_retry_after_as_http_date(
    post: Post, make_event: MakeEvent, server: SandboxServer
) -> None:
    server.configure(rate_429=1.0, retry_after=120, retry_after_http_date=True)
    response = post(make_event("productView", "p0001"))
    assert response.status_code == 429
    when = parsedate_to_datetime(response.headers["retry-after"])
    ahead = (when - datetime.now(UTC)).total_seconds()
    assert 110 <= ahead <= 121


def test_rate_5xx_answers_server_errors(post: Post, make_event: MakeEvent, server: SandboxServer) -> None:
    server.configure(rate_5xx=1.0)
    statuses = {post(make_event("productView", "p0001")).status_code for _ in range(30)}
    assert statuses <= {500, 502, 503}
    assert len(statuses) > 1  # the three kinds are all in play


def test_refusals_win_over_injected_failures(
    post: Post, make_event: MakeEvent, server: SandboxServer
) -> None:
    server.configure(rate_429=1.0)
    assert post(make_event("productView", "")).status_code == 400
    assert post(make_event("productView", "p0001"), token="nope").status_code == 401


def test_latency_adds_at_least_the_configured_delay(
    post: Post, make_event: MakeEvent, server: SandboxServer
) -> None:
    server.configure(latency_ms=250)
    started = time.perf_counter()
    response = post(make_event("productView", "p0001"))
    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.25


def test_latency_does_not_delay_the_log(post: Post, make_event: MakeEvent, server: SandboxServer) -> None:
    server.configure(latency_ms=100, latency_jitter_ms=50)
    started = time.perf_counter()
    post(make_event("productView", "p0001"))
    assert time.perf_counter() - started >= 0.1
    assert server.requests()[-1]["status"] == 200


@pytest.mark.parametrize("knob", ["rate_429", "rate_5xx"])
def test_injected_failures_are_not_recorded_into_history(
    post: Post, make_event: MakeEvent, server: SandboxServer, knob: str
) -> None:
    server.configure(**{knob: 1.0})
    for pid in ("p0001", "p0002"):
        assert post(make_event("productView", pid, "s")).status_code >= 429
    server.configure(**{knob: 0.0})
    # Had the failed events been recorded, two earlier events would fill the shelf.
    assert post(make_event("customShelf", "", "s")).json() == {"products": []}
    assert [entry["status"] for entry in server.requests()][-1] == 200


def test_rate_timeout_sleeps_then_answers_504(
    post: Post, make_event: MakeEvent, server: SandboxServer
) -> None:
    server.configure(rate_timeout=1.0, timeout_sleep_s=0.6)
    with pytest.raises(httpx.ReadTimeout):
        post(make_event("productView", "p0001", "t"), timeout=0.2)
    started = time.perf_counter()
    response = post(make_event("productView", "p0002", "t"))
    assert response.status_code == 504
    assert time.perf_counter() - started >= 0.6
    server.configure(rate_timeout=0.0)
    assert post(make_event("customShelf", "", "t")).json() == {"products": []}


def _statuses(post: Post, make_event: MakeEvent, n: int) -> list[int]:
    return [post(make_event("productView", "p0001")).status_code for _ in range(n)]


def test_seed_makes_failure_injection_reproducible(
    post: Post, make_event: MakeEvent, server: SandboxServer, client: httpx.Client
) -> None:
    server.configure(seed=7, rate_5xx=0.3, rate_429=0.2)
    first = _statuses(post, make_event, 25)
    server.configure(seed=7)
    assert _statuses(post, make_event, 25) == first
    assert client.patch(f"{server.base_url}/_sandbox/config", json={"seed": 7}).status_code == 200
    assert _statuses(post, make_event, 25) == first
    assert {200, 429} <= set(first)
    assert set(first) & {500, 502, 503}
    server.configure(seed=8)
    assert _statuses(post, make_event, 25) != first


def test_sliding_window_admits_at_most_the_limit_in_any_second() -> None:
    now = [100.0]
    window = SlidingWindowLimit(clock=lambda: now[0])
    admitted = []
    for t in (100.0, 100.2, 100.4):
        now[0] = t
        admitted.append(window.admit(3))
    assert admitted == [None, None, None]
    assert window.admit(3) == 1  # the fourth within the same second
    now[0] = 100.5
    assert window.admit(3) == 1  # still inside the window of the first three
    now[0] = 101.0
    assert window.admit(3) is None  # the first arrival left the window
    assert window.admit(3) == 1  # the refused one did not count, the 2nd and 3rd still do
    assert window.admit(0) is None  # 0: no limit


def test_rate_limit_rps_answers_429_with_retry_after(
    post: Post, make_event: MakeEvent, server: SandboxServer, client: httpx.Client
) -> None:
    response = client.patch(f"{server.base_url}/_sandbox/config", json={"rate_limit_rps": 2})
    assert response.json()["rate_limit_rps"] == 2
    answers = [post(make_event("productView", f"p000{i + 1}", "limited")) for i in range(8)]
    statuses = [a.status_code for a in answers]
    assert statuses[:2] == [200, 200]
    assert 429 in statuses  # eight requests on loopback take far less than a second
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"].startswith("rate limited")
    assert server.requests()[statuses.index(429)]["status"] == 429
    # refused requests are not recorded: only the accepted views count as history
    assert server.state.engine.history("limited").signals == statuses.count(200)
    server.configure(rate_limit_rps=0)
    assert all(post(make_event("productView", "p0001")).status_code == 200 for _ in range(5))

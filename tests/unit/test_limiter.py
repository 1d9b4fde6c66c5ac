"""The limiter's policy around its scripts: who sleeps how long, how often the cooldown is read."""

from __future__ import annotations

import asyncio

import pytest

from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.clock import MockedClock
from fashionai_pipeline.worker.limiter import Limiter, tolerance_slots


class ScriptedGates:
    """Answers acquisitions from a list of [granted, wait_us]; the cooldown from `cooldown_until`."""

    def __init__(self, clock: MockedClock, answers: list[list[int]] | None = None) -> None:
        self.clock = clock
        self.answers = list(answers or [])
        self.asked = 0
        self.cooldown_reads = 0
        self.cooldown_until = 0.0
        self.paused: list[tuple[int, str]] = []

    async def acquire(self, rate_key: str, cooldown_key: str, interval_us: float, tau_us: float) -> list[int]:
        self.asked += 1
        return self.answers.pop(0) if self.answers else [1, 0]

    async def cooldown_ms(self, cooldown_key: str) -> int:
        self.cooldown_reads += 1
        return int((self.cooldown_until - self.clock.monotonic()) * 1000)

    async def pause(self, cooldown_key: str, ms: int, reason: str) -> bool:
        longer = self.clock.monotonic() + ms / 1000 > self.cooldown_until
        if longer:
            self.cooldown_until = self.clock.monotonic() + ms / 1000
        self.paused.append((ms, reason))
        return longer


def limiter(rate: float = 0.0, burst: int = 10) -> tuple[Limiter, ScriptedGates, MockedClock]:
    clock = MockedClock()
    gates = ScriptedGates(clock)
    return Limiter(gates, Settings(tenant="t", rate_limit=rate, rate_burst=burst), clock=clock), gates, clock


def test_without_a_rate_acquire_waits_out_the_shared_cooldown_then_goes():
    lim, gates, clock = limiter()
    gates.cooldown_until = 2.0
    asyncio.run(lim.acquire())
    assert clock.monotonic() == pytest.approx(2.0, abs=0.01)
    assert sum(clock.sleeps) == pytest.approx(2.0, abs=0.01)


def test_without_a_rate_the_cooldown_is_read_at_most_every_tenth_of_a_second():
    lim, gates, clock = limiter()

    async def many() -> None:
        for _ in range(50):
            await lim.acquire()
        clock.advance(0.1)
        await lim.acquire()

    asyncio.run(many())
    assert gates.cooldown_reads == 2


def test_with_a_rate_acquire_sleeps_what_the_script_says_and_asks_again():
    lim, gates, clock = limiter(rate=100)
    gates.answers = [[0, 30_000], [-1, 500_000], [1, 0]]
    asyncio.run(lim.acquire())
    assert gates.asked == 3
    assert clock.sleeps == [pytest.approx(0.03), pytest.approx(0.5)]


def test_a_zero_wait_answer_still_sleeps_a_little_rather_than_spin():
    lim, gates, clock = limiter(rate=100)
    gates.answers = [[0, 0], [1, 0]]
    asyncio.run(lim.acquire())
    assert clock.sleeps and clock.sleeps[0] > 0


def test_pause_lengthens_the_cooldown_and_the_next_acquire_sees_it_at_once():
    lim, gates, clock = limiter()

    async def run() -> None:
        await lim.acquire()  # reads the (empty) cooldown
        await lim.pause(3.0, "429")
        await lim.acquire()  # must not trust the cached "no cooldown"

    asyncio.run(run())
    assert gates.paused == [(3000, "429")]
    assert clock.monotonic() == pytest.approx(3.0, abs=0.01)


@pytest.mark.parametrize(("rate", "burst"), [(50, 5), (200, 10), (100, 10), (50, 1), (1000, 10), (10, 50)])
def test_tolerance_leaves_part_of_the_burst_for_late_sends(rate, burst):
    # Grants in any 1 s span are at most rate + tolerance: always at least one slot of
    # the burst is kept back for a request that leaves later than its grant.
    assert rate + tolerance_slots(rate, burst) <= rate + burst - 1


def test_tolerance_grows_with_the_burst_and_is_zero_without_a_rate():
    assert tolerance_slots(0, 10) == 0
    values = [tolerance_slots(100, b) for b in range(1, 40)]
    assert values == sorted(values) and values[-1] > values[0]

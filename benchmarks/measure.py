"""What the benchmarks read off the operating system and off samples.

CPU time and peak RSS of a process tree come from /proc (Linux only): the tree
is the root process plus every descendant alive when it is sampled. A process's
CPU is utime + stime + cutime + cstime, so descendants that already exited and
were reaped still count, and nothing is counted twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """`pid` and every live descendant, parents first. Empty when `pid` is gone."""
    if not os.path.exists(f"/proc/{pid}"):
        return []
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(_children(current))
    return out


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids.extend(int(x) for x in fh.read().split())
        except OSError:
            continue
    return kids


def cpu_seconds(pid: int) -> float:
    """CPU seconds used by one process and its reaped children; 0.0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return 0.0
    # The command name may contain spaces; fields resume after its closing ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / _TICK


def tree_cpu_seconds(roots: Sequence[int]) -> float:
    """CPU seconds of every process in the trees under `roots`, summed."""
    return sum(cpu_seconds(pid) for root in roots for pid in descendants(root))


@dataclass(frozen=True)
class Memory:
    peak_rss_mb: dict[int, float]  # pid -> VmHWM
    rss_mb: dict[int, float]  # pid -> VmRSS when sampled
    pss_mb: dict[int, float]  # pid -> Pss when sampled: shared pages split between their sharers

    @property
    def total_pss_mb(self) -> float:
        """What the tree occupies now, each page counted once (prefork children share
        their parent's pages until written; RSS counts them in every process)."""
        return sum(self.pss_mb.values())

    @property
    def max_peak_mb(self) -> float:
        return max(self.peak_rss_mb.values(), default=0.0)

    @property
    def total_peak_mb(self) -> float:
        return sum(self.peak_rss_mb.values())


def _status_kb(pid: int, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _pss_kb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def tree_memory(roots: Sequence[int]) -> Memory:
    pids = [pid for root in roots for pid in descendants(root)]
    return Memory(
        peak_rss_mb={pid: _status_kb(pid, "VmHWM") / 1024 for pid in pids},
        rss_mb={pid: _status_kb(pid, "VmRSS") / 1024 for pid in pids},
        pss_mb={pid: _pss_kb(pid) / 1024 for pid in pids},
    )


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil without float error
    return float(ordered[int(rank) - 1])


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def take_turns(
    calls: Mapping[str, Callable[[int], object]],
    *,
    block: int,
    rounds: int,
    warm_rounds: int = 1,
    after_round: Callable[[bool], None] | None = None,
) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Time `calls` one by one, each taking its turn for `block` calls per round.

    A slow spell of the machine (other processes, CPU frequency) then lands on
    every contender alike, while each runs warm as in a loop of its own. The
    first `warm_rounds` rounds are not recorded. Returns per-call wall times
    (ns) and this thread's CPU time (ns) over the recorded rounds, per name.
    `after_round(recorded)` runs after each round (extra work that takes turns too).
    """
    samples: dict[str, list[int]] = {name: [] for name in calls}
    cpu: dict[str, int] = dict.fromkeys(calls, 0)
    for rnd in range(warm_rounds + rounds):
        recorded = rnd >= warm_rounds
        for name, call in calls.items():
            c0 = time.thread_time_ns()
            for i in range(rnd * block, (rnd + 1) * block):
                t0 = time.perf_counter_ns()
                call(i)
                if recorded:
                    samples[name].append(time.perf_counter_ns() - t0)
            if recorded:
                cpu[name] += time.thread_time_ns() - c0
        if after_round is not None:
            after_round(recorded)
    return samples, cpu

"""`python -m benchmarks.event_loop_ab [asyncio uvloop ...]`: the delivery loop, A/B.

Drains the same 20,000-event backlog with `worker -c 2` once per argument
(FASHIONAI_EVENT_LOOP), alternating, against the sandbox at 50 ms, and prints
events/s (worker start included) and CPU per event over the worker's processes.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import redis
from pydantic import SecretStr

from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.local import start_sandbox, start_worker


def _cpu_seconds(pid: int) -> float:
    children = open(f"/proc/{pid}/task/{pid}/children").read().split()  # noqa: SIM115
    total = 0
    for p in [pid, *map(int, children)]:
        fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def main(loops: list[str], n: int = 20_000) -> None:
    log_dir = tempfile.mkdtemp(prefix="bench-loop-")
    sandbox = start_sandbox("ab-token", log_dir=log_dir, knobs=["--latency-ms", "50"])
    try:
        for loop in loops:
            tenant = f"ab{loop}{time.time_ns()}"
            settings = Settings(
                api_url=sandbox.extra["url"],
                app_token=SecretStr("ab-token"),
                queue=f"bench.ab.{tenant}",
                tenant=tenant,
                broker_url="redis://127.0.0.1:6379/12",
                redis_url="redis://127.0.0.1:6379/13",
                state_url="redis://127.0.0.1:6379/13",  # counters beside the rankings, read below
                event_loop=loop,
            )
            with Publisher(settings) as pub:
                for i in range(n):
                    pub.product_view(f"s{i}", f"p{i % 500}")
            cache = redis.Redis.from_url(settings.redis_url)
            started = time.time()
            worker = start_worker(settings, log_dir=log_dir, args=["-c", "2"])
            try:
                while int(cache.hget(keys.stats(tenant), "cached") or 0) < n:
                    time.sleep(0.02)
                elapsed, cpu = time.time() - started, _cpu_seconds(worker.pid)
            finally:
                worker.stop()
            cache.delete(keys.stats(tenant), keys.latency(tenant))
            print(
                f"{loop:<8} {n / elapsed:7.0f} events/s (start included)  {cpu * 1e6 / n:5.0f} us CPU/event"
            )
    finally:
        sandbox.stop()


if __name__ == "__main__":
    main(sys.argv[1:] or ["asyncio", "uvloop", "asyncio", "uvloop"])

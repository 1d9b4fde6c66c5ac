"""Enqueue->cache latency alone, at a rate you choose: for A/B runs of one setting.

    python -m benchmarks.latency --rate 1200 --seconds 10
    FASHIONAI_BATCH_INTERVAL_MS=20 python -m benchmarks.latency --rate 1200

The same measurement as the full benchmark's half-load section
(benchmarks.pressure.latency_at: a fresh sandbox at 50 ms, one worker node
`-c 2`, steady arrivals, samples from the worker's own latency list). Worker
settings come from the environment (FASHIONAI_*), as for any worker.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from benchmarks import pressure
from benchmarks.context import Bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.latency", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--rate", type=float, default=1200.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds (after 2 s warm-up)")
    parser.add_argument(
        "--redis", default="redis://127.0.0.1:6379", help="Redis base URL: db 0 is the broker, db 1 the cache"
    )
    args = parser.parse_args(argv)
    bench = Bench(quick=True, redis_base=args.redis.rstrip("/"))
    try:
        result = pressure.latency_at(bench, args.rate, args.seconds, warmup=2.0)
    finally:
        bench.close()
    print(
        f"enqueue->cache at {result.rate:,.0f}/s for {result.seconds:.0f} s: p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms, max {result.max_ms:.1f} ms ({result.samples:,} samples)"
    )
    print(json.dumps(asdict(result), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

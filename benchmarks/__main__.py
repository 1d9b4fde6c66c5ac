"""`python -m benchmarks [--json] [--quick] [--broker amqp]`: the project against its peers and its ceiling.

Runs from the repository root on this machine: the sandbox at 50 ms latency,
Redis as broker (db 0) and cache (db 1). Progress goes to stderr, the table to
stdout and, with --json, one JSON object as the last stdout line. A section
that fails is reported as an error and the run goes on; every child process is
stopped and every key the run created is deleted, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from benchmarks import costs, delivery, pressure, report
from benchmarks.context import Bench, progress
from benchmarks.measure import median
from fashionai_pipeline.producers.settings import redact_url


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: --quick keeps it to about a minute."""

    reps: int
    project_backlog: int
    threads_backlog: int
    prefork_backlog: int
    publish_calls: int
    read_calls: int
    latency_seconds: float
    memory_backlog: int
    memory_seconds: float
    rate_limit: float
    rate_seconds: float


QUICK = Plan(
    reps=1,
    project_backlog=5000,
    threads_backlog=800,
    prefork_backlog=100,
    publish_calls=1000,
    read_calls=3000,
    latency_seconds=3,
    memory_backlog=20_000,
    memory_seconds=4,
    rate_limit=100,
    rate_seconds=3,
)
# The smallest run that exercises every section: for the tests, whose figures mean nothing.
SMOKE = Plan(
    reps=1,
    project_backlog=1000,
    threads_backlog=200,
    prefork_backlog=40,
    publish_calls=300,
    read_calls=500,
    latency_seconds=1.5,
    memory_backlog=3000,
    memory_seconds=1.5,
    rate_limit=50,
    rate_seconds=1.5,
)
FULL = Plan(
    reps=3,
    project_backlog=30_000,
    threads_backlog=5000,
    prefork_backlog=600,
    publish_calls=5000,
    read_calls=20_000,
    latency_seconds=10,
    memory_backlog=200_000,
    memory_seconds=10,
    rate_limit=200,
    rate_seconds=8,
)


def _section(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # report it and run the other sections
        progress(f"{name} FAILED: {exc!r}")
        traceback.print_exc(file=sys.stderr)
        results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:500]
        return None


def _repeat(name: str, reps: int, run: Callable[[], delivery.Drain]) -> dict[str, Any]:
    runs = [asdict(run()) for _ in range(reps)]
    for r in runs:
        r.pop("t_first", None)
    middle = median([r["events_per_s"] for r in runs])
    chosen = min(runs, key=lambda r: abs(r["events_per_s"] - middle))
    progress(
        f"{name}: {middle:,.0f} events/s (median of {reps}), {chosen['cpu_us_per_event']:,.0f} us CPU/event"
    )
    return {"runs": runs, "median": chosen}


def _keep(results: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
    """Run a section; store its dataclass result as a dict under `key`."""
    value = _section(results, key, fn)
    if value is not None:
        results[key] = asdict(value)
    return value


def run(plan: Plan, bench: Bench, results: dict[str, Any], *, broker_only: bool = False) -> None:
    """Every section; with `broker_only`, the ones the broker changes (drains, publish costs)."""
    drains: dict[str, Any] = {}
    results["delivery"] = drains
    n = plan.project_backlog
    contenders: list[tuple[str, int, Callable[[], delivery.Drain]]] = [
        ("ceiling-aiohttp-200", plan.reps, lambda: delivery.run_ceiling(bench, n)),
        ("project", plan.reps, lambda: delivery.run_project(bench, n)),
        (
            "celery-threads-100",
            plan.reps,
            lambda: delivery.run_peer(bench, "threads", 100, plan.threads_backlog),
        ),
        ("celery-prefork-2", 1, lambda: delivery.run_peer(bench, "prefork", 2, plan.prefork_backlog)),
    ]
    if broker_only:  # the ceiling never touches the broker
        contenders = contenders[1:]
    for name, reps, fn in contenders:
        entry = _section(results, name, partial(_repeat, name, reps, fn))
        if entry:
            drains[name] = entry
        bench.clean()

    rtt = _section(results, "redis_rtt", lambda: costs.redis_round_trip(bench, plan.publish_calls))
    if rtt:
        results["redis_rtt"], results["redis_rtt_client"] = asdict(rtt[0]), asdict(rtt[1])
        results["redis_rtt_polled"] = asdict(rtt[2])
    publish = _section(results, "publish", lambda: costs.publish_costs(bench, plan.publish_calls))
    if publish:
        results["publish"] = {name: asdict(timing) for name, timing in publish.items()}
    if broker_only:
        return
    read = _section(results, "read", lambda: costs.read_costs(bench, plan.read_calls))
    if read:
        results["read"], results["read_polled"] = asdict(read["project"]), asdict(read["polled"])

    project = drains.get("project", {}).get("median")
    half = project["events_per_s"] / 2 if project else 500.0
    _keep(
        results,
        "latency",
        lambda: pressure.latency_at(bench, half, plan.latency_seconds, warmup=1.0 if plan.reps == 1 else 2.0),
    )
    bench.clean()
    _keep(
        results,
        "memory",
        lambda: pressure.memory_with_backlog(bench, plan.memory_backlog, plan.memory_seconds),
    )
    bench.clean()
    limited = _section(
        results, "rate_limit", partial(pressure.rate_limited, bench, plan.rate_limit, plan.rate_seconds)
    )
    results["rate_limit"] = [asdict(run) for run in limited or []]
    bench.clean()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--quick", action="store_true", help="small backlogs, one repetition (~1 min)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the smallest run of every section (the tests'; no figure counts)",
    )
    parser.add_argument(
        "--redis", default="redis://127.0.0.1:6379", help="Redis base URL: db 0 is the broker, db 1 the cache"
    )
    parser.add_argument(
        "--broker",
        choices=["redis", "amqp"],
        default="redis",
        help="broker of the delivery and publish sections (the others stage "
        "backlogs on Redis and stay there)",
    )
    parser.add_argument(
        "--amqp", default="amqp://guest:guest@127.0.0.1:5672//", help="RabbitMQ URL for --broker amqp"
    )
    parser.add_argument(
        "--broker-only",
        action="store_true",
        help="only the sections the broker changes: the drains of the project and its peers, publish costs",
    )
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally below stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    quick = args.quick or args.smoke
    plan = SMOKE if args.smoke else QUICK if args.quick else FULL
    bench = Bench(
        quick=quick,
        redis_base=args.redis.rstrip("/"),
        amqp_url=args.amqp if args.broker == "amqp" else None,
    )
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_start": os.getloadavg()[0],
            "quick": quick,
            "smoke": args.smoke,
            "python": platform.python_version(),
            "broker": redact_url(bench.delivery_broker_url),
            "cache": bench.cache_url,
            "run_id": bench.run_id,
        },
        "definition": delivery.DEFINITION,
        "plan": asdict(plan),
    }
    progress(f"run {bench.prefix}: logs in {bench.log_dir}")
    started = time.monotonic()
    try:
        run(plan, bench, results, broker_only=args.broker_only)
    finally:
        bench.close()
    results["machine"]["load_end"] = os.getloadavg()[0]
    results["machine"]["elapsed_s"] = time.monotonic() - started
    results["worker_log_errors"] = bench.log_errors
    report.derive(results)
    results["targets"] = report.targets(results)
    print(report.table(results))
    if args.json:
        print(json.dumps(results, separators=(",", ":"), default=str))
    return 0 if "errors" not in results else 1


if __name__ == "__main__":
    sys.exit(main())

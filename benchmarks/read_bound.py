"""`python -m benchmarks.read_bound`: how long a ranking read waits on a saturated page server.

The reader's bound (`FASHIONAI_READ_TIMEOUT_MS`) must be small enough that a page does not
notice a cache that is down, and large enough that a healthy read on a loaded server never
reaches it. This measures the second half: the product page of `benchmarks.pages` (200
products through a template; publish + read), on uvicorn + Starlette (one process) and
gunicorn gthread + Flask (one process, 8 threads), loaded by wrk on loopback with 1 (idle),
16 (the page-server benchmark's load) and 64 connections. Each page times its own read
(`benchmarks.read_pages`): the wall time its caller waits, GIL and event-loop waits
included, since that is what the bound counts.

Passes per server and load: a 1 s bound (nothing trips: the wall-time distribution), then
5, 10 and 15 ms and the shipped default: how many reads timed out (Redis did not answer
within the bound, as the reader judges it: a reply that arrived while the caller's thread or
loop was busy is not a timeout) and how many pages fell back (`source="fallback"`, the
timeouts plus the reads the breaker then short-circuited).

    python -m benchmarks.read_bound [--seconds 6] [--json]

Needs wrk and the local Redis; writes only keys and queues named with this run's id.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from typing import Any

import httpx

from benchmarks.page_server import Run, _number, _wait_ready
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.local import free_port

LOADS = (1, 16, 64)
CANDIDATES_MS = (2, 5, 10, 20, 50)
TRIED_MS = (5, 10, 15)  # bounds tried under load besides the default: how often each trips


def _servers(port: int) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "uvicorn+starlette": [
            py, "-m", "uvicorn", "benchmarks.read_pages:asgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning",
        ],
        "gunicorn-gthread+flask": [
            py, "-m", "gunicorn", "-k", "gthread", "--threads", "8", "-w", "1",
            "-b", f"127.0.0.1:{port}", "--log-level", "warning", "benchmarks.read_pages:wsgi",
        ],
    }  # fmt: skip


def _quantile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def measure(bench: Run, server: str, connections: int, bound_ms: int, seconds: float) -> dict[str, Any]:
    port = free_port()
    env = bench.env("project", {"FASHIONAI_READ_TIMEOUT_MS": str(bound_ms)})
    proc = subprocess.Popen(
        _servers(port)[server], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/product"
        _wait_ready(url, proc)
        _wrk(url, bench.lua, connections, 2.0)  # warm-up
        before = httpx.get(f"http://127.0.0.1:{port}/_samples", timeout=10).json()["reads"]
        out = _wrk(url, bench.lua, connections, seconds)
        got = httpx.get(f"http://127.0.0.1:{port}/_samples", timeout=10).json()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        bench.client.delete(bench.queue)
    ms = sorted(ns / 1e6 for ns in got["ns"])
    return {
        "server": server,
        "connections": connections,
        "bound_ms": bound_ms,
        "rps": _number(out, "Requests/sec:"),
        "reads": len(ms),
        "sources": got["sources"],
        "reads_by_outcome": {k: v - before.get(k, 0) for k, v in got["reads"].items()},
        "p50_ms": _quantile(ms, 0.50),
        "p99_ms": _quantile(ms, 0.99),
        "p999_ms": _quantile(ms, 0.999),
        "max_ms": ms[-1] if ms else float("nan"),
        "over_ms": {str(c): sum(1 for x in ms if x > c) for c in CANDIDATES_MS},
    }


def _wrk(url: str, lua: str, connections: int, seconds: float) -> str:
    threads = 1 if connections < 4 else 2
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "-s", lua, url],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    )  # fmt: skip
    return out.stdout


def run(
    seconds: float,
    redis_url: str,
    servers: list[str] | None = None,
    loads: tuple[int, ...] = LOADS,
    tried: tuple[int, ...] = TRIED_MS,
) -> dict[str, Any]:
    default_ms = Settings.model_fields["read_timeout_ms"].default
    bench = Run(redis_url)
    rows: list[dict[str, Any]] = []
    try:
        bench.seed_rankings()
        for server in servers or list(_servers(0)):
            for connections in loads:
                bounds = (1000,) if connections == 1 else (1000, *tried, default_ms)
                for bound in dict.fromkeys(bounds):
                    row = measure(bench, server, connections, bound, seconds)
                    rows.append(row)
                    print(_line(row), file=sys.stderr, flush=True)
    finally:
        bench.cleanup()
    return {"default_bound_ms": default_ms, "rows": rows, "load_at_end": os.getloadavg()}


def _line(row: dict[str, Any]) -> str:
    over = " ".join(f">{c}ms:{n}" for c, n in row["over_ms"].items())
    fallback = row["sources"].get("fallback", 0)
    outcomes = row["reads_by_outcome"]
    return (
        f"  {row['server']:<24} c={row['connections']:<3} bound={row['bound_ms']:>4}ms "
        f"{row['rps']:7.0f} req/s  reads {row['reads']:>6}  p50 {row['p50_ms']:6.2f}  "
        f"p99 {row['p99_ms']:6.2f}  p99.9 {row['p999_ms']:6.2f}  max {row['max_ms']:7.2f} ms  "
        f"{over}  fallback {fallback} (timeouts {outcomes.get('timeout', 0)}, "
        f"short-circuited {outcomes.get('short_circuit', 0)})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.read_bound", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per row")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="broker and cache for the run")
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    parser.add_argument("--server", action="append", choices=list(_servers(0)), help="only these servers")
    parser.add_argument("--loads", default=",".join(map(str, LOADS)), help="wrk connections, comma-separated")
    parser.add_argument(
        "--bounds", default=",".join(map(str, TRIED_MS)), help="bounds (ms) to try under load"
    )
    args = parser.parse_args(argv)
    loads = tuple(int(x) for x in args.loads.split(","))
    tried = tuple(int(x) for x in args.bounds.split(",") if x)
    result = run(args.seconds, args.redis, args.server, loads, tried)
    print("\n".join(_line(r) for r in result["rows"]))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

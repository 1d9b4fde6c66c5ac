"""The HTTP service: which stack, batched ingest, single-event ingest and reads at a rate.

    python -m benchmarks.http_service [--seconds 5] [--rate 500] [--no-amqp] [--json]

- stacks: the same two handlers (a 20-id JSON answer; a parsed 100-event body)
  on Starlette+uvicorn (httptools, uvloop), FastAPI on the same server, and an
  aiohttp server (the one chosen), each a subprocess; closed loop, fixed
  connections, interleaved rounds, the median round per stack. This is the
  measurement behind the choice of stack (docs/ARCHITECTURE.md).
- batched ingest: `fashionai-pipeline serve` itself, POST /v1/events with 500
  events per request from 4 connections, nothing consuming: events/s the
  service accepts (202) on the Redis broker, and on RabbitMQ with publisher
  confirms beside it. Target (issue 11): >= 20,000 events/s on Redis.
- single events and reads: one event per POST, and GET /v1/rankings of
  cached keys, each at `--rate` requests/s (open loop: a request's time counts
  from when it was due, so a stall is not hidden), p50/p99.

The load generator is asyncio on raw sockets in this process; it shares the
2 cores with the server, so compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import httpx

from benchmarks.context import Bench, progress
from benchmarks.measure import percentile
from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.local import free_port, settings_env

INGEST = "bench-ingest-key-0123456789"
_HERE = os.path.dirname(os.path.abspath(__file__))

# -- a minimal HTTP/1.1 client ---------------------------------------------------------


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


def _request(method: str, path: str, body: bytes = b"", auth: bool = True) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\n"
    if auth:
        head += f"Authorization: Bearer {INGEST}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def closed_loop(port: int, request: bytes, connections: int, seconds: float) -> dict[str, Any]:
    """As fast as `connections` keep-alive connections go, for `seconds`."""
    lat: list[float] = []
    statuses: dict[int, int] = {}
    stop = time.perf_counter() + seconds

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                status = await _exchange(reader, writer, request)
                lat.append((time.perf_counter() - t0) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    elapsed = time.perf_counter() - t0
    return {
        "requests_per_s": len(lat) / elapsed,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "statuses": statuses,
    }


async def open_loop(port: int, requests: list[bytes], rate: float, connections: int = 32) -> dict[str, Any]:
    """Send `requests` at `rate`/s; each request's time counts from when it was due."""
    lat: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (item := await queue.get()) is not None:
                due, request = item
                status = await _exchange(reader, writer, request)
                lat.append((time.perf_counter() - due) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    workers = [asyncio.ensure_future(one()) for _ in range(connections)]
    start = time.perf_counter()
    for i, request in enumerate(requests):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, request))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    return {
        "rate": rate,
        "achieved_per_s": len(lat) / elapsed,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "statuses": statuses,
    }


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def _events(tag: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"sessionId": f"{tag}-s{i}", "eventType": "productView", "data": {"id": f"p{i % 5000}"}}
        for i in range(start, start + n)
    ]


# -- sections ------------------------------------------------------------------------


def stacks(bench: Bench, seconds: float, rounds: int = 7) -> dict[str, Any]:
    """Each stack in its own process, all started at once, measured in interleaved rounds.

    The machine is shared: a neighbour's burst would favour whichever stack ran
    at a quiet moment. Short rounds in turn, and the median round per stack,
    put every stack through the same moments.
    """
    get = _request("GET", "/r?id=p1&sessionId=s1", auth=False)
    post = _request("POST", "/e", json.dumps({"events": _events("stack", 100)}).encode(), auth=False)
    names = ("starlette", "fastapi", "aiohttp")
    ports = {name: free_port() for name in names}
    procs = [
        bench.spawn(f"stack-{name}", [sys.executable, os.path.join(_HERE, "http_stacks.py"), name, str(port)])
        for name, port in ports.items()
    ]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {"get": [], "post_100_events": []} for n in names}
    try:
        for port in ports.values():
            _wait_http(f"http://127.0.0.1:{port}/r?id=x")
        progress(f"stacks: {rounds} interleaved rounds of {seconds / rounds:.1f} s per stack and handler")
        for _ in range(rounds):
            for name, port in ports.items():
                runs[name]["get"].append(asyncio.run(closed_loop(port, get, 20, seconds / rounds)))
                runs[name]["post_100_events"].append(
                    asyncio.run(closed_loop(port, post, 10, seconds / rounds))
                )
    finally:
        bench.stop(*procs)
    out: dict[str, Any] = {}
    for name, kinds in runs.items():
        out[name] = {}
        for kind, samples in kinds.items():
            ordered = sorted(samples, key=lambda r: r["requests_per_s"])
            out[name][kind] = {**ordered[len(ordered) // 2], "rounds": [r["requests_per_s"] for r in samples]}
    return out


def _serve(bench: Bench, broker_url: str, what: str) -> tuple[Any, int, Settings]:
    """`fashionai-pipeline serve` on a free port, on its own queue and tenant (no worker)."""
    settings = Settings(
        broker_url=broker_url, redis_url=bench.cache_url, queue=bench.name(what), tenant=bench.name(what)
    )
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FASHIONAI_")},
        **settings_env(settings),
        "FASHIONAI_INGEST_KEYS": INGEST,
        "FASHIONAI_LOG_LEVEL": "WARNING",
    }
    argv = [sys.executable, "-m", "fashionai_pipeline.worker.cli", "serve", "--port", str(port)]
    proc = bench.spawn(f"serve-{what}", argv, env)
    _wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc, port, settings


def batched_ingest(bench: Bench, broker_url: str, what: str, seconds: float) -> dict[str, Any]:
    proc, port, settings = _serve(bench, broker_url, what)
    try:
        body = json.dumps({"events": _events(what, 500)}).encode()
        progress(f"batched ingest ({what}): 500 events per POST, 4 connections, {seconds:.0f} s")
        result = asyncio.run(closed_loop(port, _request("POST", "/v1/events", body), 4, seconds))
        result["events_per_s"] = result["requests_per_s"] * 500 if set(result["statuses"]) == {202} else 0.0
        return result
    finally:
        bench.stop(proc)
        _drop_queue(bench, settings)


def _drop_queue(bench: Bench, settings: Settings) -> None:
    if settings.broker_url.startswith("redis"):
        bench.broker.delete(settings.queue)
        return
    from fashionai_pipeline.producers.broker import connect

    with connect(settings, timeout=5) as conn:
        conn.channel().queue_delete(settings.queue)


def single_and_reads(bench: Bench, rate: float, seconds: float) -> dict[str, Any]:
    proc, port, settings = _serve(bench, bench.broker_url, "single")
    try:
        n = int(rate * seconds)
        singles = [_request("POST", "/v1/events", json.dumps(e).encode()) for e in _events("single", n)]
        progress(f"single-event ingest at {rate:.0f}/s for {seconds:.0f} s")
        single = asyncio.run(open_loop(port, singles, rate))
        # Cached rankings to read: 1,000 shoppers, 12 products each.
        pipe = bench.cache.pipeline(transaction=False)
        now_ms = int(time.time() * 1000)
        for i in range(1000):
            key = keys.ranking(settings.tenant, "productView", "p1", f"reader-{i}", None)
            pipe.set(key, json.dumps([now_ms, *(f"p{j:04d}" for j in range(12))]), px=600_000)
        pipe.execute()
        reads = [
            _request("GET", f"/v1/rankings?eventType=productView&id=p1&sessionId=reader-{i % 1000}")
            for i in range(n)
        ]
        progress(f"ranking reads at {rate:.0f}/s for {seconds:.0f} s")
        read = asyncio.run(open_loop(port, reads, rate))
        return {"single_event_ingest": single, "ranking_reads": read}
    finally:
        bench.stop(proc)
        _drop_queue(bench, settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.http_service", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=500.0, help="requests/s for single events and reads")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--no-amqp", action="store_true")
    parser.add_argument("--no-stacks", action="store_true")
    parser.add_argument("--stacks-only", action="store_true", help="only the stack comparison")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    bench = Bench(quick=True)
    result: dict[str, Any] = {"load_avg_before": os.getloadavg()}
    try:
        if not args.no_stacks:
            result["stacks"] = stacks(bench, args.seconds)
        if args.stacks_only:
            result["load_avg_after"] = os.getloadavg()
            _print(result)
            if args.json:
                print(json.dumps(result, separators=(",", ":")))
            return 0
        result["batched_ingest"] = {
            "redis": batched_ingest(bench, bench.broker_url, "ingest-redis", args.seconds)
        }
        if not args.no_amqp:
            result["batched_ingest"]["amqp_confirms"] = batched_ingest(
                bench, args.amqp, "ingest-amqp", args.seconds
            )
        result.update(single_and_reads(bench, args.rate, args.seconds))
    finally:
        bench.close()
    result["load_avg_after"] = os.getloadavg()
    _print(result)
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    return 0


def _print(r: dict[str, Any]) -> None:
    print(
        f"HTTP service (load average before {r['load_avg_before'][0]:.2f},"
        f" after {r['load_avg_after'][0]:.2f})"
    )
    if "stacks" in r:
        print(
            f"{'stack':12} {'GET req/s':>10} {'p50 ms':>7} {'p99 ms':>7}"
            f" {'POST req/s':>11} {'p50 ms':>7} {'p99 ms':>7}"
        )
        for name, row in r["stacks"].items():
            g, p = row["get"], row["post_100_events"]
            print(
                f"{name:12} {g['requests_per_s']:>10,.0f} {g['p50_ms']:>7.2f} {g['p99_ms']:>7.2f}"
                f" {p['requests_per_s']:>11,.0f} {p['p50_ms']:>7.2f} {p['p99_ms']:>7.2f}"
            )
    if "batched_ingest" not in r:
        return
    for broker, row in r["batched_ingest"].items():
        print(
            f"batched ingest, {broker:13} {row['events_per_s']:>9,.0f} events/s"
            f" (p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms per 500-event POST) {row['statuses']}"
        )
    redis_rate = r["batched_ingest"]["redis"]["events_per_s"]
    print(f"target >= 20,000 events/s on Redis: {'met' if redis_rate >= 20_000 else 'MISSED'}")
    for name in ("single_event_ingest", "ranking_reads"):
        row = r[name]
        print(
            f"{name.replace('_', ' '):22} at {row['rate']:,.0f}/s (achieved {row['achieved_per_s']:,.0f}/s):"
            f" p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms {row['statuses']}"
        )


if __name__ == "__main__":
    sys.exit(main())

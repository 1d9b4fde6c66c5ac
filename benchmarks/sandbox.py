"""`python -m benchmarks.sandbox [--json] [--quick]`: how many requests/s the sandbox serves on one core.

The sandbox runs as its own process, pinned to one CPU, with zero added latency,
the demo catalog and every product's lists warmed; a lean asyncio HTTP/1.1
client (keep-alive connections, requests pre-encoded) on the other CPU replays
shoppers browsing: per session a categoryView, four productViews, a
shopTheLook, the category again and a customShelf, a third of them logged in,
so every ranking after the first works with session and user histories. A
warm-up pass runs first and is not measured; then the rows take turns, three rounds each
(the order rotating), and each row reports its median round.

Rows, all against the same client in the same run:

- ``sandbox: browsing``: the mix above, no settings;
- ``sandbox: browsing + settings``: the same with every type's settings set
  (a price range, a discount filter, low stock, Full Size Run on Product);
- ``peer: bare aiohttp``: an aiohttp app answering ``{"products": []}`` on the
  same route and nothing else: the ceiling of the server library itself.

``req/s`` is requests over wall time; ``req/cpu-s`` is requests over the
server process's own CPU seconds (user + system, from /proc), which is what one
free core would serve and holds up on a shared machine. Latency is the client's,
send to last byte. Prints a table; with --json also one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from fashionai_pipeline.worker.local import Proc, scratch_dir, start_sandbox

TOKEN = "bench-sandbox-token"  # noqa: S105 - a benchmark's made-up token
PATH = "/api/v1/products/protected/recommendation"
SETTINGS = {
    "product": {"fullSizeRun": True, "lowStock": {"enabled": True, "limit": 5}},
    "category": {"discount": "onlyWith"},
    "shopTheLook": {"priceRange": {"mode": "custom", "min": 0, "max": 800}},
}


@dataclass
class Row:
    name: str
    requests: int
    wall_s: float
    req_per_s: float
    server_cpu_s: float
    req_per_cpu_s: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    non_empty_share: float
    rounds_req_per_cpu_s: list[float] = field(default_factory=list)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pin(pid: int, cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {cpu})


def _sessions(n: int, seed: int, tag: str) -> list[list[bytes]]:
    """Each session's requests, in order, as complete HTTP/1.1 requests."""
    from fashionai_pipeline.sandbox.demo_catalog import demo_catalog

    catalog = demo_catalog()
    rng = random.Random(seed)
    sessions: list[list[bytes]] = []
    for s in range(n):
        session = f"{tag}-s{s}"
        user = f"{tag}-u{s % 200}" if s % 3 == 0 else None
        category = rng.choice(catalog.categories)
        members = catalog.members[category]
        steps = [("categoryView", category)]
        for k in range(4):
            product = catalog.products[rng.choice(members)].id
            steps.append(("productView", product))
            if k == 2:
                steps.append(("shopTheLook", product))
        steps += [("categoryView", category), ("customShelf", "")]
        requests = []
        for event_type, item in steps:
            body: dict[str, object] = {"sessionId": session, "eventType": event_type, "data": {"id": item}}
            if user is not None:
                body["userId"] = user
            raw = json.dumps(body, separators=(",", ":")).encode()
            head = (
                f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"X-FashionAI-APP-Token: {TOKEN}\r\nContent-Length: {len(raw)}\r\n\r\n"
            ).encode()
            requests.append(head + raw)
        sessions.append(requests)
    return sessions


class _Connection(asyncio.Protocol):
    """One keep-alive connection: send a request, read one answer, repeat."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length:")
        length = (
            int(head[at + 15 : head.find(b"\r\n", at) if b"\r\n" in head[at:] else None]) if at >= 0 else 0
        )
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        waiter, self.waiter = self.waiter, None
        waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


async def _replay(
    port: int, sessions: list[list[bytes]], connections: int
) -> tuple[list[float], dict[str, int], int]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    non_empty = 0
    queue = list(reversed(sessions))

    async def worker() -> None:
        nonlocal non_empty
        _, conn = await loop.create_connection(_Connection, "127.0.0.1", port)
        try:
            while queue:
                for raw in queue.pop():
                    t0 = time.perf_counter()
                    status, body = await conn.send(raw)
                    latencies.append(time.perf_counter() - t0)
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
                    non_empty += body != b'{"products":[]}'
        finally:
            assert conn.transport is not None
            conn.transport.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return latencies, statuses, non_empty


def _measure(name: str, proc: Proc, port: int, sessions: list[list[bytes]], connections: int) -> Row:
    cpu0 = _cpu_seconds(proc.popen.pid)
    t0 = time.perf_counter()
    latencies, statuses, non_empty = asyncio.run(_replay(port, sessions, connections))
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds(proc.popen.pid) - cpu0
    latencies.sort()
    n = len(latencies)
    return Row(
        name=name,
        requests=n,
        wall_s=round(wall, 3),
        req_per_s=round(n / wall, 1),
        server_cpu_s=round(cpu, 3),
        req_per_cpu_s=round(n / cpu, 1) if cpu > 0 else float("nan"),
        p50_ms=round(latencies[n // 2] * 1000, 3),
        p99_ms=round(latencies[min(n - 1, int(n * 0.99))] * 1000, 3),
        statuses=statuses,
        non_empty_share=round(non_empty / n, 3),
    )


def _peer_server() -> None:
    """The bare-aiohttp peer: the same route, a constant answer, nothing else."""
    from aiohttp import web

    body = b'{"products":[]}'

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post(PATH, answer)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        print(f"sandbox listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def _start_peer(log_dir: str) -> Proc:
    from fashionai_pipeline.worker import local

    proc = local._spawn("peer", [sys.executable, "-m", "benchmarks.sandbox", "--peer-server"], None, log_dir)
    line = local._wait_for(proc, "sandbox listening on", 20)
    proc.extra["base_url"] = line.split("sandbox listening on", 1)[1].strip()
    return proc


def _port(proc: Proc) -> int:
    return int(str(proc.extra["base_url"]).rsplit(":", 1)[1])


def _put_settings(port: int) -> None:
    import httpx

    for rec_type, settings in SETTINGS.items():
        httpx.put(f"http://127.0.0.1:{port}/_sandbox/settings/{rec_type}", json=settings).raise_for_status()


NAMES = ("sandbox: browsing", "sandbox: browsing + settings", "peer: bare aiohttp")


def run(sessions: int, warmup: int, connections: int, reps: int = 1, progress: bool = True) -> list[Row]:
    """Every row ``reps`` times, the rows taking turns (the order rotating each round), so a
    busy moment of a shared machine falls on all of them; each row reports its median round."""
    log_dir = scratch_dir("fashionai-bench-sandbox-")
    _pin(os.getpid(), 1)
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)
    procs: dict[str, Proc] = {}
    rounds: dict[str, list[Row]] = {name: [] for name in NAMES}
    try:
        for name in NAMES:
            say(f"starting {name}")
            if name.startswith("peer"):
                procs[name] = _start_peer(log_dir)
            else:
                # --warm computes every list before listening: ~6 s of CPU, more under coverage.
                procs[name] = start_sandbox(
                    TOKEN, log_dir=log_dir, knobs=["--warm", "--log-limit", "1000000"], ready_within=180
                )
            _pin(procs[name].popen.pid, 0)
            if name.endswith("settings"):
                _put_settings(_port(procs[name]))
            say("  warm-up")
            _measure(name, procs[name], _port(procs[name]), _sessions(warmup, 1, "warm"), connections)
        for rep in range(reps):
            order = NAMES[rep % len(NAMES) :] + NAMES[: rep % len(NAMES)]
            for name in order:
                say(f"round {rep + 1}/{reps}: {name}")
                batch = _sessions(sessions, 2 + rep, f"run{rep}")
                rounds[name].append(_measure(name, procs[name], _port(procs[name]), batch, connections))
    finally:
        for proc in procs.values():
            proc.stop()
    rows = []
    for name in NAMES:
        ranked = sorted(rounds[name], key=lambda r: r.req_per_cpu_s)
        median = ranked[len(ranked) // 2]
        median.rounds_req_per_cpu_s = [r.req_per_cpu_s for r in rounds[name]]
        rows.append(median)
    return rows


def _table(rows: list[Row]) -> str:
    columns = ("requests", "req/s", "req/cpu-s", "p50 ms", "p99 ms", "non-empty")
    widths = (8, 8, 10, 7, 7, 9)
    lines = [f"{'':<30} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))]
    for r in rows:
        lines.append(
            f"{r.name:<30} {r.requests:>8} {r.req_per_s:>8.0f} {r.req_per_cpu_s:>10.0f} "
            f"{r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.non_empty_share:>9.0%}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sandbox", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    parser.add_argument("--quick", action="store_true", help="a few seconds per row")
    parser.add_argument(
        "--sessions", type=int, default=None, help="measured sessions per row (8 requests each)"
    )
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections of the client")
    parser.add_argument("--reps", type=int, default=None, help="rounds per row (default 3, --quick 1)")
    parser.add_argument("--peer-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer_server:
        _peer_server()
        return 0
    sessions = args.sessions or (600 if args.quick else 5000)
    reps = args.reps or (1 if args.quick else 3)
    rows = run(sessions, warmup=max(100, sessions // 5), connections=args.connections, reps=reps)
    print(_table(rows))
    if args.json:
        result: dict[str, Any] = {"rows": [asdict(r) for r in rows]}
        peer = next(r for r in rows if r.name.startswith("peer"))
        result["ratios"] = {
            r.name: round(r.req_per_cpu_s / peer.req_per_cpu_s, 3)
            for r in rows
            if not r.name.startswith("peer")
        }
        print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

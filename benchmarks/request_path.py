"""Where a publish and a read spend their time: the profile behind docs/PERFORMANCE.md.

    python -m benchmarks.request_path [--redis redis://127.0.0.1:6379/13] [--calls 5000]

Times, call by call and in rounds that take turns (so a slow spell of the
machine lands on every row alike):

- the round trip alone: PING on a raw socket, on a redis-py Connection
  blocking for the reply and polling for it (what publish and read use by
  default, producers.direct), and through a redis.Redis client;
- a publish taken apart: validation (event_body, as the typed helpers), envelope (id, time, JSON),
  kombu framing, and the LPUSH round trip, each stage timed inside one real
  publish sequence, so each runs as cold or warm as it does on the request path;
- a read taken apart the same way: key, GET round trip, JSON decode, merge;
- the whole `Publisher.product_view` and `RankingReader.order` (200 native ids),
  as configured by default and with each of the request path's optimisations
  switched away from its default alone (producers.transport: `reply_poll_us=100`,
  `direct_redis=False`, `json_templates=False`; `SWITCHES` below, easy to extend), and their CPU time
  per call (thread time over the round, / calls);
- `AsyncPublisher`: one await at a time, and 5,000 awaits at once (wall time
  per event: concurrent publishes share round trips).

Prints a table; with --json one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import redis

from benchmarks.measure import percentile, take_turns
from fashionai_pipeline.producers import keys
from fashionai_pipeline.producers.direct import DirectRedis
from fashionai_pipeline.producers.event import event_body
from fashionai_pipeline.producers.kombu_redis import encode_message
from fashionai_pipeline.producers.message import encode_text, new_id
from fashionai_pipeline.producers.publisher import AsyncPublisher, Publisher
from fashionai_pipeline.producers.reader import RankingReader, decode_ranking, merge
from fashionai_pipeline.producers.settings import Settings

QUEUE = "fashionai-bench-request-path"
# Each optimisation off alone (producers.transport), beside the default.
SWITCHES: dict[str, dict[str, object]] = {
    "polling on": {"reply_poll_us": 100},
    "direct connections off": {"direct_redis": False},
    "JSON templates off": {"json_templates": False},
}
NATIVE = [f"p{i:04d}" for i in range(200)]
PUBLISH_STAGES = ("validate", "envelope", "kombu framing", "LPUSH round trip")
READ_STAGES = ("key", "GET round trip", "JSON decode", "merge (200 native)")


def _raw_socket(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _laps(out: dict[str, list[int]], names: tuple[str, ...], stamps: tuple[int, ...]) -> None:
    """Record each stage's time: stamps[i] to stamps[i + 1] is stage names[i]."""
    for name, start, end in zip(names, stamps, stamps[1:], strict=False):
        out[name].append(end - start)


def _publish_one(publisher: Publisher, i: int) -> object:
    return publisher.product_view(f"s{i}", f"p{i}")


def _read_one(reader: RankingReader, _: int) -> object:
    return reader.order("productView", "p1", "s1", NATIVE)


def run(url: str, calls: int, rounds: int = 10) -> dict[str, Any]:
    settings = Settings(broker_url=url, redis_url=url, queue=QUEUE, tenant="bench-request-path")
    direct = DirectRedis(url, timeout=1.0, name="fashionai-bench")
    client = redis.Redis.from_url(url)
    sock = _raw_socket(url)
    publisher = Publisher(settings)
    reader = RankingReader(settings)
    switched = {name: settings.model_copy(update=update) for name, update in SWITCHES.items()}
    publishers = {name: Publisher(s) for name, s in switched.items()}
    readers = {name: RankingReader(s) for name, s in switched.items() if "JSON" not in name}
    polled = DirectRedis(url, timeout=1.0, name="fashionai-bench", reply_poll_us=settings.reply_poll_us)
    ranking_key = keys.ranking(settings.tenant, "productView", "p1", "s1", None)
    client.set(ranking_key, json.dumps([1, *NATIVE[100:140]]), px=600_000)

    def raw_ping(_: int) -> None:
        sock.sendall(b"PING\r\n")
        sock.recv(64)

    def publish_stages(i: int, out: dict[str, list[int]]) -> None:
        pc = time.perf_counter_ns
        t0 = pc()
        body = event_body("productView", f"s{i}", f"p{i}")
        t1 = pc()
        msg_id = new_id()
        payload = encode_text(msg_id, settings.tenant, time.time(), body)
        t2 = pc()
        message = encode_message(payload, QUEUE, tag=msg_id)
        t3 = pc()
        polled.execute("LPUSH", QUEUE, message)
        _laps(out, PUBLISH_STAGES, (t0, t1, t2, t3, pc()))

    def read_stages(_: int, out: dict[str, list[int]]) -> None:
        pc = time.perf_counter_ns
        t0 = pc()
        key = keys.ranking(settings.tenant, "productView", "p1", "s1", None)
        t1 = pc()
        raw = polled.execute("GET", key, retry_stale=True)
        t2 = pc()
        ranking = decode_ranking(raw)
        t3 = pc()
        merge(ranking.products, NATIVE)
        _laps(out, READ_STAGES, (t0, t1, t2, t3, pc()))

    rows: dict[str, Callable[[int], object]] = {
        "PING, raw socket": raw_ping,
        "PING, redis-py Connection": lambda _: direct.execute("PING"),
        "PING, Connection, reply polled": lambda _: polled.execute("PING"),
        "PING, redis.Redis client": lambda _: client.ping(),
        "Publisher.product_view": lambda i: publisher.product_view(f"s{i}", f"p{i}"),
        "RankingReader.order (200 native)": lambda _: reader.order("productView", "p1", "s1", NATIVE),
    }
    for name, pub in publishers.items():
        rows[f"Publisher.product_view, {name}"] = partial(_publish_one, pub)
    for name, rdr in readers.items():
        rows[f"RankingReader.order, {name}"] = partial(_read_one, rdr)
    stages: dict[str, list[int]] = {n: [] for n in PUBLISH_STAGES}
    rstages: dict[str, list[int]] = {n: [] for n in READ_STAGES}
    per_round = max(1, calls // rounds)

    def publish_apart(recorded: bool) -> None:
        for i in range(per_round):
            publish_stages(i, stages if recorded else {n: [] for n in stages})
        for i in range(per_round):
            read_stages(i, rstages if recorded else {n: [] for n in rstages})

    try:
        samples, cpu_ns = take_turns(rows, block=per_round, rounds=rounds, after_round=publish_apart)
    finally:
        client.delete(QUEUE, ranking_key)
        closeables: list[Any] = [publisher, reader, *publishers.values(), *readers.values(), direct, polled]
        for closeable in closeables:
            closeable.close()
        client.close()
        sock.close()

    def summary(values: list[int], cpu: int | None = None) -> dict[str, float]:
        us = [v / 1000 for v in values]
        out = {"calls": len(us), "p50_us": percentile(us, 50), "p99_us": percentile(us, 99)}
        if cpu is not None:
            out["cpu_us_per_call"] = cpu / 1000 / len(us)
        return out

    return {
        "calls": {name: summary(samples[name], cpu_ns[name]) for name in rows},
        "publish_stages": {name: summary(values) for name, values in stages.items()},
        "read_stages": {name: summary(values) for name, values in rstages.items()},
        "async_publisher": asyncio.run(_async_publisher(settings, calls)),
    }


async def _async_publisher(settings: Settings, calls: int, together: int = 5000) -> dict[str, float]:
    """AsyncPublisher one await at a time, then `together` awaits at once (group commit)."""
    publisher = AsyncPublisher(settings)
    one_by_one: list[int] = []
    try:
        for i in range(300 + calls // 5):
            t0 = time.perf_counter_ns()
            await publisher.product_view(f"a{i}", f"p{i}")
            if i >= 300:
                one_by_one.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns()
        await asyncio.gather(*(publisher.product_view(f"g{i}", f"p{i}") for i in range(together)))
        elapsed = time.perf_counter_ns() - t0
    finally:
        await publisher.aclose()
        redis.Redis.from_url(settings.broker_url).delete(QUEUE)
    us = [v / 1000 for v in one_by_one]
    return {
        "one_by_one_p50_us": percentile(us, 50),
        "one_by_one_p99_us": percentile(us, 99),
        "together": together,
        "together_us_per_event": elapsed / 1000 / together,
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'call':<52}{'p50 us':>9}{'p99 us':>9}{'CPU us/call':>13}"]
    for name, s in result["calls"].items():
        lines.append(f"{name:<52}{s['p50_us']:>9.1f}{s['p99_us']:>9.1f}{s['cpu_us_per_call']:>13.1f}")
    a = result["async_publisher"]
    lines.append(
        f"{'AsyncPublisher, one await at a time':<52}{a['one_by_one_p50_us']:>9.1f}"
        f"{a['one_by_one_p99_us']:>9.1f}"
    )
    lines.append(
        f"AsyncPublisher, {a['together']:,} awaits at once: {a['together_us_per_event']:.1f} us "
        "per event (wall time / events)"
    )
    lines.append("a publish taken apart (each stage timed inside one publish sequence):")
    for name, s in result["publish_stages"].items():
        lines.append(f"  {name:<50}{s['p50_us']:>9.1f}{s['p99_us']:>9.1f}")
    lines.append("a read taken apart (RankingReader.order's steps, timed the same way):")
    for name, s in result["read_stages"].items():
        lines.append(f"  {name:<50}{s['p50_us']:>9.1f}{s['p99_us']:>9.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.request_path", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="Redis URL (a scratch db)")
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per row")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    result = run(args.redis, args.calls)
    print(table(result))
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m benchmarks.page_inprocess`: the page's CPU per mode, in one process, modes in turns.

The page server (benchmarks.page_server) judges the targets where users feel them, but wrk,
the HTTP server and a shared VM's neighbours swing its figures by more than the differences
being looked for. This runs the same product page (benchmarks.pages: 200 native products
through the template, each mode's publish + read before it) with no HTTP in between and takes
the process's own CPU per page, which is what a saturated page server's requests/s follow:

- `asyncio`: one uvloop event loop, `--inflight` pages in flight (as a loaded uvicorn has);
- `threads`: `--threads` threads, each page one thread's (as gunicorn gthread has);

and the modes (`none`, `raw`, `project`, `diy`, as in benchmarks.page_server) take turns in
blocks of `--block` pages for `--blocks` rounds, the order rotated each round, so a slow
spell of the machine lands on every mode alike. Per mode: the median over blocks of CPU per
page (time.process_time over the block / pages), its overhead above `none` and above `raw`,
`cpu_vs_none` (none's CPU per page / the mode's: the requests/s ratio a server bound by this
CPU would show), the garbage collections each mode's blocks ran per 1,000 pages (gc.callbacks),
and what the pages did (events pushed to the queue, pages served a ranked order), so a mode
that skips its round trip shows. With `--kind threads`, the modes `direct`, `publisher` and
`reader` take the project's page call apart (_Layers): what its transport, its publisher's
layers and its reader's layers each add to a page. `--gc-off` runs the blocks with the
collector disabled: what collections cost, by difference.

    python -m benchmarks.page_inprocess [--kind asyncio,threads] [--block 160] [--blocks 40]
        [--modes none,raw,project,diy] [--inflight 16] [--threads 8] [--gc-off] [--json]

The Redis the pages use shares this machine's cores; its CPU is not the page's and is not
counted. Writes only keys and queues named with this run's id, and deletes them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

KINDS = ("asyncio", "threads")
MODES = ("none", "raw", "project", "diy")
# threads only: the project's page call taken apart, layer by layer, each one page's publish +
# read sharing a round trip as the page call's do (_Layers)
LAYERS = ("direct", "publisher", "reader")


@dataclass
class Block:
    kind: str
    mode: str
    pages: int
    cpu_s: float
    wall_s: float
    pushed: int  # events on the queue after the block
    ranked: int  # pages served an order other than the native one
    collections: Counter[int] = field(default_factory=Counter)  # per generation


class _GcCount:
    """Collections per generation while `active`, via gc.callbacks."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.active = False

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if self.active and phase == "start":
            self.counts[info["generation"]] += 1

    @contextlib.contextmanager
    def counting(self) -> Iterator[Counter[int]]:
        self.counts = Counter()
        self.active = True
        try:
            yield self.counts
        finally:
            self.active = False


class Harness:
    """The run's names and parts. The environment the page modes read is set before
    benchmarks.pages.common is first imported (its names are read at import)."""

    def __init__(self, redis_url: str, gc_off: bool) -> None:
        run_id = secrets.token_hex(3)
        self.tenant = f"bench{run_id}"
        self.queue, self.diy_queue = f"bench-{run_id}.page", f"bench-{run_id}.diy"
        os.environ.update(
            FASHIONAI_BROKER_URL=redis_url, FASHIONAI_REDIS_URL=redis_url, FASHIONAI_QUEUE=self.queue,
            FASHIONAI_TENANT=self.tenant, DIY_QUEUE=self.diy_queue,
        )  # fmt: skip
        import redis

        from benchmarks import page_server
        from benchmarks.pages import common

        self.common, self.page_server = common, page_server
        self.client = redis.Redis.from_url(redis_url)
        self.gc_off = gc_off
        self.gc = _GcCount()
        gc.callbacks.append(self.gc)
        self.n = itertools.count()

    def parts(self, mode: str, asyncio_: bool) -> Any:
        if mode in LAYERS:
            return self.common.Parts(raw=_Layers(mode, self.common))
        os.environ["PAGE_MODE"] = mode
        return self.common.parts(asyncio=asyncio_)

    @contextlib.contextmanager
    def block(self, kind: str, mode: str, pages: int) -> Iterator[Block]:
        """One block, timed around the body (which serves `pages` pages and sets `ranked`)."""
        self.client.delete(self.queue, self.diy_queue)
        gc.collect()
        out = Block(kind, mode, pages, 0.0, 0.0, 0, 0)
        if self.gc_off:
            gc.disable()
        try:
            with self.gc.counting() as counts:
                wall0, cpu0 = time.perf_counter(), time.process_time()
                yield out
                out.cpu_s, out.wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
        finally:
            gc.enable()
        out.collections = Counter(counts)
        out.pushed = int(self.client.llen(self.queue)) + int(self.client.llen(self.diy_queue))
        self.client.delete(self.queue, self.diy_queue)

    def cleanup(self) -> None:
        names = list(self.client.scan_iter(match=f"fashionai:{self.tenant}:*", count=1000))
        for i in range(0, len(names), 500):
            self.client.delete(*names[i : i + 500])
        self.client.delete(self.queue, self.diy_queue)
        gc.callbacks.remove(self.gc)


class _Layers:
    """A sync page's publish + read through the project's own parts, up to one layer (LAYERS):

    - `direct`: its Redis transport (producers.direct: LPUSH of the bare event and GET in one
      round trip), then its decode and merge: what the transport adds above `raw`;
    - `publisher`: `Publisher.publish_with_read` (validation, envelope, id, outcome) with the
      GET along, then decode and merge: what the publisher's layers add above `direct`;
    - `reader`: the transport's round trip, then `RankingReader.serve_query` on its reply
      (the plan, the breaker, the counts, `Served`): what the reader's layers add above `direct`.

    `project` is all of them and `PageViews` around them. Same interface as benchmarks.pages.raw.Raw.
    """

    def __init__(self, layer: str, common: Any) -> None:
        from fashionai_pipeline.producers.direct import DirectRedis
        from fashionai_pipeline.producers.publisher import Publisher
        from fashionai_pipeline.producers.reader import RankingReader

        self.layer, self.queue = layer, common.QUEUE
        self.direct = DirectRedis(common.CACHE_URL, timeout=0.5, name="fashionai-bench-layers")
        self.publisher = Publisher() if layer == "publisher" else None
        self.reader = RankingReader() if layer == "reader" else None

    def order(self, key: str, session: str, product: str, native: list[str]) -> list[str]:
        from fashionai_pipeline.producers.readcore import Query, decode_ranking, merge

        body = {"sessionId": session, "eventType": "productView", "data": {"id": product}}
        if self.publisher is not None:
            url = self.publisher.settings.redis_url  # the broker's: the GET goes along
            _, value = self.publisher.publish_with_read(body, ("GET", key), read_url=url)
        elif self.reader is not None:
            q = Query("productView", product, session, None, None, native, None)
            first = self.reader.first_read(q)
            assert first is not None
            _, (reply,) = self.direct.execute_along(("LPUSH", self.queue, json.dumps(body)), [first])
            return self.reader.serve_query(q, (first, reply)).products
        else:
            _, (value,) = self.direct.execute_along(("LPUSH", self.queue, json.dumps(body)), [("GET", key)])
        return native if value is None else merge(decode_ranking(value).products, native)

    def close(self) -> None:
        self.direct.close()
        for part in (self.publisher, self.reader):
            if part is not None:
                part.close()


def _ranked(html: str, first_native: str) -> int:
    """1 when the page's first card is not the native first product."""
    return 0 if f'data-id="{first_native}"' in html[:400] else 1


def run_asyncio(h: Harness, modes: list[str], block: int, blocks: int, inflight: int) -> list[Block]:
    import uvloop

    common, first = h.common, h.common.PRODUCTS[0]

    async def main() -> list[Block]:
        parts = {mode: h.parts(mode, asyncio_=True) for mode in modes}
        out: list[Block] = []

        async def serve(mode: str) -> int:
            p, ranked, left = parts[mode], 0, block

            async def one_at_a_time() -> None:
                nonlocal ranked, left
                while left > 0:
                    left -= 1
                    session, product = h.page_server.shopper_page(next(h.n))
                    if mode == "diy":  # Starlette runs a sync endpoint in its thread pool
                        html = await asyncio.to_thread(common.sync_page, p, session, product)
                    else:
                        html = await common.async_page(p, session, product)
                    ranked += _ranked(html, first)

            await asyncio.gather(*(one_at_a_time() for _ in range(inflight)))
            return ranked

        try:
            for mode in modes:  # warm-up: connections, caches, the interpreter's paths
                await serve(mode)
            for n in range(blocks):
                turn = n % len(modes)
                for mode in modes[turn:] + modes[:turn]:
                    with h.block("asyncio", mode, block) as b:
                        b.ranked = await serve(mode)
                    out.append(b)
        finally:
            for mode, p in parts.items():
                if mode == "project":
                    await p.views.aclose()
                elif mode == "raw":
                    await p.raw.aclose()
        return out

    return uvloop.run(main())


def run_threads(h: Harness, modes: list[str], block: int, blocks: int, threads: int) -> list[Block]:
    common, first = h.common, h.common.PRODUCTS[0]
    parts = {mode: h.parts(mode, asyncio_=False) for mode in modes}
    start, done = threading.Barrier(threads + 1), threading.Barrier(threads + 1)
    state: dict[str, Any] = {"mode": None, "left": 0, "ranked": 0}
    lock = threading.Lock()

    def worker() -> None:
        while True:
            start.wait()
            mode = state["mode"]
            if mode is None:
                return
            p, ranked = parts[mode], 0
            while True:
                with lock:
                    if state["left"] <= 0:
                        break
                    state["left"] -= 1
                session, product = h.page_server.shopper_page(next(h.n))
                ranked += _ranked(common.sync_page(p, session, product), first)
            with lock:
                state["ranked"] += ranked
            done.wait()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()

    def serve(mode: str) -> int:
        state.update(mode=mode, left=block, ranked=0)
        start.wait()
        done.wait()
        return int(state["ranked"])

    out: list[Block] = []
    try:
        for mode in modes:
            serve(mode)  # warm-up: each thread's connections, caches, the interpreter's paths
        for n in range(blocks):
            turn = n % len(modes)
            for mode in modes[turn:] + modes[:turn]:
                with h.block("threads", mode, block) as b:
                    b.ranked = serve(mode)
                out.append(b)
    finally:
        state["mode"] = None
        start.wait()
        for t in pool:
            t.join(5)
        for mode, p in parts.items():
            if mode == "project":
                p.views.close()
            elif mode == "raw" or mode in LAYERS:
                p.raw.close()
    return out


def summarise(blocks: list[Block]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in dict.fromkeys(b.kind for b in blocks):
        mine = [b for b in blocks if b.kind == kind]
        modes: dict[str, dict[str, Any]] = {}
        for mode in dict.fromkeys(b.mode for b in mine):
            these = [b for b in mine if b.mode == mode]
            pages = sum(b.pages for b in these)
            modes[mode] = {
                "cpu_us": statistics.median(b.cpu_s / b.pages * 1e6 for b in these),
                "wall_us": statistics.median(b.wall_s / b.pages * 1e6 for b in these),
                "blocks": len(these),
                "pages": pages,
                "pushed_per_page": sum(b.pushed for b in these) / pages,
                "ranked_share": sum(b.ranked for b in these) / pages,
                "collections_per_1000": {
                    str(g): sum(b.collections[g] for b in these) * 1000 / pages for g in range(3)
                },
            }
        base = modes.get("none")
        for m in modes.values():
            if base is not None:
                m["above_none_us"] = m["cpu_us"] - base["cpu_us"]
                m["cpu_vs_none"] = base["cpu_us"] / m["cpu_us"]
            if "raw" in modes:
                m["above_raw_us"] = m["cpu_us"] - modes["raw"]["cpu_us"]
        out[kind] = modes
    return out


def table(result: dict[str, Any]) -> str:
    lines = []
    for kind, modes in result.items():
        lines.append(f"\n{kind}")
        lines.append(
            f"  {'mode':<9}{'CPU/page':>10}{'wall/page':>11}{'>none':>9}{'>raw':>9}{'vs none':>9}"
            f"{'gen2/1k':>9}{'pushed':>8}{'ranked':>8}"
        )
        for mode, m in modes.items():
            lines.append(
                f"  {mode:<9}{m['cpu_us']:>8.0f}us{m['wall_us']:>9.0f}us"
                f"{m.get('above_none_us', float('nan')):>7.0f}us{m.get('above_raw_us', float('nan')):>7.0f}us"
                f"{m.get('cpu_vs_none', float('nan')):>8.2f}x{m['collections_per_1000']['2']:>9.2f}"
                f"{m['pushed_per_page']:>8.2f}{m['ranked_share']:>8.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.page_inprocess", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--kind", default=",".join(KINDS), help="comma-separated: asyncio, threads")
    parser.add_argument(
        "--modes", default=",".join(MODES),
        help=f"comma-separated, from {', '.join(MODES)}; threads only: {', '.join(LAYERS)} (_Layers)",
    )  # fmt: skip
    parser.add_argument("--block", type=int, default=160, help="pages per block")
    parser.add_argument("--blocks", type=int, default=40, help="blocks per mode")
    parser.add_argument("--inflight", type=int, default=16, help="asyncio: pages in flight")
    parser.add_argument("--threads", type=int, default=8, help="threads: the server's threads")
    parser.add_argument("--gc-off", action="store_true", help="the collector disabled during the blocks")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="broker and cache for the run")
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kind.split(",") if k.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [k for k in kinds if k not in KINDS]:
        parser.error(f"--kind: unknown {', '.join(bad)}; known: {', '.join(KINDS)}")
    if bad := [m for m in modes if m not in MODES + LAYERS]:
        parser.error(f"--modes: unknown {', '.join(bad)}; known: {', '.join(MODES + LAYERS)}")
    if "asyncio" in kinds and (layers := [m for m in modes if m in LAYERS]):
        parser.error(f"--modes: {', '.join(layers)}: layers of the sync page call, for --kind threads only")
    if args.block < 1 or args.blocks < 1 or args.inflight < 1 or args.threads < 1:
        parser.error("--block, --blocks, --inflight and --threads must be at least 1")
    h = Harness(args.redis, args.gc_off)
    blocks: list[Block] = []
    try:
        h.page_server.seed_rankings(h.client, h.tenant)
        if "asyncio" in kinds:
            blocks += run_asyncio(h, modes, args.block, args.blocks, args.inflight)
        if "threads" in kinds:
            blocks += run_threads(h, modes, args.block, args.blocks, args.threads)
    finally:
        h.cleanup()
    result = summarise(blocks)
    print(table(result))
    if args.json:
        print(json.dumps({"kinds": result, "gc_off": args.gc_off, "load_at_end": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ceiling: a bare asyncio HTTP client loop against the same upstream.

No broker, no Redis: N POSTs of distinct events through one aiohttp session
with `concurrency` requests in flight. Run as a subprocess so its CPU is its own::

    python -m benchmarks.ceiling --url URL --token T --n 30000 --concurrency 200

It prints "ceiling ready" once the session exists, waits for a line on stdin,
runs, and prints one JSON line: {"ok": ..., "failed": ..., "t_last": unix time
of the last answer, "cpu_s": ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp


async def _run(url: str, token: str, n: int, concurrency: int, tag: str) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    headers = {"X-FashionAI-APP-Token": token, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        print("ceiling ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        counts = {"ok": 0, "failed": 0}
        t_last = 0.0
        next_index = 0

        async def client() -> None:
            nonlocal next_index, t_last
            while next_index < n:
                i = next_index
                next_index += 1
                body = json.dumps(
                    {
                        "sessionId": f"{tag}-s{i}",
                        "eventType": "productView",
                        "data": {"id": f"p{i % 3000 + 1:04d}"},
                    },
                    separators=(",", ":"),
                )
                try:
                    async with session.post(url, data=body) as response:
                        payload = await response.read()
                        good = response.status == 200 and b"products" in payload
                except (aiohttp.ClientError, OSError):
                    good = False
                counts["ok" if good else "failed"] += 1
                t_last = time.time()

        cpu0 = time.process_time()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return {**counts, "t_last": t_last, "cpu_s": time.process_time() - cpu0}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceiling")
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--tag", default="ceiling")
    args = parser.parse_args()
    result = asyncio.run(_run(args.url, args.token, args.n, args.concurrency, args.tag))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

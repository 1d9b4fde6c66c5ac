"""What the sandbox keeps per request stays out of the garbage collector's work.

A sandbox under load keeps its request log and session histories for minutes.
Kept as dicts, deques and NamedTuples, every kept request added tracked objects
and full collections grew to ~100 ms pauses at 1,500 requests/s, which showed as
an upstream p99 of 130 ms for a 50 ms latency setting (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import gc
import json
import time

from fashionai_pipeline.sandbox.contract import validate
from fashionai_pipeline.sandbox.ranking import RankingEngine
from fashionai_pipeline.sandbox.request_log import RequestLog


def _serve(log: RequestLog, engine: RankingEngine, n: int) -> None:
    for i in range(n):
        item = f"p{i % 500 + 1:04d}"
        body = {"sessionId": f"s{i % 3000}", "eventType": "productView", "data": {"id": item}}
        event = validate(body)
        products = engine.rank(event)
        engine.record(event)
        raw = json.dumps(body).encode()
        log.append(time.time(), 200, raw, content_type="application/json", token_ok=True, products=products)


def test_kept_requests_and_histories_are_not_tracked_by_the_collector() -> None:
    log, engine = RequestLog(), RankingEngine()
    _serve(log, engine, 100)
    gc.collect()
    before = len(gc.get_objects())
    _serve(log, engine, 10_000)
    gc.collect()
    grown = len(gc.get_objects()) - before
    assert grown < 500, f"{grown} more objects tracked after 10,000 kept requests"
    # and the log still reads back what was sent
    _, entries = log.snapshot(log.count - 1)
    assert entries[-1]["body"] == {"sessionId": "s999", "eventType": "productView", "data": {"id": "p0500"}}
    assert isinstance(entries[-1]["products"], list) and entries[-1]["products"]
    assert engine.history("s999").signals == 4

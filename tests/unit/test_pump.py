"""The pump's settling rules on its seams: ack only what was recorded, requeue the rest.

A real pump (its consumer thread and its event loop thread) over an in-memory
source and processor: nothing else runs. Waits are bounded generously; nothing
is timed.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.batch import BatchResult
from fashionai_pipeline.worker.metrics import Metrics
from fashionai_pipeline.worker.pump import Pump

WAIT = 30.0  # seconds: a generous bound on every wait below
_seq = itertools.count()


@dataclass
class Delivery:
    body: bytes


class ListSource:
    """Hands out `backlog` on poll; logs every settlement with a global sequence number."""

    def __init__(self, backlog: list[bytes], on_message: Any) -> None:
        self.backlog = list(backlog)
        self.on_message = on_message
        self.settled: list[tuple[int, str, bytes]] = []
        self.lock = threading.Lock()

    def poll(self, timeout: float) -> None:
        while self.backlog:
            self.on_message(0, Delivery(self.backlog.pop(0)))
        time.sleep(timeout)

    def ack(self, deliveries: list[Delivery]) -> None:
        with self.lock:
            self.settled += [(next(_seq), "ack", d.body) for d in deliveries]

    def requeue(self, deliveries: list[Delivery]) -> None:
        with self.lock:
            self.settled += [(next(_seq), "requeue", d.body) for d in deliveries]

    def maintain(self) -> None:
        pass

    def keep_alive(self, deliveries: list[Delivery]) -> None:
        pass

    def stop_consuming(self) -> None:
        pass

    def close(self) -> None:
        pass


class ScriptedProcessor:
    """b"ok..." records, b"unrecorded..." does not, b"raise..." raises, b"hang..." never ends."""

    def __init__(self) -> None:
        self.finished: dict[bytes, int] = {}

    async def process(
        self, raws: Sequence[bytes | str], *, lease_members: Sequence[bytes | str] = ()
    ) -> BatchResult | None:
        body = bytes(raws[0]) if isinstance(raws[0], bytes) else raws[0].encode()
        if body.startswith(b"hang"):
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        for raw in raws:
            self.finished[raw if isinstance(raw, bytes) else raw.encode()] = next(_seq)
        if body.startswith(b"raise"):
            raise RuntimeError("injected")
        if body.startswith(b"unrecorded"):
            return None
        result = BatchResult()
        result.counts["received"] = len(raws)
        return result

    async def claim_retries(self, limit: int, lease: float) -> list[bytes]:
        return []

    async def keep_leased(self, members: Sequence[bytes | str], lease: float) -> bool:
        return True


def run_pump(backlog: list[bytes], *, stop_after: float | None = None, **overrides: Any):
    settings = Settings(tenant="t", batch_size=1, batch_interval_ms=1, shutdown_timeout=1.0, **overrides)
    sources: list[ListSource] = []
    processor = ScriptedProcessor()

    def open_source(settings: Settings, queues: list[str], on_message: Any, *, prefetch: int) -> ListSource:
        source = ListSource(backlog if not sources else [], on_message)
        sources.append(source)
        return source

    pump = Pump(
        settings,
        open_source=open_source,
        processor_factory=lambda s: processor,
        metrics=Metrics(CollectorRegistry()),
    )
    pump.start()
    try:
        deadline = time.monotonic() + WAIT
        settled_bodies = {b"ok", b"unrecorded", b"raise"}
        while time.monotonic() < deadline:
            done = {b for _, _, b in sources[0].settled} if sources else set()
            if settled_bodies & set(backlog) <= done:
                break
            time.sleep(0.01)
    finally:
        pump.stop(timeout=stop_after or 1.0)
    return sources[0], processor, pump


def test_a_recorded_batch_is_acked_after_it_finished_and_the_others_are_requeued():
    source, processor, pump = run_pump([b"ok", b"unrecorded", b"raise"])
    verdicts = {body: what for _, what, body in source.settled}
    assert verdicts == {b"ok": "ack", b"unrecorded": "requeue", b"raise": "requeue"}
    for seq, _, body in source.settled:
        assert seq > processor.finished[body], f"{body!r} was settled before its batch ended"
    assert pump.totals["received"] == 1  # only the recorded batch counts


def test_a_batch_still_running_at_the_shutdown_bound_is_requeued_never_acked():
    source, _, _ = run_pump([b"ok", b"hang"], stop_after=0.5)
    verdicts = [(what, body) for _, what, body in source.settled]
    assert ("ack", b"ok") in verdicts
    assert ("requeue", b"hang") in verdicts and ("ack", b"hang") not in verdicts

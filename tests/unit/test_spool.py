"""The disk spool on its own: order, bounds, counters, the replay lease, several processes.

A spool is a SQLite file: these tests use real files and real processes, nothing mocked.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from fashionai_pipeline.producers.spool import FILE_NAME, Spool


def _messages(prefix: str, n: int) -> list[tuple[str, str]]:
    return [(f'{{"n":"{prefix}{i}"}}', f"{prefix}{i:031d}") for i in range(n)]


class Broker:
    """Stands in for the broker behind `send`: records what it took, can refuse."""

    def __init__(self) -> None:
        self.took: list[tuple[str, str]] = []
        self.refuse = False

    def send(self, queue: str, messages: list[tuple[str, str]]) -> None:
        if self.refuse:
            raise ConnectionError("broker down")
        self.took.extend((queue, msg_id) for _, msg_id in messages)


def test_replay_sends_everything_in_spool_order_and_empties_it(tmp_path):
    spool = Spool(str(tmp_path), replay_batch=7)
    for i in range(5):
        assert spool.put(f"q{i % 2}", _messages(f"b{i}-", 4), timeout=1)
    broker = Broker()
    assert spool.replay(broker.send) == 20
    expected = [(f"q{i % 2}", msg_id) for i in range(5) for _, msg_id in _messages(f"b{i}-", 4)]
    assert broker.took == expected
    stats = spool.stats()
    assert (stats.pending, stats.bytes, stats.spooled, stats.replayed) == (0, 0, 20, 20)


def test_a_refused_batch_stays_in_place_and_goes_first_next_time(tmp_path):
    spool = Spool(str(tmp_path), replay_batch=3)
    spool.put("q", _messages("a", 5), timeout=1)
    broker = Broker()
    broker.refuse = True
    assert spool.replay(broker.send) == 0
    assert spool.pending() == 5
    broker.refuse = False
    spool.put("q", _messages("b", 2), timeout=1)
    assert spool.replay(broker.send) == 7
    assert [m for _, m in broker.took] == [m for _, m in _messages("a", 5) + _messages("b", 2)]


def test_a_put_past_max_bytes_is_refused_whole_and_counted(tmp_path):
    one = len(_messages("x", 1)[0][0].encode())
    spool = Spool(str(tmp_path), max_bytes=one * 3)
    assert spool.put("q", _messages("a", 2), timeout=1)
    assert not spool.put("q", _messages("b", 2), timeout=1)  # 4 > 3: none of them
    assert spool.put("q", _messages("c", 1), timeout=1)
    stats = spool.stats()
    assert (stats.pending, stats.dropped_full, stats.bytes) == (3, 2, one * 3)
    Broker_ = Broker()
    spool.replay(Broker_.send)
    assert spool.stats().bytes == 0
    assert spool.put("q", _messages("d", 3), timeout=1)  # room again after the replay


def test_messages_older_than_max_age_are_dropped_at_replay_and_counted(tmp_path):
    now = [1000.0]
    spool = Spool(str(tmp_path), max_age=60, clock=lambda: now[0])
    spool.put("q", _messages("old", 3), timeout=1)
    now[0] += 30
    spool.put("q", _messages("new", 2), timeout=1)
    now[0] += 40  # the first three are 70 s old, the last two 40 s
    broker = Broker()
    assert spool.replay(broker.send) == 2
    assert [m for _, m in broker.took] == [m for _, m in _messages("new", 2)]
    stats = spool.stats()
    assert (stats.dropped_old, stats.replayed, stats.pending, stats.bytes) == (3, 2, 0, 0)


def test_one_replayer_at_a_time_and_an_expired_lease_is_taken_over(tmp_path):
    now = [0.0]
    first = Spool(str(tmp_path), clock=lambda: now[0])
    second = Spool(str(tmp_path), clock=lambda: now[0])
    first.put("q", _messages("a", 3), timeout=1)
    assert first._take_lease(30)  # first is mid-replay (or died holding the lease)
    broker = Broker()
    assert second.replay(broker.send) == 0 and broker.took == []
    now[0] += 31
    assert second.replay(broker.send) == 3


def _writer(directory: str, tag: str, n: int) -> None:
    spool = Spool(directory)
    for i in range(n):
        assert spool.put("q", [(f'{{"{tag}":{i}}}', f"{tag}-{i}")], timeout=5)


def test_several_processes_write_one_spool_safely(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), f"w{k}", 300)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    broker = Broker()
    spool = Spool(str(tmp_path))
    assert spool.replay(broker.send) == 1200
    ids = [m for _, m in broker.took]
    assert len(set(ids)) == 1200
    for k in range(4):  # each writer's own messages keep their order
        mine = [int(m.split("-")[1]) for m in ids if m.startswith(f"w{k}-")]
        assert mine == sorted(mine) == list(range(300))


def test_a_put_survives_the_process_being_killed(tmp_path):
    code = (
        "import os, signal, sys\n"
        "from fashionai_pipeline.producers.spool import Spool\n"
        "s = Spool(sys.argv[1])\n"
        "assert s.put('q', [('{\"kept\":1}', 'kept-1')], timeout=5)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], timeout=60)
    assert out.returncode == -signal.SIGKILL
    broker = Broker()
    assert Spool(str(tmp_path)).replay(broker.send) == 1
    assert broker.took == [("q", "kept-1")]


def test_a_locked_spool_refuses_within_the_callers_bound(tmp_path):
    spool = Spool(str(tmp_path))
    blocker = sqlite3.connect(os.path.join(tmp_path, FILE_NAME), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.monotonic()
        assert not spool.put("q", _messages("a", 1), timeout=0.2)
        assert time.monotonic() - started < 5  # generous: the bound is 0.2 s
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert spool.put("q", _messages("a", 1), timeout=0.2)


def test_the_replayer_thread_drains_when_the_broker_comes_back(tmp_path):
    spool = Spool(str(tmp_path))
    spool.put("q", _messages("a", 10), timeout=1)
    broker = Broker()
    broker.refuse = True
    spool.start_replayer(broker.send, interval=0.02)
    spool.start_replayer(broker.send, interval=0.02)  # idempotent: still one thread
    try:
        time.sleep(0.1)
        assert spool.pending() == 10
        broker.refuse = False
        deadline = time.monotonic() + 10
        while spool.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [m for _, m in broker.took] == [m for _, m in _messages("a", 10)]
    finally:
        spool.stop_replayer()


@pytest.mark.parametrize("fsync", [False, True])
def test_both_durability_modes_open_and_write(tmp_path, fsync):
    spool = Spool(str(tmp_path), fsync=fsync)
    assert spool.put("q", _messages("a", 2), timeout=1)
    mode = spool._conn(1).execute("PRAGMA synchronous").fetchone()[0]
    assert mode == (2 if fsync else 1)  # FULL / NORMAL

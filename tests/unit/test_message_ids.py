"""Message ids: unique 128-bit hex ids, cut from a per-thread buffer of os.urandom bytes (one
GIL release per fill, not per id), and never the same in a forked child as in its parent."""

from __future__ import annotations

import os
import threading

import pytest

from fashionai_pipeline.producers import message
from fashionai_pipeline.producers.message import check_id, new_id


def test_ids_are_well_formed_and_unique_across_threads():
    seen: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(new_id() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [i for out in seen for i in out]
    assert all(check_id(i) == i for i in ids)
    assert len(set(ids)) == len(ids) == 20_000


def test_random_bytes_are_fetched_once_per_fill(monkeypatch: pytest.MonkeyPatch):
    calls: list[int] = []
    real = os.urandom

    def counting(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(os, "urandom", counting)  # message.py calls os.urandom through the module

    def make() -> None:  # a thread of its own: its buffer starts empty
        for _ in range(message._IDS_PER_FILL * 10):
            new_id()

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    assert calls == [16 * message._IDS_PER_FILL] * 10


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_never_reuses_its_parents_buffered_bytes():
    new_id()  # the parent's buffer holds the next ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave without pytest's teardown
        try:
            os.write(write, ",".join(new_id() for _ in range(20)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split(","))
    os.waitpid(pid, 0)
    parent = {new_id() for _ in range(20)}
    assert len(child) == 20 and not child & parent

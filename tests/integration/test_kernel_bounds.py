"""The sync direct path's bounds kept by the kernel (SO_RCVTIMEO/SO_SNDTIMEO on a blocking
socket, Linux): a send or recv is one syscall, and a Redis that goes silent still fails the
call within its bound, as the TimeoutError it is (a read counted as "timeout", a publish as
"unknown"), never as a lost connection."""

from __future__ import annotations

import socket
import struct
import time

import pytest
import redis

from fashionai_pipeline.producers.direct import KERNEL_BOUND_MIN, KERNEL_TIMEOUTS, DirectRedis, NoReply
from tests.conftest import CACHE_URL
from tests.integration.proxy import Muted

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not KERNEL_TIMEOUTS, reason="kernel-kept bounds are Linux's"),
]


def test_an_open_connection_is_blocking_with_its_bound_in_the_kernel():
    conn = DirectRedis(CACHE_URL, timeout=0.25, name="fashionai-kernel-test")
    try:
        assert conn.execute("PING") == b"PONG"
        (kept,) = conn._idle.conns
        sock = kept._sock
        assert sock.gettimeout() is None  # blocking: no poll() before each send and recv
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            seconds, micros = struct.unpack("@ll", sock.getsockopt(socket.SOL_SOCKET, option, 16))
            assert seconds + micros / 1e6 == pytest.approx(0.25, abs=0.005)
    finally:
        conn.close()


def test_a_redis_gone_silent_fails_the_call_within_its_bound_as_a_timeout():
    proxy = Muted(CACHE_URL)
    conn = DirectRedis(proxy.url, timeout=0.2, name="fashionai-kernel-test")
    try:
        assert conn.execute("PING") == b"PONG"  # connected and idle: the next call reuses it
        proxy.mute = True
        began = time.monotonic()
        with pytest.raises(NoReply) as caught:
            conn.execute("GET", "fashionai-kernel-test:key")
        elapsed = time.monotonic() - began
        assert isinstance(caught.value.__cause__, redis.TimeoutError)  # not "connection lost"
        assert elapsed < 2.0  # bound 2 x 0.2 s; generous for a loaded machine
        proxy.mute = False
        assert conn.execute("ECHO", "again") == b"again"  # the silent connection was dropped
    finally:
        conn.close()
        proxy.close()


def test_a_bound_shorter_than_the_kernel_keeps_to_the_millisecond_is_pythons():
    """The kernel rounds SO_RCVTIMEO up to whole ticks (a 25 ms bound waited 32 ms here), so a
    connection with a short bound (the reader's 25 ms) keeps Python's timeout, which polls."""
    assert KERNEL_BOUND_MIN > 0.025
    conn = DirectRedis(CACHE_URL, timeout=0.025, name="fashionai-kernel-test")
    try:
        assert conn.execute("PING") == b"PONG"
        (kept,) = conn._idle.conns
        assert kept._sock.gettimeout() == pytest.approx(0.025)
    finally:
        conn.close()

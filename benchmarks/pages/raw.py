"""The page benchmark's raw round trip (PAGE_MODE=raw): the least a page's own publish + read
can do.

One round trip per page to the Redis that is broker and cache: `LPUSH` of the bare event (no
envelope, no validation, no message id) and `GET` of the shopper's ranking, pipelined and
written by hand in RESP on a raw socket, then the ranking decoded and merged the plain way.
No bound on the wait, no breaker, no outcome, no counts. What it costs above the page without
personalisation is what one round trip of the page's own takes from the network, the kernel
and Redis (sharing the machine's cores): the physical floor of any approach that gives each
page its own round trip. `project` can go below it only by sharing round trips between pages
(the asyncio group commit); its overhead above `raw` is otherwise its own work
(docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.parse

from benchmarks.pages.common import plain_merge

_EVENT = '{"sessionId":"%s","eventType":"productView","data":{"id":"%s"}}'


def _address(url: str) -> tuple[str, int, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379, int(parts.path.strip("/") or 0)


def _command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n"]
    for arg in args:
        out.append(f"${len(arg.encode())}\r\n{arg}\r\n")
    return "".join(out).encode()


def _request(queue: str, key: str, session: str, product: str) -> bytes:
    return _command("LPUSH", queue, _EVENT % (session, product)) + _command("GET", key)


def _replies(buf: bytes) -> tuple[bytes | None, int] | None:
    """(GET's value, bytes used) once `buf` holds LPUSH's and GET's replies, else None."""
    first = buf.find(b"\r\n")
    if first < 0:
        return None
    if buf[:1] != b":":
        raise RuntimeError(f"LPUSH answered {buf[:first]!r}")
    head_end = buf.find(b"\r\n", first + 2)
    if head_end < 0:
        return None
    size = int(buf[first + 3 : head_end])
    if size < 0:
        return None, head_end + 2
    end = head_end + 2 + size
    if len(buf) < end + 2:
        return None
    return buf[head_end + 2 : end], end + 2


class AsyncRaw:
    """One connection per request in flight (a free list, as a pool keeps), selected database."""

    def __init__(self, url: str, queue: str) -> None:
        self.host, self.port, self.db = _address(url)
        self.queue = queue
        self.free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def order(self, key: str, session: str, product: str, native: list[str]) -> list[str]:
        if self.free:
            reader, writer = self.free.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            writer.write(_command("SELECT", str(self.db)))
            await reader.readline()
        writer.write(_request(self.queue, key, session, product))
        buf = b""
        while (done := _replies(buf)) is None:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            buf += chunk
        self.free.append((reader, writer))
        return plain_merge(done[0], native)

    async def aclose(self) -> None:
        while self.free:
            _, writer = self.free.pop()
            writer.close()
            await writer.wait_closed()


class Raw:
    """The sync twin: one blocking socket per thread."""

    def __init__(self, url: str, queue: str) -> None:
        self.host, self.port, self.db = _address(url)
        self.queue = queue
        self.local = threading.local()
        self.socks: list[socket.socket] = []

    def order(self, key: str, session: str, product: str, native: list[str]) -> list[str]:
        sock = getattr(self.local, "sock", None)
        if sock is None:
            sock = self.local.sock = socket.create_connection((self.host, self.port))
            self.socks.append(sock)
            sock.sendall(_command("SELECT", str(self.db)))
            sock.recv(64)
        sock.sendall(_request(self.queue, key, session, product))
        buf = b""
        while (done := _replies(buf)) is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            buf += chunk
        return plain_merge(done[0], native)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()

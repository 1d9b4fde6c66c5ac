"""A TCP proxy in front of a Redis URL for fault tests: every new connection is opened to
Redis, and each chunk of Redis's replies goes through `Proxy.reply`, which a test's proxy
overrides to hold, drop or cut them. Requests pass unchanged."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.parse


class Proxy:
    """Passes everything through; `url` is the proxy's own redis:// address (same database)."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}{parts.path}"
        self.sockets: list[socket.socket] = [self.listener]
        self.accepted = 0  # connections made through it
        threading.Thread(target=self._accept, daemon=True).start()

    def reply(self, chunk: bytes, opened: float) -> tuple[bytes, bool]:
        """What to pass on of a chunk of replies on a connection opened at `opened`
        (time.monotonic()), and whether to close the connection after it."""
        return chunk, False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            self.accepted += 1
            opened = time.monotonic()
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._replies, args=(upstream, client, opened), daemon=True).start()

    def _requests(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass

    def _replies(self, src: socket.socket, dst: socket.socket, opened: float) -> None:
        try:
            while chunk := src.recv(65536):
                passed, cut = self.reply(chunk, opened)
                if passed:
                    dst.sendall(passed)
                if cut:
                    _shut(src, dst)  # shutdown first: the other pump is in recv on them
                    return
        except OSError:
            pass

    def close(self) -> None:
        _shut(*self.sockets)


def _shut(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()


class SlowStart(Proxy):
    """Holds back Redis's replies on each new connection for `hold` seconds: a connection
    handshake that is slow, but well within the read bound."""

    def __init__(self, url: str, hold: float) -> None:
        self.hold = hold
        super().__init__(url)

    def reply(self, chunk: bytes, opened: float) -> tuple[bytes, bool]:
        time.sleep(max(0.0, opened + self.hold - time.monotonic()))
        return chunk, False


class FirstReplyOnly(Proxy):
    """Once `cut` is set, passes Redis's next answer only up to the end of its first reply and
    then closes the connection: the replies after it are lost."""

    def __init__(self, url: str) -> None:
        self.cut = False
        super().__init__(url)

    def reply(self, chunk: bytes, opened: float) -> tuple[bytes, bool]:
        if self.cut and b"\r\n" in chunk:
            self.cut = False
            return chunk[: chunk.index(b"\r\n") + 2], True
        return chunk, False


class Muted(Proxy):
    """Drops Redis's replies once `mute` is set (a Redis gone silent after the handshake, like
    a SIGSTOPped one)."""

    def __init__(self, url: str) -> None:
        self.mute = False
        super().__init__(url)

    def reply(self, chunk: bytes, opened: float) -> tuple[bytes, bool]:
        return (b"" if self.mute else chunk), False

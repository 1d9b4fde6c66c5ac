"""The sandbox's record of every request on the recommendation path.

Tests and the demo read it to see exactly what a producer sent and what it was
told. It is bounded (``SandboxConfig.log_limit``, default 1,000,000 entries,
roughly 0.5-1 KB each): past the limit the oldest entries are dropped, and
indexes keep counting so ``since`` stays meaningful. It never holds the token,
only whether it matched.

Entries are stored as tuples and turned into dicts only when read, to keep the
request path cheap. Appends come from the event loop thread, reads may come
from a test thread, hence the lock.
"""

from __future__ import annotations

import threading
from collections import deque
from itertools import islice
from typing import NamedTuple


class _Entry(NamedTuple):
    t: float
    status: int
    body: object
    content_type: str | None
    token_ok: bool
    products: list[str] | None


class RequestLog:
    """A bounded, thread-safe, append-only (until cleared) list of requests."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[_Entry] = deque(maxlen=limit)
        self._count = 0

    def append(
        self,
        t: float,
        status: int,
        body: object,
        *,
        content_type: str | None,
        token_ok: bool,
        products: list[str] | None = None,
    ) -> None:
        """Record one request; ``body`` is the parsed JSON or the raw text.

        ``products`` is given for 200 answers only. The list is stored, not
        copied: callers must not mutate it afterwards.
        """
        entry = _Entry(t, status, body, content_type, token_ok, products)
        with self._lock:
            self._entries.append(entry)
            self._count += 1

    @property
    def limit(self) -> int | None:
        """The current bound."""
        return self._entries.maxlen

    @property
    def count(self) -> int:
        """Requests recorded since the last clear, including dropped ones."""
        return self._count

    def snapshot(self, since: int = 0) -> tuple[int, list[dict[str, object]]]:
        """``(count, entries)`` for entries with index >= ``since`` still kept.

        Each entry is ``{"index", "t", "status", "body", "headers":
        {"content-type", "token_ok"}}`` plus ``"products"`` for 200 answers.
        Treat the returned bodies as read-only; they are shared with the log.
        """
        with self._lock:
            count = self._count
            first = count - len(self._entries)
            skip = min(max(0, since - first), len(self._entries))
            # read from the right so a poll for the newest few is cheap on a full log
            kept = list(islice(reversed(self._entries), len(self._entries) - skip))
        kept.reverse()
        out: list[dict[str, object]] = []
        for offset, entry in enumerate(kept):
            shown: dict[str, object] = {
                "index": first + skip + offset,
                "t": entry.t,
                "status": entry.status,
                "body": entry.body,
                "headers": {"content-type": entry.content_type, "token_ok": entry.token_ok},
            }
            if entry.products is not None:
                shown["products"] = entry.products
            out.append(shown)
        return count, out

    def clear(self) -> None:
        """Drop every entry and restart indexes at 0."""
        with self._lock:
            self._entries.clear()
            self._count = 0

    def resize(self, limit: int) -> None:
        """Change the bound, keeping the newest ``limit`` entries."""
        with self._lock:
            if limit != self._entries.maxlen:
                self._entries = deque(self._entries, maxlen=limit)

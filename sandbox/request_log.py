"""The sandbox's record of every request on the recommendation path.

Tests and the demo read it to see exactly what a producer sent and what it was
told. It is bounded (``SandboxConfig.log_limit``, default 1,000,000 entries,
roughly 0.5-1 KB each): past the limit the oldest entries are dropped, and
indexes keep counting so ``since`` stays meaningful. It never holds the token,
only whether it matched.

Entries are stored as flat tuples of bytes, strings and numbers (the body as
it arrived, products as a tuple) and turned into dicts only when read, where
the body is parsed. Such tuples are left out of garbage collection: with
parsed bodies kept as dicts, a log of ~20,000 requests made each full
collection stop the server for up to 98 ms, which showed as a 130 ms p99 for
a 50 ms upstream at 1,500 requests/s. Reading never fails on what a client
sent: a body that cannot be shown as JSON safely (see :func:`shown_body`) is
shown as text. Bodies are at most ``MAX_BODY_BYTES`` (64 KiB): a larger one
is refused with 413 before it is read, and logged without its body.
Appends come from the event loop thread, reads may come from a test thread,
hence the lock.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from itertools import islice
from typing import Any, Final

from fashionai_pipeline.sandbox.contract import ContractError, decode_json

# One entry: (t, status, raw body or None, content-type, token ok, products
# tuple or None). A plain tuple, not a NamedTuple: the collector stops tracking
# exact tuples of atoms, never instances of a tuple subclass.
_Entry = tuple[float, int, bytes | None, str | None, bool, tuple[str, ...] | None]


#: Deepest nesting a body is shown parsed with; a real body nests 2 deep. Deeper
#: ones are shown as text, so answering the log never meets the recursion limit.
SHOWN_DEPTH: Final = 32


def _showable(value: object) -> bool:
    """Whether ``value`` nests at most :data:`SHOWN_DEPTH` deep and has only finite numbers.

    Iterative, so it cannot itself hit the recursion limit; such a value
    re-encodes as strict JSON (no ``Infinity`` from ``1e400``).
    """
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict | list):
            if depth > SHOWN_DEPTH:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def shown_body(raw: bytes) -> object:
    """The body as the log shows it: parsed JSON when it parses and can be shown safely, else text.

    Never raises: a body that is not JSON, nests deeper than
    :data:`SHOWN_DEPTH` or holds a number beyond a float's range is shown as
    the text that arrived (undecodable bytes replaced).
    """
    try:
        parsed = decode_json(raw)
    except ContractError:
        parsed = None
    else:
        if _showable(parsed):
            return parsed
    return raw.decode("utf-8", "replace")


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
        raw: bytes | None,
        *,
        content_type: str | None,
        token_ok: bool,
        products: list[str] | None = None,
    ) -> None:
        """Record one request; ``raw`` is its body as it arrived (None: not read).

        ``products`` is given for 200 answers only.
        """
        kept = None if products is None else tuple(products)
        entry: _Entry = (t, status, raw, content_type, token_ok, kept)
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

    def snapshot(self, since: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """``(count, entries)`` for entries with index >= ``since`` still kept.

        Each entry is ``{"index", "t", "status", "body", "headers":
        {"content-type", "token_ok"}}`` plus ``"products"`` for 200 answers.
        Bodies and product lists are fresh copies.
        """
        with self._lock:
            count = self._count
            first = count - len(self._entries)
            skip = min(max(0, since - first), len(self._entries))
            # read from the right so a poll for the newest few is cheap on a full log
            kept = list(islice(reversed(self._entries), len(self._entries) - skip))
        kept.reverse()
        out: list[dict[str, object]] = []
        for offset, (t, status, raw, content_type, token_ok, products) in enumerate(kept):
            shown: dict[str, object] = {
                "index": first + skip + offset,
                "t": t,
                "status": status,
                "body": None if raw is None else shown_body(raw),
                "headers": {"content-type": content_type, "token_ok": token_ok},
            }
            if products is not None:
                shown["products"] = list(products)
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

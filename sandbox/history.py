"""What the sandbox remembers of each session and each logged-in user.

A history is a *profile* — for every feature (``category:dresses``,
``pattern:floral``, ...) the recency-weighted attention it got — plus the
count of signal events and the most recent products and categories. A signal
event is a productView or shopTheLook of a catalog product, or a categoryView
of a catalog category; customShelf requests and unknown ids carry no signal.

Recency: each signal weighs :data:`GROWTH` times the one before it, so once
normalised (divided by ``total``) the weight of an event halves about every
three events. Growing the new weight instead of shrinking every old one keeps
a record O(features of one product); the weights are rescaled now and then so
they never overflow.

Entries are tuples of numbers and flat dicts of numbers kept apart from them —
objects the garbage collector stops tracking — so a sandbox holding a hundred thousand
histories does not slow its full collections (tests/sandbox/test_sandbox_memory.py).
Bounded: past ``max_keys`` the least recently active key is forgotten.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, NamedTuple

GROWTH: Final = 1.25
RECENT: Final = 20  # products/categories remembered for explanations and the shelf
_RESCALE_AT: Final = 400  # GROWTH ** 400 ~ 1e39, far from overflow


class History(NamedTuple):
    """One key's history (a snapshot; the store replaces it on each record).

    ``recent``: newest last; a product as its index ``i >= 0``, a category as
    ``-(category number + 1)``.
    """

    signals: int
    total: float
    profile: dict[int, float]
    recent: tuple[int, ...]
    step: float  # the weight the next signal gets


EMPTY: Final = History(0, 0.0, {}, (), 1.0)


class HistoryStore:
    """Histories by key (a session id or a user id), LRU-bounded. Event-loop thread only."""

    def __init__(self, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.max_keys = max_keys
        # (signals, total, recent, step) per key, least recently active first; the profile
        # dicts live apart because a tuple holding a dict stays tracked by the collector
        self._items: OrderedDict[str, tuple[int, float, tuple[int, ...], float]] = OrderedDict()
        self._profiles: dict[str, dict[int, float]] = {}

    def get(self, key: str) -> History:
        """The history of ``key`` (:data:`EMPTY` when none). Does not refresh its recency."""
        item = self._items.get(key)
        if item is None:
            return EMPTY
        signals, total, recent, step = item
        return History(signals, total, self._profiles[key], recent, step)

    def record(self, key: str, features: tuple[int, ...], recent: int) -> None:
        """Add one signal event: its ``features`` and its ``recent`` code (see :class:`History`)."""
        item = self._items.get(key)
        last: tuple[int, ...]
        if item is None:
            signals, total, last, step = 0, 0.0, (), 1.0
            profile: dict[int, float] = {}
            if len(self._items) >= self.max_keys:
                gone, _ = self._items.popitem(last=False)
                del self._profiles[gone]
            self._profiles[key] = profile
        else:
            signals, total, last, step = item
            profile = self._profiles[key]
            self._items.move_to_end(key)
        for feature in features:
            profile[feature] = profile.get(feature, 0.0) + step
        total += step
        step *= GROWTH
        if signals % _RESCALE_AT == _RESCALE_AT - 1:
            for feature in profile:
                profile[feature] /= total
            step /= total
            total = 1.0
        self._items[key] = (signals + 1, total, (*last[-(RECENT - 1) :], recent), step)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> int:
        """Forget every history; returns how many there were."""
        count = len(self._items)
        self._items.clear()
        self._profiles.clear()
        return count

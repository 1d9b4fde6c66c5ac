"""Cutting one lane's deliveries into batches: by size, or by the age of the first.

Pure and single-threaded (the pump's consumer thread owns each Batcher); time
is passed in, so tests cut batches without sleeping.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """Collects items until `size` of them, or until `interval` seconds after the first."""

    def __init__(self, size: int, interval: float) -> None:
        if size < 1:
            raise ValueError("size: must be at least 1")
        self.size = size
        self.interval = interval
        self._items: list[T] = []
        self._since = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now: float) -> list[T] | None:
        """Add one item; returns the batch when this item fills it, else None."""
        if not self._items:
            self._since = now
        self._items.append(item)
        return self.take() if len(self._items) >= self.size else None

    def due(self, now: float) -> list[T] | None:
        """The pending items if the first of them waited `interval` already, else None."""
        if self._items and now - self._since >= self.interval:
            return self.take()
        return None

    def take(self) -> list[T]:
        """Everything pending, now (shutdown, a lost connection)."""
        items, self._items = self._items, []
        return items

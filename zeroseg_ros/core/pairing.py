"""Pairing two streams by time stamp (a colour frame with its depth image), ROS-free.

The buffer keeps only the newest few items, so nothing grows when one stream runs faster than the other or
its partner never comes; the bag labeller also drops those too old for any later frame. Safe to fill from one
thread (the executor's callbacks) and read from another (the inference thread).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def stamp_ns(header: Any) -> int:
    """A std_msgs/Header's stamp in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclass(frozen=True)
class Match(Generic[T]):
    item: T | None  # the partner, None when none lies within the tolerance
    offset_ns: int | None  # stamp difference to the nearest item kept (None when the buffer is empty)


class StampBuffer(Generic[T]):
    """The ``capacity`` newest items by arrival, each with its stamp in nanoseconds."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[tuple[int, T]] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, item: T) -> None:
        with self._lock:
            self._items.append((stamp_ns, item))

    def drop_older_than(self, stamp_ns: int) -> None:
        """Removes the items stamped before ``stamp_ns``."""
        with self._lock:
            self._items = deque(((s, i) for s, i in self._items if s >= stamp_ns), maxlen=self._items.maxlen)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def nearest(self, stamp_ns: int, tolerance_ns: int) -> Match[T]:
        """The item of equal stamp, else the one of nearest stamp when within ``tolerance_ns``; on a tie the
        newer arrival."""
        with self._lock:
            items = list(self._items)
        if not items:
            return Match(None, None)
        offset, item = min(((abs(s - stamp_ns), i) for s, i in reversed(items)), key=lambda pair: pair[0])
        return Match(item if offset <= tolerance_ns else None, offset)

"""Frames and a text encoding beside them take turns at the CPU's cores instead of sharing them.

Two torch workloads on the same cores at once, each with all intra-op threads, slow each other more than
their shares say (their threads preempt each other inside parallel regions): back to back on two cores, a
frame took about 2.4 x its time alone and a ``@coco-stuff`` change 2.1 x. Taking turns keeps each at full
speed while it runs: a frame, then text batches for ``text_turn`` frame times, then the next frame. The gap
between frames is then at most a frame, the text's turn and one text batch; the change gets
``text_turn / (1 + text_turn)`` of the time (docs/benchmarks.md, "Query changes beside running frames").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

TEXT_TURN = 1.25  # the text's turn between two frames, in frame times


class CoreTurns:
    """Wrap each frame in ``frame()``, each text encoding in ``encoding()`` and each of its batches in
    ``text_batch()``. Without an encoding in progress frames never wait; a frame waits for a batch that runs,
    never the reverse while a frame is due. ``enabled=False`` (a GPU, which interleaves both itself): nothing
    ever waits."""

    def __init__(self, enabled: bool = True, text_turn: float = TEXT_TURN) -> None:
        self._enabled = enabled
        self._text_turn = text_turn
        self._changed = threading.Condition()
        self._running = False  # a frame or a text batch has the cores
        self._frames_waiting = 0
        self._encodings = 0
        self._frame_s = 0.0  # the last frame's time
        self._frame_ended = float("-inf")

    def _frame_due_in(self) -> float:
        """Seconds until the text's turn since the last frame is over (<= 0: a frame is due)."""
        return self._frame_ended + self._text_turn * self._frame_s - time.monotonic()

    @contextmanager
    def frame(self) -> Iterator[None]:
        if not self._enabled:
            yield
            return
        with self._changed:
            self._frames_waiting += 1
            try:
                while self._running or (self._encodings and self._frame_due_in() > 0):
                    self._changed.wait(timeout=max(self._frame_due_in(), 0.0) or None)
                self._running = True
            finally:
                self._frames_waiting -= 1
        started = time.monotonic()
        try:
            yield
        finally:
            with self._changed:
                self._running = False
                self._frame_ended = time.monotonic()
                self._frame_s = self._frame_ended - started
                self._changed.notify_all()

    @contextmanager
    def encoding(self) -> Iterator[None]:
        with self._changed:
            self._encodings += 1
        try:
            yield
        finally:
            with self._changed:
                self._encodings -= 1
                self._changed.notify_all()

    @contextmanager
    def text_batch(self) -> Iterator[None]:
        if not self._enabled:
            yield
            return
        with self._changed:
            while self._running or (self._frames_waiting and self._frame_due_in() <= 0):
                self._changed.wait()
            self._running = True
        try:
            yield
        finally:
            with self._changed:
                self._running = False
                self._changed.notify_all()

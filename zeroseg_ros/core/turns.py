"""Frames and a text encoding beside them take turns at the CPU's cores instead of sharing them.

Two torch workloads on the same cores at once, each with all intra-op threads, slow each other more than
their shares say (their threads preempt each other inside parallel regions): back to back on two cores, a
``@coco-stuff`` change took 2.1 x its time alone and frames came every 2.4 frame times. Taking turns keeps
each at full speed while it runs: a frame, then text batches for ``text_turn`` frame times (rounded to whole
batches), then the next frame. The gap between frames is then about a frame and the text's turn, and the
change takes about ``(1 + turn) / turn`` times its time alone. Both goals of issue 10 (gap at most 3 frame
times, change at most 2 x its time alone) need a turn between about 1 and 1.2 frame times on two cores
(docs/benchmarks.md, "Query change and 3-D outputs after their changes").

The batches run on the frame's thread while it waits for its turn: two threads taking turns still left the
idle one's OpenMP workers spinning beside the other (with the batches on the text's own thread a change took
1.83-1.92 x its time alone and a gap reached 3.65 frame times). Without frames, the text's thread runs them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import TypeVar

TEXT_TURN = 1.4  # the text's turn between two frames, in frame times
HANDOVER_S = 0.05  # how long a batch waits for a frame's thread before the text's own thread runs it

Result = TypeVar("Result")


class CoreTurns:
    """Wrap each frame in ``frame()``, each text encoding in ``encoding()``, and run each of its batches
    through ``text_batch(compute)``. Without an encoding in progress frames never wait. ``enabled=False``
    (a GPU, which interleaves both itself): nothing waits, batches run where they are called."""

    def __init__(self, enabled: bool = True, text_turn: float = TEXT_TURN) -> None:
        self._enabled = enabled
        self._text_turn = text_turn
        self._changed = threading.Condition()
        self._running = False  # a frame or a text batch has the cores
        self._frames_waiting = 0
        self._encodings = 0
        self._handed: tuple[Callable[[], object], Future[object]] | None = None  # a batch for a frame's thread
        self._frame_s = 0.0  # the last frame's time
        self._batch_s = 0.0  # the last text batch's time
        self._frame_ended = float("-inf")

    def _frame_due_in(self) -> float:
        """Seconds until the text's turn since the last frame is over (<= 0: a frame is due). The turn is
        rounded to whole batches: a batch that would end more than half a batch after it does not start."""
        return self._frame_ended + self._text_turn * self._frame_s - self._batch_s / 2 - time.monotonic()

    @contextmanager
    def frame(self) -> Iterator[None]:
        if not self._enabled:
            yield
            return
        with self._changed:
            self._frames_waiting += 1
            try:
                while True:
                    due_in = self._frame_due_in()
                    if self._handed is not None and not self._running and due_in > 0:
                        self._run_handed()  # the text's turn, on this thread
                    elif self._running or (self._encodings and due_in > 0):
                        self._changed.wait(timeout=due_in if due_in > 0 else None)
                    else:
                        break
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

    def _run_handed(self) -> None:
        """Run the handed batch on this (a frame's) thread, the lock released meanwhile; called holding it."""
        assert self._handed is not None
        compute, future = self._handed
        self._handed, self._running = None, True
        self._changed.release()
        started = time.monotonic()
        try:
            future.set_result(compute())
        except BaseException as error:  # the text's thread raises it
            future.set_exception(error)
        finally:
            self._changed.acquire()
            self._batch_done(started)

    def _batch_done(self, started: float) -> None:
        """A batch begun at ``started`` has ended: the cores are free. Called holding the lock."""
        self._batch_s = time.monotonic() - started
        self._running = False
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

    def text_batch(self, compute: Callable[[], Result]) -> Result:
        """``compute()``'s result: run by a frame's thread waiting for its turn, or (no frame thread within
        ``HANDOVER_S``) here, never beside a frame nor while a waiting frame is due."""
        if not self._enabled:
            return compute()
        future: Future[object] = Future()
        with self._changed:
            self._handed = (compute, future)
            self._changed.notify_all()
            run_here = False
            while self._handed is not None:
                # A frame's thread comes back right after its frame: give it HANDOVER_S from then.
                unclaimed = not self._frames_waiting and time.monotonic() - self._frame_ended >= HANDOVER_S
                if not self._running and unclaimed:
                    self._handed, self._running, run_here = None, True, True
                    break
                self._changed.wait(timeout=HANDOVER_S)
        if not run_here:
            return future.result()  # type: ignore[return-value]
        started = time.monotonic()
        try:
            return compute()
        finally:
            with self._changed:
                self._batch_done(started)

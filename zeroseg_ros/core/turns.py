"""Frames and a text encoding beside them take turns at the CPU's cores instead of sharing them.

Two torch workloads on the same cores at once, each with all intra-op threads, slow each other more than
their shares say (their threads preempt each other inside parallel regions). So on the CPU a frame runs
alone, then the text's turn, then the next frame. The turn is derived from three measured times: ``q``, the
median time of the last ``KEPT`` frames that ran with no encoding in progress (quiet frames), ``f``, the median
of the last ``KEPT`` frames, and ``p``, the median time per prompt of the last ``KEPT`` text batches. After a
frame the text may use ``gap_target * q - f`` seconds, so that the predicted gap between two frames (a frame
and the text's turn) is ``gap_target`` quiet frame times, also when the frames run slower beside the encoding
(the text's weights push the image tower's out of the caches). Before any quiet frame, ``q`` is ``f``.

The text encoder asks ``text_batch_prompts`` how many prompts its next batch should hold: as many as fit the
time left of the turn at ``p`` each, but at most a ``1 / BATCHES_PER_TURN`` share of a turn, so that the
clock is read again before the turn ends and a batch that runs slower than predicted shortens the rest of
it; when fewer than ``MIN_BATCH`` prompts fit, the batch is sized for the next turn and waits for it. A
handed batch starts only while it is predicted to end within the turn, except that a turn's first batch
always runs (however long it is), so that the encoding progresses.
Before any batch is measured, batches hold ``MIN_BATCH`` prompts; before any frame is, they hold ``most``
and nothing waits.

The batches run on the frame's thread while it waits for its turn, so that one set of torch (OpenMP)
threads has the cores at a time; without frames, the text's own thread runs them.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import TypeVar

# The predicted gap between frames during an encoding, in quiet frame times: a frame and the text's turn.
GAP_TARGET = 2.0
BATCHES_PER_TURN = 3  # the fewest batches a turn is cut into
MIN_BATCH = 8  # prompts: the fewest a batch holds beside frames (smaller ones cost more per prompt)
KEPT = 5  # the last frames and batches whose median times predict the next ones
HANDOVER_S = 0.05  # how long a batch waits for a frame's thread before the text's own thread runs it

Result = TypeVar("Result")
Clock = Callable[[], float]


class CoreTurns:
    """Wrap each frame in ``frame()``, each text encoding in ``encoding()``, size each of its batches with
    ``text_batch_prompts(most)`` and run it through ``text_batch(compute, prompts)``. Without an encoding in
    progress frames never wait. ``enabled=False`` (a GPU, which interleaves both itself): nothing waits,
    batches run where they are called and hold ``most`` prompts."""

    def __init__(self, enabled: bool = True, gap_target: float = GAP_TARGET, clock: Clock = time.monotonic) -> None:
        if gap_target <= 1.0:
            raise ValueError(f"gap_target must exceed one frame time, got {gap_target}")
        self._enabled = enabled
        self._gap_target = gap_target
        self._clock = clock
        self._changed = threading.Condition()
        self._running = False  # a frame or a text batch has the cores
        self._frame_running = False
        self._frames_waiting = 0
        self._encodings = 0
        self._handed: tuple[Callable[[], object], int, Future[object]] | None = None  # for a frame's thread
        self._frame_s: deque[float] = deque(maxlen=KEPT)
        self._quiet_frame_s: deque[float] = deque(maxlen=KEPT)  # frames with no encoding in progress
        self._prompt_s: deque[float] = deque(maxlen=KEPT)  # a batch's time per prompt
        self._frame_ended = float("-inf")
        self._turn_batches = 0  # batches begun since the last frame ended

    def _turn_s(self) -> float:
        """The text's turn after a frame, in seconds (0 before any frame was measured)."""
        if not self._frame_s:
            return 0.0
        quiet_s = statistics.median(self._quiet_frame_s or self._frame_s)
        return max(self._gap_target * quiet_s - max(self._frame_s), 0.0)

    def _predicted_s(self, prompts: int) -> float:
        return prompts * statistics.median(self._prompt_s) if self._prompt_s else 0.0

    def _turn_left(self) -> float:
        """Seconds left of the text's turn since the last frame (a whole turn while a frame runs)."""
        if self._frame_running:
            return self._turn_s()
        return self._frame_ended + self._turn_s() - self._clock()

    def _text_turn_on(self) -> bool:
        """Whether a waiting frame leaves the cores to the text: its turn's first batch when handed, then
        each handed batch that is predicted to end within the turn; with none handed, until the turn ends."""
        if not self._encodings:
            return False
        left = self._turn_left()
        if self._handed is None:
            return left > 0
        return self._turn_batches == 0 or self._predicted_s(self._handed[1]) <= left

    def text_batch_prompts(self, most: int) -> int:
        """How many prompts (at most ``most``) the next text batch should hold."""
        if not self._enabled:
            return most
        with self._changed:
            if not self._frame_s:
                return most
            if not self._prompt_s:
                return min(MIN_BATCH, most)
            prompt_s = statistics.median(self._prompt_s)
            turn_s = self._turn_s()
            left = self._turn_left()
            if left < MIN_BATCH * prompt_s:
                left = turn_s  # the batch waits for the next turn
            fitting = int(min(left, turn_s / BATCHES_PER_TURN) / prompt_s)
            return max(min(MIN_BATCH, most), min(most, fitting))

    @contextmanager
    def frame(self) -> Iterator[None]:
        if not self._enabled:
            yield
            return
        with self._changed:
            self._frames_waiting += 1
            try:
                while True:
                    text_turn = self._text_turn_on()
                    if self._running:
                        self._changed.wait()
                    elif text_turn and self._handed is not None:
                        self._run_handed()  # the text's turn, on this thread
                    elif text_turn:
                        self._changed.wait(timeout=self._turn_left())
                    else:
                        break
                self._running = self._frame_running = True
                quiet = not self._encodings
            finally:
                self._frames_waiting -= 1
        started = self._clock()
        try:
            yield
        finally:
            with self._changed:
                self._running = self._frame_running = False
                self._frame_ended = self._clock()
                self._frame_s.append(self._frame_ended - started)
                if quiet and not self._encodings:
                    self._quiet_frame_s.append(self._frame_ended - started)
                self._turn_batches = 0
                self._changed.notify_all()

    def _run_handed(self) -> None:
        """Run the handed batch on this (a frame's) thread, the lock released meanwhile; called holding it."""
        assert self._handed is not None
        compute, prompts, future = self._handed
        self._handed = None
        started = self._batch_begun()
        self._changed.release()
        try:
            future.set_result(compute())
        except BaseException as error:  # the text's thread raises it
            future.set_exception(error)
        finally:
            self._changed.acquire()
            self._batch_done(started, prompts)

    def _batch_begun(self) -> float:
        """A batch takes the cores; returns its start. Called holding the lock."""
        self._running = True
        self._turn_batches += 1
        return self._clock()

    def _batch_done(self, started: float, prompts: int) -> None:
        """A batch of ``prompts`` begun at ``started`` has ended: the cores are free. Called holding the lock."""
        self._prompt_s.append((self._clock() - started) / max(prompts, 1))
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

    def text_batch(self, compute: Callable[[], Result], prompts: int) -> Result:
        """``compute()``'s result (a batch of ``prompts``): run by a frame's thread waiting for its turn, or (no
        frame thread within ``HANDOVER_S``) here, never beside a frame nor while a waiting frame is due."""
        if not self._enabled:
            return compute()
        future: Future[object] = Future()
        with self._changed:
            self._handed = (compute, prompts, future)
            self._changed.notify_all()
            started = None
            while self._handed is not None:
                # A frame's thread comes back right after its frame: give it HANDOVER_S from then.
                unclaimed = not self._frames_waiting and self._clock() - self._frame_ended >= HANDOVER_S
                if not self._running and unclaimed:
                    self._handed = None
                    started = self._batch_begun()
                    break
                self._changed.wait(timeout=HANDOVER_S)
        if started is None:
            return future.result()  # type: ignore[return-value]
        try:
            return compute()
        finally:
            with self._changed:
                self._batch_done(started, prompts)

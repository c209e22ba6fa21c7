"""The node's inference thread and its one-slot mailbox.

A frame that arrives while another waits replaces it (the caller counts it as dropped), so the output always
belongs to the newest frame and no queue grows behind a slow model. Query and settings changes go through the
same mailbox and are applied between frames, in this thread, so text encoding never blocks the executor.
After a change the pipeline is run once for the frame sizes seen (warm-up), so the next frame does not pay
for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from zeroseg_ros.core.errors import InvalidQueryError, ZerosegError
from zeroseg_ros.core.segmenter import Segmenter

WARM_SIZES_KEPT = 4  # frame sizes kept ready: those of warmup_sizes, then the latest seen


@dataclass
class Frame:
    """A received camera message waiting for the worker."""

    msg: Any
    received: float  # time.monotonic()


class WorkerHandler(Protocol):
    """What the node does for the worker: the ROS side of each step."""

    def process_frame(self, frame: Frame) -> tuple[int, int] | None:
        """Convert, segment and publish ``frame``; its (height, width), or None when it was not segmented."""

    def segmenter_changes(self, parameters: dict[str, Any]) -> dict[str, object]:
        """The ``Segmenter.update_config`` keywords for changed node parameters."""

    def queries_applied(self, labels: tuple[str, ...]) -> None: ...

    def encoding_progress(self, done: int, total: int) -> None: ...

    def queries_rejected(self, reason: str) -> None: ...

    def frame_failed(self, reason: str, unexpected: bool) -> None: ...

    def warmed_up(self, sizes: list[tuple[int, int]], seconds: float) -> None: ...


class InferenceWorker:
    """See the module docstring. ``max_rate`` and ``overlay_alpha`` are read before every frame, so run-time
    parameter changes apply from the next one."""

    def __init__(
        self,
        segmenter: Segmenter,
        handler: WorkerHandler,
        max_rate: Callable[[], float],
        overlay_alpha: Callable[[], float | None],
        warmup_sizes: list[tuple[int, int]],
        is_running: Callable[[], bool],
    ) -> None:
        self._segmenter = segmenter
        self._handler = handler
        self._max_rate = max_rate
        self._overlay_alpha = overlay_alpha
        self._is_running = is_running
        self._wake = threading.Condition()
        self._frame: Frame | None = None
        self._pending_queries: str | None = None
        self._pending_config: dict[str, Any] = {}
        self._stopping = False
        self._last_started = 0.0
        # Frame sizes to have ready (recorded, on CUDA) whenever queries or settings change, oldest first.
        self._frame_sizes: dict[tuple[int, int], None] = {}
        for size in warmup_sizes:
            self._remember_size(size)
        self._warmed_up = False
        self.warming_up = False
        self._thread = threading.Thread(target=self._work, name="zeroseg-inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)

    # ------------------------------------------------------------------ mailbox (any thread)
    def put_frame(self, frame: Frame) -> bool:
        """Hands ``frame`` to the worker; True when it replaced a frame that was still waiting."""
        with self._wake:
            replaced = self._frame is not None
            self._frame = frame
            self._wake.notify()
        return replaced

    def put_queries(self, text: str) -> None:
        with self._wake:
            self._pending_queries = text
            self._wake.notify()

    def put_config(self, parameters: dict[str, Any]) -> None:
        """Changed segmentation parameters, applied before the next frame."""
        with self._wake:
            self._pending_config.update(parameters)
            self._wake.notify()

    # ------------------------------------------------------------------ the thread
    def _take_work(self) -> tuple[Frame | None, str | None, dict[str, Any]]:
        with self._wake:
            while not self._stopping and self._frame is None and self._pending_queries is None:
                if self._pending_config:
                    break
                self._wake.wait(timeout=0.5)
            queries, self._pending_queries = self._pending_queries, None
            config, self._pending_config = self._pending_config, {}
            frame = None
            max_rate = self._max_rate()
            wait = 1.0 / max_rate - (time.monotonic() - self._last_started) if max_rate > 0 else 0.0
            if wait <= 0 or queries is not None or config:
                frame, self._frame = self._frame, None
            elif self._frame is not None:
                # Too early for the next frame: sleep outside the lock; newer frames replace this one.
                self._wake.wait(timeout=wait)
            return frame, queries, config

    def _work(self) -> None:
        while True:
            frame, queries, config = self._take_work()
            if self._stopping:
                return
            try:
                if config:
                    self._segmenter.update_config(**self._handler.segmenter_changes(config))
                if queries is not None:
                    self._apply_queries(queries)
                if config or queries is not None:
                    self._warm_up()
                if frame is not None:
                    self._last_started = time.monotonic()
                    size = self._handler.process_frame(frame)
                    if size is not None:
                        self._remember_size(size)
            except ZerosegError as error:
                self._handler.frame_failed(str(error), unexpected=False)
            except Exception as error:  # a bug must not kill the node: log it, go on with the next frame
                if not self._is_running():
                    return  # shut down (Ctrl-C) while publishing: nothing to report
                self._handler.frame_failed(f"unexpected {type(error).__name__}: {error}", unexpected=True)

    def _apply_queries(self, text: str) -> None:
        try:
            self._segmenter.set_queries(text, progress=self._handler.encoding_progress)
        except InvalidQueryError as error:
            self._handler.queries_rejected(str(error))
            return
        self._handler.queries_applied(self._segmenter.labels)

    def _warm_up(self) -> None:
        """Run the pipeline for the known frame sizes now, so that the next frame does not wait for it: once
        (model caches), and after every change where frames replay CUDA graphs (a change drops them)."""
        if not self._segmenter.labels or not self._frame_sizes:
            return
        if self._warmed_up and not self._segmenter.records_graphs:
            return
        sizes = sorted(self._frame_sizes)
        self.warming_up = True
        started = time.monotonic()
        try:
            self._segmenter.warmup(sizes, self._overlay_alpha())
        finally:
            self.warming_up = False
        self._warmed_up = True
        self._handler.warmed_up(sizes, time.monotonic() - started)

    def _remember_size(self, size: tuple[int, int]) -> None:
        self._frame_sizes.pop(size, None)
        self._frame_sizes[size] = None
        while len(self._frame_sizes) > WARM_SIZES_KEPT:
            del self._frame_sizes[next(iter(self._frame_sizes))]

"""The node's inference thread, its one-slot mailboxes (one per camera), and the thread that prepares query changes.

A frame that arrives while another of its camera waits replaces it (the caller counts it as dropped for that
camera), so the output always belongs to the newest frame and no queue grows behind a slow model. Each pass
takes the waiting frame of every camera, up to ``max_batch``, and the handler segments them as one batch; when
more cameras wait than a pass takes, those served longest ago go first (then the frame waiting longest), so
every camera gets its turn whatever its name or rate. Query and settings changes go to a second
thread, which encodes their text beside the running pipeline (``Segmenter.set_queries`` holds the frame lock
only to swap the result in): frames keep flowing with the old queries until the new ones are ready, and the
executor is never blocked. After a change the inference thread runs the pipeline once for the frame sizes
and batch sizes seen (warm-up), so the next frame does not pay for it. Settings changes apply from the next frame: the
inference thread waits for them (they need new text only for background words or templates).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from zeroseg_ros.core.errors import ZerosegError
from zeroseg_ros.core.segmenter import Segmenter

WARM_SIZES_KEPT = 4  # frame sizes kept ready: those of warmup_sizes, then the latest seen
WARM_BATCHES_KEPT = 4  # batch sizes kept ready, likewise (on CUDA each size and batch size is a recorded graph)

# Told when queries put in the mailbox are in use (their labels, "") or were not applied (None, the reason).
QueriesDone = Callable[[tuple[str, ...] | None, str], None]


@dataclass
class Frame:
    """A received camera message waiting for the worker."""

    msg: Any
    received: float  # time.monotonic()
    camera: str = ""  # the camera it came from ("" when the node reads one camera under its own namespace)


class WorkerHandler(Protocol):
    """What the node does for the worker: the ROS side of each step."""

    def process_batch(self, frames: Sequence[Frame]) -> list[tuple[int, int] | None]:
        """Convert, segment (as one batch) and publish ``frames``, one per camera; each one's (height, width), or
        None where it was not segmented (a refused frame is the handler's to report, for its camera only)."""

    def segmenter_changes(self, parameters: dict[str, Any]) -> dict[str, object]:
        """The ``Segmenter.update_config`` keywords for changed node parameters."""

    def queries_applied(self, labels: tuple[str, ...], seconds: float) -> None:
        """The queries frames now use, ``seconds`` after they were requested."""

    def queries_rejected(self, reason: str) -> None: ...

    def config_failed(self, parameters: dict[str, Any], reason: str) -> None:
        """Settings that could not be applied (the segmenter kept its previous ones)."""

    def frame_failed(self, reason: str, unexpected: bool) -> None: ...

    def warmed_up(self, sizes: list[tuple[int, int]], seconds: float) -> None: ...


class InferenceWorker:
    """See the module docstring. ``max_rate`` (passes per second: each camera's frames at most), ``max_batch``
    and ``overlay_alpha`` are read before every pass, so run-time parameter changes apply from the next one.
    ``pending_queries`` is the query text being prepared (None when frames use the latest one)."""

    def __init__(
        self,
        segmenter: Segmenter,
        handler: WorkerHandler,
        max_rate: Callable[[], float],
        overlay_alpha: Callable[[], float | None],
        warmup_sizes: list[tuple[int, int]],
        is_running: Callable[[], bool],
        max_batch: Callable[[], int] = lambda: 1,
        warmup_batch_sizes: Sequence[int] = (1,),
    ) -> None:
        self._segmenter = segmenter
        self._handler = handler
        self._max_rate = max_rate
        self._max_batch = max_batch
        self._overlay_alpha = overlay_alpha
        self._is_running = is_running
        self._wake = threading.Condition()
        self._mailboxes: dict[str, Frame] = {}  # camera -> its newest waiting frame
        self._served: dict[str, int] = {}  # camera -> the pass that last took its frame
        self._passes = 0
        self._changes = threading.Condition(self._wake)  # same lock: the text thread's own wake-up
        self._pending_queries: str | None = None
        self._queries_done: list[QueriesDone] = []
        self._pending_config: dict[str, Any] = {}
        self._requested = 0.0  # time.monotonic() of the pending queries' request (else of a pending setting)
        self.pending_queries: str | None = None
        self._changed = False  # a change was applied: warm up before the next frame
        self._applying_config = False  # the text thread is applying settings: the next frame waits for them
        self._stopping = False
        self._last_started = 0.0
        # Frame sizes to have ready (recorded, on CUDA) whenever queries or settings change, oldest first.
        self._frame_sizes: dict[tuple[int, int], None] = {}
        for size in warmup_sizes:
            self._remember_size(size)
        self._batch_sizes: dict[int, None] = {}
        for batch in warmup_batch_sizes:
            self._remember_batch(batch)
        self._warmed_up = False
        self.warming_up = False
        self._thread = threading.Thread(target=self._work, name="zeroseg-inference", daemon=True)
        self._text_thread = threading.Thread(target=self._prepare_changes, name="zeroseg-text", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._text_thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._mailboxes.clear()
            waiting, self._queries_done = self._queries_done, []
            self._wake.notify_all()
            self._changes.notify_all()
        for done in waiting:
            done(None, "the node stopped segmenting before the queries were applied")
        for thread in (self._thread, self._text_thread):
            if thread.is_alive():
                thread.join(timeout=10.0)

    # ------------------------------------------------------------------ mailbox (any thread)
    def put_frame(self, frame: Frame) -> bool:
        """Hands ``frame`` to the worker; True when it replaced a frame of its camera that was still waiting."""
        with self._wake:
            replaced = frame.camera in self._mailboxes
            self._mailboxes[frame.camera] = frame
            self._wake.notify()
        return replaced

    def drop_frames(self) -> list[str]:
        """Forgets the frames waiting in the mailboxes (the node stopped taking frames); their cameras."""
        with self._wake:
            dropped = list(self._mailboxes)
            self._mailboxes.clear()
        return dropped

    def put_queries(self, text: str, done: QueriesDone | None = None) -> None:
        """New query text, encoded beside the running pipeline; ``done`` is told when they are in use or
        refused. Queries not yet started are replaced by newer ones (their ``done`` is told so)."""
        with self._wake:
            replaced, self._queries_done = self._queries_done, [done] if done else []
            self._pending_queries = self.pending_queries = text
            self._requested = time.monotonic()  # these queries' own request: an older one is replaced
            self._changes.notify_all()
        for waiting in replaced:
            waiting(None, "replaced by newer queries before they were applied")

    def put_config(self, parameters: dict[str, Any]) -> None:
        """Changed segmentation parameters, prepared like queries and applied before them."""
        with self._wake:
            self._pending_config.update(parameters)
            self._requested = self._requested or time.monotonic()
            self._changes.notify_all()
            self._wake.notify_all()

    # ------------------------------------------------------------------ the text thread
    def _prepare_changes(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and self._pending_queries is None and not self._pending_config:
                    self._changes.wait(timeout=0.5)
                if self._stopping:
                    return
                queries, self._pending_queries = self._pending_queries, None
                done, self._queries_done = self._queries_done, []
                config, self._pending_config = self._pending_config, {}
                self._applying_config = bool(config)
                requested = self._requested
            # Settings and queries are applied apart: a refused setting does not lose the queries.
            if config:
                self._apply_config(config)
                with self._wake:  # frames go on with the new settings while queries of the batch are encoded
                    self._applying_config = False
                    self._changed = True
                    self._wake.notify_all()
            if queries is not None:
                self._apply_queries(queries, done, requested)
            with self._wake:
                if self._pending_queries is None and not self._pending_config:
                    self.pending_queries, self._requested = None, 0.0
                self._changed = True
                self._wake.notify_all()

    def _apply_config(self, config: dict[str, Any]) -> None:
        try:
            self._segmenter.update_config(**self._handler.segmenter_changes(config))
        except Exception as error:  # the segmenter keeps its settings; the node rolls its parameters back
            self._handler.config_failed(config, f"{type(error).__name__}: {error}")

    def _apply_queries(self, text: str, done: list[QueriesDone], requested: float) -> None:
        try:
            self._segmenter.set_queries(text)  # its progress: the segmenter's (the node's log lines)
        except Exception as error:  # refused (InvalidQueryError) or failed: the previous queries stay
            reason = str(error) if isinstance(error, ZerosegError) else f"{type(error).__name__}: {error}"
            self._handler.queries_rejected(reason)
            for waiting in done:
                waiting(None, reason)
            return
        labels = self._segmenter.labels
        self._handler.queries_applied(labels, time.monotonic() - requested)
        for waiting in done:
            waiting(labels, "")

    # ------------------------------------------------------------------ the inference thread
    def _take_work(self) -> tuple[list[Frame], bool]:
        with self._wake:
            # Settings apply from the next frame (they rarely need text; queries may take long and do not wait).
            while not self._stopping and (
                (not self._mailboxes and not self._changed) or self._pending_config or self._applying_config
            ):
                self._wake.wait(timeout=0.5)
            changed, self._changed = self._changed, False
            frames: list[Frame] = []
            max_rate = self._max_rate()
            wait = 1.0 / max_rate - (time.monotonic() - self._last_started) if max_rate > 0 else 0.0
            if wait <= 0 or changed:
                frames = self._take_frames()
            elif self._mailboxes:
                # Too early for the next pass: sleep outside the lock; newer frames replace the waiting ones.
                self._wake.wait(timeout=wait)
            return frames, changed

    def _take_frames(self) -> list[Frame]:
        """The next pass's frames (under the lock): the cameras served longest ago first, then the frames
        waiting longest, at most ``max_batch``."""
        waiting = sorted(self._mailboxes.values(), key=lambda f: (self._served.get(f.camera, -1), f.received))
        taken = waiting[: max(1, self._max_batch())]
        for frame in taken:
            del self._mailboxes[frame.camera]
            self._served[frame.camera] = self._passes
        self._passes += 1
        return taken

    def _work(self) -> None:
        while True:
            frames, changed = self._take_work()
            if self._stopping:
                return
            try:
                if changed:
                    self._warm_up()
                if frames:
                    self._last_started = time.monotonic()
                    sizes = self._handler.process_batch(frames)
                    for size, count in Counter(size for size in sizes if size is not None).items():
                        self._remember_size(size)
                        self._remember_batch(count)
            except ZerosegError as error:
                self._handler.frame_failed(str(error), unexpected=False)
            except Exception as error:  # a bug must not kill the node: log it, go on with the next frame
                if not self._is_running():
                    return  # shut down (Ctrl-C) while publishing: nothing to report
                self._handler.frame_failed(f"unexpected {type(error).__name__}: {error}", unexpected=True)

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
            self._segmenter.warmup(sizes, self._overlay_alpha(), sorted(self._batch_sizes))
        finally:
            self.warming_up = False
        self._warmed_up = True
        self._handler.warmed_up(sizes, time.monotonic() - started)

    def _remember_size(self, size: tuple[int, int]) -> None:
        self._frame_sizes.pop(size, None)
        self._frame_sizes[size] = None
        while len(self._frame_sizes) > WARM_SIZES_KEPT:
            del self._frame_sizes[next(iter(self._frame_sizes))]

    def _remember_batch(self, batch: int) -> None:
        self._batch_sizes.pop(batch, None)
        self._batch_sizes[batch] = None
        while len(self._batch_sizes) > WARM_BATCHES_KEPT:
            del self._batch_sizes[next(iter(self._batch_sizes))]

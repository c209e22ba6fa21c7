"""One model labelling time ranges of bags: reading and decoding on one thread, the model in batches on the
caller's, building and serializing the outputs on a third, so that decoding and writing run beside the model.

The same ``Labeller`` runs in the local job and in each Ray worker actor; what it produces goes to a ``sink``
(the output bag's writer, or a list returned to the Ray driver) in the bag's time order: at each timestamp the
copied input message, then that frame's outputs.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.errors import InvalidImageError
from zeroseg_ros.core.segmenter import SegmentationResult, Segmenter
from zeroseg_ros.ros.image_codec import compressed_to_segmenter_input, image_to_segmenter_input
from zeroseg_ros.tools.label.bags import COMPRESSED_IMAGE, Camera, InputBag, Record, TimeRange
from zeroseg_ros.tools.label.outputs import OutputSettings, frame_records, labels_record

QUEUED_BATCHES = 2  # batches decoded ahead of the model, and waiting to be written
# Test switch: the path of a marker file; a worker that finds it absent creates it and exits in the middle of a
# range, as a crashed machine would (tests of the Ray job's recovery).
CRASH_ONCE_ENV = "ZEROSEG_LABEL_CRASH_ONCE"


@dataclass(frozen=True)
class LabelSettings:
    """Everything that decides a job's outputs (and, in the manifest, whether a finished bag can be kept)."""

    queries: str
    model: ModelConfig
    segmenter: SegmenterConfig
    outputs: OutputSettings = field(default_factory=OutputSettings)
    image_topics: tuple[str, ...] = ()
    copy: bool = True
    batch_size: int = 8


@dataclass
class RangeSummary:
    """What one range gave: frames labelled, and per image topic the frames skipped with the last reason."""

    frames: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, other: RangeSummary) -> None:
        self.frames += other.frames
        self.skipped.update(other.skipped)
        self.reasons.update(other.reasons)


@dataclass
class _Copy:
    record: Record


@dataclass
class _Frame:
    camera: Camera
    message: Record  # the input image message, copied when the job copies
    header: Any = None
    pixels: np.ndarray | None = None
    order: str = "rgb"
    error: str | None = None
    result: SegmentationResult | None = None


_END = object()


class Labeller:
    """A Segmenter with the job's queries, and the three-stage pipeline that labels one range of a bag."""

    def __init__(self, settings: LabelSettings, progress: Any = None) -> None:
        self.settings = settings
        self.segmenter = Segmenter(settings.model, settings.segmenter, progress=progress)
        self.segmenter.set_queries(settings.queries, progress=progress("text", "prompt") if progress else None)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.segmenter.labels

    def label(
        self,
        bag: InputBag,
        cameras: Sequence[Camera],
        time_range: TimeRange,
        sink: Callable[[Record], None],
        on_frames: Callable[[int], None] = lambda count: None,
    ) -> RangeSummary:
        """Labels ``time_range`` of ``bag``; every record goes to ``sink`` in time order."""
        summary = RangeSummary()
        decoded: queue.Queue = queue.Queue(maxsize=QUEUED_BATCHES * self.settings.batch_size)
        segmented: queue.Queue = queue.Queue(maxsize=QUEUED_BATCHES)
        stop = threading.Event()
        errors: list[BaseException] = []  # the first error of any stage ends all three
        reader = threading.Thread(
            target=_pump, args=(self._read(bag, cameras, time_range), decoded, stop, errors), daemon=True
        )
        writer = threading.Thread(
            target=self._write, args=(segmented, sink, summary, on_frames, stop, errors), daemon=True
        )
        reader.start()
        writer.start()
        crash_marker = os.environ.get(CRASH_ONCE_ENV)
        try:
            if time_range.start is None:
                _put(segmented, [_Copy(labels_record(self.labels, bag.start_time))], stop)
            pending: list[_Copy | _Frame] = []
            frames = 0
            while (item := _get(decoded, stop)) is not None:
                if item is not _END:
                    pending.append(item)
                    frames += isinstance(item, _Frame) and item.error is None
                if frames >= self.settings.batch_size or (item is _END and pending):
                    self._segment([p for p in pending if isinstance(p, _Frame) and p.error is None])
                    _put(segmented, pending, stop)
                    pending, frames = [], 0
                    if crash_marker and not Path(crash_marker).exists():
                        Path(crash_marker).touch()
                        os._exit(1)
                if item is _END:
                    _put(segmented, _END, stop)
                    break
            writer.join()
        except BaseException as error:
            errors.append(error)
        finally:
            stop.set()
        if errors:
            raise errors[0]
        return summary

    def _segment(self, frames: list[_Frame]) -> None:
        """The model's step: one batch of decoded frames (a frame the segmenter refuses is skipped alone)."""
        if not frames:
            return
        alpha = self.settings.outputs.overlay_alpha
        pixels = [frame.pixels for frame in frames]
        orders = ["bgr" if frame.order == "bgr" else "rgb" for frame in frames]
        streams = [frame.camera.image_topic for frame in frames]
        try:
            results = self.segmenter.segment_batch(pixels, orders, alpha, streams)
        except InvalidImageError:
            if len(frames) == 1:
                raise
            for frame in frames:
                try:
                    self._segment([frame])
                except InvalidImageError as error:
                    frame.error = str(error)
            return
        for frame, result in zip(frames, results, strict=True):
            frame.result, frame.pixels = result, None

    def _read(self, bag: InputBag, cameras: Sequence[Camera], time_range: TimeRange) -> Iterator[_Copy | _Frame]:
        by_topic = {camera.image_topic: camera for camera in cameras}
        types = {spec.topic: spec.msgtype for spec in bag.topic_specs()}
        topics = None if self.settings.copy else list(by_topic)
        max_pixels = self.settings.segmenter.max_pixels
        for topic, timestamp, data in bag.messages(time_range, topics):
            record = Record(topic, timestamp, data)
            camera = by_topic.get(topic)
            if camera is None:
                yield _Copy(record)
                continue
            frame = _Frame(camera, record)
            try:
                msg = bag.deserialize(data, types[topic])
                frame.header = msg.header
                if types[topic] == COMPRESSED_IMAGE:
                    frame.pixels, frame.order = compressed_to_segmenter_input(msg, max_pixels)
                else:
                    frame.pixels, frame.order = image_to_segmenter_input(msg, max_pixels)
            except (InvalidImageError, ValueError, AssertionError) as error:  # a frame's bytes that do not parse
                frame.error = str(error) or type(error).__name__
            yield frame

    def _write(
        self,
        segmented: queue.Queue,
        sink: Callable[[Record], None],
        summary: RangeSummary,
        on_frames: Callable[[int], None],
        stop: threading.Event,
        errors: list[BaseException],
    ) -> None:
        outputs = self.settings.outputs
        try:
            while (batch := _get(segmented, stop)) is not None:
                if batch is _END:
                    return
                labelled = 0
                for item in batch:
                    if isinstance(item, _Copy):
                        sink(item.record)
                        continue
                    if self.settings.copy:
                        sink(item.message)
                    if item.result is None:
                        summary.skipped[item.camera.image_topic] += 1
                        summary.reasons[item.camera.image_topic] = item.error or "not decoded"
                        continue
                    for record in frame_records(
                        item.camera, item.header, item.message.timestamp, item.order, item.result, outputs
                    ):
                        sink(record)
                    labelled += 1
                summary.frames += labelled
                on_frames(labelled)
        except BaseException as error:  # raised by the model's thread
            errors.append(error)
            stop.set()


def _put(target: queue.Queue, item: object, stop: threading.Event) -> None:
    """Puts ``item`` unless the other side has stopped (then its error is raised by the caller)."""
    while not stop.is_set():
        try:
            target.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(source: queue.Queue, stop: threading.Event) -> Any:
    """The next item, or None once another stage has stopped the pipeline."""
    while not stop.is_set():
        try:
            return source.get(timeout=0.1)
        except queue.Empty:
            continue
    return None


def _pump(items: Iterator[Any], target: queue.Queue, stop: threading.Event, errors: list[BaseException]) -> None:
    """Moves ``items`` into ``target`` until they end (then ``_END``) or fail (then the pipeline stops)."""
    try:
        for item in items:
            _put(target, item, stop)
            if stop.is_set():
                return
        _put(target, _END, stop)
    except BaseException as error:
        errors.append(error)
        stop.set()

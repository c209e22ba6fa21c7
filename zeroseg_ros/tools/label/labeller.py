"""One model labelling time ranges of bags: reading and decoding on one thread, the model in batches on the
caller's, building and serializing the outputs on a third, so that decoding and writing run beside the model.

A camera with depth gets, for each frame, the depth image of nearest stamp within ``depth_tolerance`` (the node's
rule), searched among the depth images received up to ``DEPTH_WINDOW_NS`` before and after the frame, beyond the
range's ends too: the reader holds messages back for that long, so the output stays in time order.

The same ``Labeller`` runs in the local job and in each Ray worker actor; what it produces goes to a ``sink``
(the output bag's writer, or a list returned to the Ray driver) in the bag's time order: at each timestamp the
copied input message, then that frame's outputs.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.errors import InvalidImageError
from zeroseg_ros.core.geometry import DepthImage, Intrinsics
from zeroseg_ros.core.pairing import StampBuffer, stamp_ns
from zeroseg_ros.core.segmenter import SegmentationResult, Segmenter
from zeroseg_ros.ros.image_codec import compressed_to_segmenter_input, depth_image, image_to_segmenter_input
from zeroseg_ros.tools.label.bags import COMPRESSED_IMAGE, IMAGE, Camera, InputBag, Record, TimeRange
from zeroseg_ros.tools.label.outputs import OutputSettings, frame_records, labels_record

QUEUED_BATCHES = 2  # batches decoded ahead of the model, and waiting to be written
# How far apart in receive time a frame and its depth image may be recorded: drivers publish both within
# milliseconds, but a busy recorder can write one of them late.
DEPTH_WINDOW_NS = 1_000_000_000
# Depth images kept per camera at most (those of 1.5 s at 60 Hz): a bound even when no frame of the camera
# decodes, so that nothing drops the old ones.
DEPTH_IMAGES_KEPT = 96
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
    # (image topic, depth topic) pairs ("" for a bag's only camera); None finds depth beside each camera, () none.
    depth_topics: tuple[tuple[str, str], ...] | None = None
    copy: bool = True
    batch_size: int = 8


@dataclass
class RangeSummary:
    """What one range gave: frames labelled, per image topic the frames skipped with the last reason, and per
    camera with depth the frames labelled without 3-D outputs (no depth paired) with the last reason."""

    frames: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, str] = field(default_factory=dict)
    without_depth: Counter[str] = field(default_factory=Counter)
    depth_reasons: dict[str, str] = field(default_factory=dict)

    def add(self, other: RangeSummary) -> None:
        self.frames += other.frames
        self.skipped.update(other.skipped)
        self.reasons.update(other.reasons)
        self.without_depth.update(other.without_depth)
        self.depth_reasons.update(other.depth_reasons)


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
    depth: tuple[np.ndarray, Intrinsics] | None = None  # metres and their intrinsics, when paired
    depth_problem: str = ""  # why a camera with depth has none for this frame


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
        """Labels ``time_range`` of ``bag``; every record goes to ``sink`` in time order. Temporal smoothing starts
        anew (with smoothing, ``plan_bag`` makes a bag one range)."""
        self.segmenter.restart_smoothing()
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
        """The range's messages in time order, frames decoded and paired with depth. With depth, messages up to
        ``DEPTH_WINDOW_NS`` beyond the range's ends are read for their depth images only."""
        by_topic = {camera.image_topic: camera for camera in cameras}
        by_depth = {camera.depth.depth_topic: camera for camera in cameras if camera.depth is not None}
        depth_images: dict[str, StampBuffer[DepthImage]] = {topic: StampBuffer(DEPTH_IMAGES_KEPT) for topic in by_depth}
        depth_problems: dict[str, str] = {}
        types = {spec.topic: spec.msgtype for spec in bag.topic_specs()}
        topics = None if self.settings.copy else [*by_topic, *by_depth]
        margin = DEPTH_WINDOW_NS if by_depth else 0
        start, stop = time_range.start, time_range.stop
        read = TimeRange(
            time_range.index,
            None if start is None else start - margin,
            None if stop is None else stop + margin,
            time_range.frames,
        )
        held: deque[_Copy | _Frame] = deque()  # read, waiting for depth images recorded up to the window after
        for topic, timestamp, data in bag.messages(read, topics):
            inside = (start is None or timestamp >= start) and (stop is None or timestamp < stop)
            record = Record(topic, timestamp, data)
            if topic in by_depth:
                self._add_depth(bag, record, depth_images[topic], depth_problems)
            if inside:
                camera = by_topic.get(topic)
                held.append(_Copy(record) if camera is None else self._decode(bag, camera, record, types[topic]))
            while held and _timestamp(held[0]) + margin <= timestamp:
                yield self._paired(held.popleft(), depth_images, depth_problems)
        while held:
            yield self._paired(held.popleft(), depth_images, depth_problems)

    def _decode(self, bag: InputBag, camera: Camera, record: Record, msgtype: str) -> _Frame:
        frame = _Frame(camera, record)
        max_pixels = self.settings.segmenter.max_pixels
        try:
            msg = bag.deserialize(record.data, msgtype)
            frame.header = msg.header
            if msgtype == COMPRESSED_IMAGE:
                frame.pixels, frame.order = compressed_to_segmenter_input(msg, max_pixels)
            else:
                frame.pixels, frame.order = image_to_segmenter_input(msg, max_pixels)
        except (InvalidImageError, ValueError, AssertionError) as error:  # a frame's bytes that do not parse
            frame.error = str(error) or type(error).__name__
        return frame

    def _add_depth(
        self, bag: InputBag, record: Record, images: StampBuffer[DepthImage], problems: dict[str, str]
    ) -> None:
        """Keeps a depth image for pairing (a refused one is remembered as the reason its frames lack depth)."""
        try:
            msg = bag.deserialize(record.data, IMAGE)
            depth = depth_image(msg, self.settings.segmenter.max_pixels)
        except (InvalidImageError, ValueError, AssertionError) as error:
            problems[record.topic] = f"depth image on {record.topic} refused: {error}"
            return
        images.add(stamp_ns(msg.header), depth)

    def _paired(
        self, item: _Copy | _Frame, depth_images: dict[str, StampBuffer[DepthImage]], problems: dict[str, str]
    ) -> _Copy | _Frame:
        """A frame of a camera with depth gets its depth image (or the reason it has none); depth images too old
        for any later frame are dropped."""
        source = item.camera.depth if isinstance(item, _Frame) else None
        if not isinstance(item, _Frame) or source is None or item.pixels is None:
            return item
        images = depth_images[source.depth_topic]
        stamp = stamp_ns(item.header)
        tolerance_ns = int(self.settings.outputs.depth_tolerance * 1e9)
        match = images.nearest(stamp, tolerance_ns)
        images.drop_older_than(stamp - DEPTH_WINDOW_NS)
        if match.item is None:
            item.depth_problem = problems.get(source.depth_topic) or (
                f"no depth image on {source.depth_topic} within {tolerance_ns / 1e9:g} s of the frame's stamp"
            )
            return item
        calibration = source.calibration_at(item.message.timestamp)
        try:
            item.depth = match.item.registered(
                calibration.k, calibration.width, calibration.height, item.pixels.shape[:2]
            )
        except InvalidImageError as error:
            item.depth_problem = f"depth image on {source.depth_topic} refused: {error}"
        return item

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
                    if item.depth_problem:
                        summary.without_depth[item.camera.image_topic] += 1
                        summary.depth_reasons[item.camera.image_topic] = item.depth_problem
                    for record in frame_records(
                        item.camera, item.header, item.message.timestamp, item.order, item.result, outputs, item.depth
                    ):
                        sink(record)
                    labelled += 1
                summary.frames += labelled
                on_frames(labelled)
        except BaseException as error:  # raised by the model's thread
            errors.append(error)
            stop.set()


def _timestamp(item: _Copy | _Frame) -> int:
    return item.record.timestamp if isinstance(item, _Copy) else item.message.timestamp


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

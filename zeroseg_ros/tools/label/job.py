"""A labelling job over several bags: which bags to do (the manifest), each bag's plan (cameras, topics, time
ranges), one output bag per input, and the summary. The labelling itself runs here (one local model) or on a
Ray cluster (``ray_job``); both write through ``BagOutput`` and report into ``JobSummary``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zeroseg_ros.core.errors import ZerosegError
from zeroseg_ros.tools.label.bags import (
    BagError,
    Camera,
    InputBag,
    OutputBag,
    Record,
    TimeRange,
    TopicSpec,
    time_ranges,
)
from zeroseg_ros.tools.label.labeller import Labeller, LabelSettings, RangeSummary
from zeroseg_ros.tools.label.manifest import Manifest
from zeroseg_ros.tools.label.outputs import LABELS_TOPIC, STRING, output_specs

LOGGER = logging.getLogger("zeroseg")
BAG_SUFFIXES = (".mcap", ".db3")


@dataclass(frozen=True)
class BagPlan:
    """What labelling one input bag takes: its cameras, the topics of its output bag, and its time ranges."""

    source: Path
    name: str
    cameras: tuple[Camera, ...]
    topics: tuple[TopicSpec, ...]
    ranges: tuple[TimeRange, ...]

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.ranges)


@dataclass
class JobSummary:
    finished: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # finished by an earlier run of the same job
    failed: dict[str, str] = field(default_factory=dict)  # bag -> what is wrong
    frames: RangeSummary = field(default_factory=RangeSummary)
    seconds: float = 0.0  # labelling, from the first range to the last write (model loading not counted)

    def lines(self) -> list[str]:
        rate = f" in {self.seconds:.1f} s ({self.frames.frames / self.seconds:.2f} frames/s)" if self.seconds else ""
        lines = [
            f"labelled {self.frames.frames} frames{rate}: {len(self.finished)} bags written"
            + (f", {len(self.kept)} already finished" if self.kept else "")
            + (f", {len(self.failed)} failed" if self.failed else "")
        ]
        for topic, count in sorted(self.frames.skipped.items()):
            reason = self.frames.reasons[topic]
            lines.append(f"  skipped {count} frames of {topic} that could not be decoded ({reason})")
        for topic, count in sorted(self.frames.without_depth.items()):
            reason = self.frames.depth_reasons[topic]
            lines.append(f"  {count} frames of {topic} have no points or 3-D objects ({reason})")
        for bag, reason in self.failed.items():
            lines.append(f"  FAILED {bag}: {reason}")
        return lines


def output_name(source: Path) -> str:
    """The output bag's name: the input bag folder's name, or a bag file's name without its suffix."""
    return source.stem if source.suffix in BAG_SUFFIXES else source.name


def plan_bag(source: Path, settings: LabelSettings, frames_per_range: int) -> BagPlan:
    """Opens ``source`` and plans it (raises BagError for a bag that cannot be opened or read, or has no camera)."""
    with InputBag(source) as bag:
        depth_topics = dict(settings.depth_topics) if settings.depth_topics is not None else None
        survey = bag.survey(settings.image_topics, depth_topics)
        cameras = survey.cameras
        if not cameras:
            raise BagError(f"{source}: no sensor_msgs/Image or CompressedImage topic (give --image-topics?)")
        topics: list[TopicSpec] = bag.topic_specs() if settings.copy else []
        if not settings.copy:
            kept = {camera.image_topic for camera in cameras}
            topics = [spec for spec in bag.topic_specs() if spec.topic in kept]
        topics.append(TopicSpec(LABELS_TOPIC, STRING))
        for camera in cameras:
            topics.extend(output_specs(camera, settings.outputs))
    if settings.segmenter.temporal_smoothing > 0:
        # Each camera's average runs from frame to frame: the bag is one range, labelled in order by one model.
        frames_per_range = max(1, len(survey.frame_stamps))
    ranges = time_ranges(survey.frame_stamps, frames_per_range)
    return BagPlan(source, output_name(source), cameras, tuple(topics), tuple(ranges))


class BagOutput:
    """The output bag of one plan while it is written (in ``NAME.partial/``), and its end: finished (renamed and
    listed in the manifest) or abandoned (removed)."""

    def __init__(self, plan: BagPlan, manifest: Manifest) -> None:
        self.plan = plan
        self._manifest = manifest
        with InputBag(plan.source) as bag:
            typestore = bag.typestore
        self._bag = OutputBag(manifest.start(plan.name), plan.topics, typestore)
        self.summary = RangeSummary()

    def write(self, record: Record) -> None:
        self._bag.write(record)

    def finish(self) -> None:
        self._bag.close()
        details = {
            "frames": self.summary.frames,
            "skipped_frames": dict(self.summary.skipped),
            "frames_without_depth": dict(self.summary.without_depth),
        }
        self._manifest.finish(self.plan.name, self.plan.source, details)

    def abandon(self) -> None:
        try:
            self._bag.close()
        finally:
            self._manifest.abandon(self.plan.name)


def prepare(
    sources: Sequence[Path], out: Path, settings: LabelSettings, overwrite: bool, frames_per_range: int
) -> tuple[Manifest, list[BagPlan], JobSummary]:
    """The manifest, the plans of the bags left to do, and a summary holding those already finished or failing."""
    names = [output_name(source) for source in sources]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ZerosegError(f"several input bags would be written as {', '.join(twice)}: rename one of them")
    manifest = Manifest(out, settings, overwrite)
    summary = JobSummary()
    plans = []
    for source, name in zip(sources, names, strict=True):
        if manifest.finished(name, source):
            summary.kept.append(name)
            continue
        try:
            plans.append(plan_bag(source, settings, frames_per_range))
        except BagError as error:
            LOGGER.error("%s", error)
            summary.failed[str(source)] = str(error).removeprefix(f"{source}: ")
    return manifest, plans, summary


def label_locally(
    plans: Sequence[BagPlan],
    manifest: Manifest,
    settings: LabelSettings,
    summary: JobSummary,
    on_frames: Callable[[int], None],
    labeller: Labeller,
) -> None:
    """Labels each planned bag with one model in this process, a bag at a time."""
    started = time.monotonic()
    for plan in plans:
        output = BagOutput(plan, manifest)
        try:
            with InputBag(plan.source) as bag:
                whole = TimeRange(0, None, None, plan.frames)
                output.summary = labeller.label(bag, plan.cameras, whole, output.write, on_frames)
        except BagError as error:
            output.abandon()
            LOGGER.error("%s", error)
            summary.failed[str(plan.source)] = str(error).removeprefix(f"{plan.source}: ")
            continue
        except BaseException:
            output.abandon()
            raise
        output.finish()
        summary.finished.append(plan.name)
        summary.frames.add(output.summary)
        summary.seconds = time.monotonic() - started

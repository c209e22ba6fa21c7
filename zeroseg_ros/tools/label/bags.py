"""rosbag2 bags (MCAP and sqlite3) through ``rosbags``, without a ROS install: opening an input bag, finding its
cameras, splitting it into time ranges, reading a range, and writing the output bag.

A camera is an image topic (``sensor_msgs/Image`` or ``CompressedImage``) and its namespace, the topic's parent
(``/front/image_raw`` -> ``/front``; ``/rear/image_raw/compressed`` -> ``/rear``), under which the outputs go
(``/front/zeroseg/mask``). A camera has depth when the bag holds a depth image topic registered to it (given, or
found in its namespace under one of ``DEPTH_NAMES``) and its camera_info (``NS/camera_info``). Messages are read
and written as CDR bytes, so copied topics keep their exact contents and definitions.
"""

from __future__ import annotations

import logging
import os
import sys
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

from zeroseg_ros.core.errors import ZerosegError

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
# Depth topics looked for in a camera's namespace, in this order: the node's own name, then those of common
# drivers (depth_image_proc, RealSense, ZED, OAK).
DEPTH_NAMES = (
    "depth",
    "depth/image_raw",
    "depth/image_rect_raw",
    "depth/image_rect",
    "depth_registered/image_raw",
    "depth_registered/image_rect",
)
CAMERA_INFO_NAME = "camera_info"
OUTPUT_NAMESPACE = "zeroseg"
MSG_PACKAGE = "zeroseg_ros"
LOGGER = logging.getLogger("zeroseg")


class BagError(ZerosegError):
    """A bag that cannot be opened or read (missing, truncated, not a rosbag2 bag)."""


@dataclass(frozen=True)
class TopicSpec:
    """What an output bag needs to add a topic: its type and, for copied topics, the input's definition."""

    topic: str
    msgtype: str
    msgdef: str | None = None
    rihs01: str | None = None


@dataclass(frozen=True)
class Calibration:
    """A camera_info's intrinsics, from the receive time it was first seen until the next change."""

    timestamp: int
    k: tuple[float, ...]
    width: int
    height: int


@dataclass(frozen=True)
class DepthSource:
    """A camera's depth images, and its camera_info's calibrations in time order (each change once)."""

    depth_topic: str
    camera_info_topic: str
    calibrations: tuple[Calibration, ...]

    def calibration_at(self, timestamp: int) -> Calibration:
        """The calibration in force at ``timestamp``: the last one seen by then, else the bag's first."""
        current = self.calibrations[0]
        for calibration in self.calibrations:
            if calibration.timestamp > timestamp:
                break
            current = calibration
        return current


@dataclass(frozen=True)
class Camera:
    image_topic: str
    namespace: str
    depth: DepthSource | None = None

    def output(self, name: str) -> str:
        """The topic of output ``name`` for this camera: ``NS/zeroseg/name``."""
        return f"{self.namespace.rstrip('/')}/{OUTPUT_NAMESPACE}/{name}"


@dataclass(frozen=True)
class Record:
    """One message to write: CDR bytes on ``topic`` at ``timestamp`` (ns, the bag's receive time)."""

    topic: str
    timestamp: int
    data: bytes


@dataclass(frozen=True)
class TimeRange:
    """Messages with ``start <= timestamp < stop``; None leaves that side open (the bag's first and last range)."""

    index: int
    start: int | None
    stop: int | None
    frames: int


@dataclass(frozen=True)
class BagSurvey:
    """A bag's cameras and the receive times (ns, sorted) of all their frames."""

    cameras: tuple[Camera, ...]
    frame_stamps: tuple[int, ...]


def camera_namespace(topic: str, msgtype: str) -> str:
    path = PurePosixPath(topic)
    if msgtype == COMPRESSED_IMAGE and path.name == "compressed":
        path = path.parent
    return str(path.parent)


def _msg_folders() -> list[Path]:
    """Where zeroseg_ros's .msg files are: the source tree's msg/, or an installed package's share/."""
    folders = [Path(__file__).resolve().parents[3] / "msg", Path(sys.prefix) / "share" / MSG_PACKAGE / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            folders.append(Path(prefix) / "share" / MSG_PACKAGE / "msg")
    return [folder for folder in folders if (folder / "Segmentation.msg").is_file()]


@cache
def output_typestore() -> Any:
    """ROS 2 Jazzy's message types with zeroseg_ros/msg/* registered from their .msg definitions."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    folders = _msg_folders()
    if not folders:
        raise ZerosegError("zeroseg_ros's msg/ folder (Segmentation.msg) was not found beside the package")
    store = get_typestore(Stores.ROS2_JAZZY)
    types: dict[str, Any] = {}
    for path in sorted(folders[0].glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{MSG_PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


class InputBag:
    """An open rosbag2 bag (a bag folder, or one .mcap / .db3 file): its topics, cameras and messages."""

    def __init__(self, path: Path) -> None:
        from rosbags.highlevel import AnyReader

        self.path = path
        if not path.exists():
            raise BagError(f"{path}: no such bag")
        try:
            self._reader = AnyReader([path])
            self._reader.open()
        except Exception as error:  # rosbags raises its own errors, sqlite3's and OSError for broken files
            raise BagError(f"{path}: cannot be opened as a rosbag2 bag ({_reason(error)})") from error
        self.connections = list(self._reader.connections)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> InputBag:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def start_time(self) -> int:
        """The timestamp (ns) of the bag's first message."""
        return int(self._reader.start_time)

    @property
    def typestore(self) -> Any:
        return self._reader.typestore

    def topic_specs(self) -> list[TopicSpec]:
        """Every topic of the bag, with its type's definition as stored (one per topic)."""
        specs: dict[str, TopicSpec] = {}
        for connection in self.connections:
            msgdef = connection.msgdef.data if connection.msgdef is not None else None
            specs.setdefault(
                connection.topic, TopicSpec(connection.topic, connection.msgtype, msgdef or None, connection.digest)
            )
        return list(specs.values())

    def survey(self, image_topics: Sequence[str] = (), depth_topics: Mapping[str, str] | None = None) -> BagSurvey:
        """The cameras and the receive times of their frames, in one read of their frames and camera_info.

        The cameras are every image topic but the depth topics found or given, or those named (each must be an
        image topic of this bag). ``depth_topics`` maps an image topic to its depth topic ("" for a bag's only
        camera); None looks for depth in each camera's namespace; an empty mapping gives no camera depth."""
        types = {c.topic: c.msgtype for c in self.connections}
        chosen = self._camera_depth_topics(image_topics, depth_topics, types)
        namespaces = {topic: camera_namespace(topic, types[topic]) for topic in chosen}
        info_topics = {
            topic: str(PurePosixPath(namespaces[topic]) / CAMERA_INFO_NAME) for topic, depth in chosen.items() if depth
        }
        read_infos = {info for info in info_topics.values() if types.get(info) == CAMERA_INFO}
        stamps: list[int] = []
        changes: dict[str, list[Calibration]] = {info: [] for info in read_infos}
        wanted = [c for c in self.connections if c.topic in chosen or c.topic in read_infos]
        for connection, timestamp, data in self._messages(wanted):
            if connection.topic in chosen:
                stamps.append(int(timestamp))
            else:  # camera_info is small and rarely changes: each change is kept once
                _add_calibration(changes[connection.topic], int(timestamp), self.deserialize(data, CAMERA_INFO))
        cameras = []
        for topic, depth_topic in chosen.items():
            depth = None
            if depth_topic:
                info = info_topics[topic]
                depth = self._depth_source(topic, depth_topic, info, changes.get(info), given=depth_topics is not None)
            cameras.append(Camera(topic, namespaces[topic], depth))
        return BagSurvey(tuple(cameras), tuple(sorted(stamps)))

    def _camera_depth_topics(
        self, image_topics: Sequence[str], depth_topics: Mapping[str, str] | None, types: Mapping[str, str]
    ) -> dict[str, str | None]:
        """Each camera's image topic and its depth topic (None without), in camera order; raises BagError for
        named topics the bag lacks."""
        named = dict(depth_topics or {})
        # Each image topic's depth topic found in its namespace, looked up once.
        beside = {t: self._depth_beside(t, types) for t, m in types.items() if m in IMAGE_TYPES}
        if image_topics:
            wrong = [t for t in image_topics if types.get(t) not in IMAGE_TYPES]
            if wrong:
                raise BagError(f"{self.path}: not image topics of this bag: {', '.join(wrong)} ({self._images()})")
            topics = list(image_topics)
        else:
            # Depth images are no camera: those given, and those a camera has beside it (even when not used).
            depth_names = {t for t in beside.values() if t} | set(named.values())
            topics = sorted(t for t, m in types.items() if m in IMAGE_TYPES and t not in depth_names)
        if "" in named:
            if len(topics) != 1:
                raise BagError(
                    f"{self.path}: --depth-topic {named['']} names no camera, and the bag has {len(topics)} "
                    f"({', '.join(topics)}): give it as IMAGE_TOPIC=DEPTH_TOPIC"
                )
            named[topics[0]] = named.pop("")
        unknown = sorted(set(named) - set(topics))
        if unknown:
            raise BagError(f"{self.path}: --depth-topic for topics that are no camera here: {', '.join(unknown)}")
        chosen = {topic: named.get(topic) if depth_topics is not None else beside[topic] for topic in topics}
        for depth_topic in chosen.values():
            if depth_topic and types.get(depth_topic) != IMAGE:
                raise BagError(f"{self.path}: depth topic {depth_topic} is not a sensor_msgs/Image topic of this bag")
        return chosen

    def _images(self) -> str:
        topics = sorted(c.topic for c in self.connections if c.msgtype in IMAGE_TYPES)
        return "image topics: " + (", ".join(topics) or "none")

    def _depth_beside(self, image_topic: str, types: Mapping[str, str]) -> str | None:
        namespace = PurePosixPath(camera_namespace(image_topic, types[image_topic]))
        for name in DEPTH_NAMES:
            topic = str(namespace / name)
            if topic != image_topic and types.get(topic) == IMAGE:
                return topic
        return None

    def _depth_source(
        self, image_topic: str, depth_topic: str, info_topic: str, calibrations: list[Calibration] | None, given: bool
    ) -> DepthSource | None:
        """The camera's depth with its calibrations; None without camera_info (an error for a given depth topic,
        only a warning for one found)."""
        if not calibrations:
            problem = f"{self.path}: {image_topic} has depth ({depth_topic}) but no camera_info on {info_topic}"
            if given:
                raise BagError(problem)
            LOGGER.warning("%s: no points or 3-D objects for this camera", problem)
            return None
        return DepthSource(depth_topic, info_topic, tuple(calibrations))

    def messages(self, time_range: TimeRange, topics: Sequence[str] | None = None) -> Iterator[tuple[str, int, bytes]]:
        """(topic, timestamp, CDR bytes) of the range, in time order; all topics, or ``topics``."""
        wanted = self.connections if topics is None else [c for c in self.connections if c.topic in set(topics)]
        for connection, timestamp, data in self._messages(wanted, time_range.start, time_range.stop):
            yield connection.topic, timestamp, data

    def _messages(self, connections: Sequence[Any], start: int | None = None, stop: int | None = None) -> Iterator:
        if not connections:
            return
        try:
            yield from self._reader.messages(connections=connections, start=start, stop=stop)
        except Exception as error:  # a truncated file shows only once its broken part is read
            raise BagError(f"{self.path}: cannot be read ({_reason(error)})") from error

    def deserialize(self, data: bytes, msgtype: str) -> Any:
        return self._reader.deserialize(data, msgtype)


def time_ranges(stamps: Sequence[int], frames_per_range: int) -> list[TimeRange]:
    """Frames received at ``stamps`` (sorted) cut into consecutive ranges of about ``frames_per_range`` each;
    together the ranges cover every message (the first and last are open), and equal timestamps never straddle
    a cut."""
    cuts: list[int] = []
    count = 0
    for index, stamp in enumerate(stamps):
        if count >= frames_per_range and stamp != stamps[index - 1]:
            cuts.append(stamp)
            count = 0
        count += 1
    bounds = [None, *cuts, None]
    firsts = [0, *(bisect_left(stamps, cut) for cut in cuts), len(stamps)]  # each range's first frame
    return [
        TimeRange(index, bounds[index], bounds[index + 1], firsts[index + 1] - firsts[index])
        for index in range(len(bounds) - 1)
    ]


def _add_calibration(changes: list[Calibration], timestamp: int, msg: Any) -> None:
    """Appends ``msg``'s calibration unless it equals the last one."""
    k, width, height = tuple(float(v) for v in msg.k), int(msg.width), int(msg.height)
    if not changes or (changes[-1].k, changes[-1].width, changes[-1].height) != (k, width, height):
        changes.append(Calibration(timestamp, k, width, height))


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


class OutputBag:
    """An MCAP rosbag2 bag written at ``path``: topics are added on their first message."""

    def __init__(self, path: Path, specs: Sequence[TopicSpec], input_typestore: Any) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self._specs = {spec.topic: spec for spec in specs}
        self._input_typestore = input_typestore
        self._writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.messages = 0

    def write(self, record: Record) -> None:
        connection = self._connections.get(record.topic)
        if connection is None:
            spec = self._specs[record.topic]
            if spec.msgdef and spec.rihs01:
                connection = self._writer.add_connection(
                    spec.topic, spec.msgtype, msgdef=spec.msgdef, rihs01=spec.rihs01
                )
            else:
                ours = output_typestore()
                store = ours if spec.msgtype in ours.fielddefs else self._input_typestore
                connection = self._writer.add_connection(spec.topic, spec.msgtype, typestore=store)
            self._connections[record.topic] = connection
        self._writer.write(connection, record.timestamp, record.data)
        self.messages += 1

    def close(self) -> None:
        self._writer.close()

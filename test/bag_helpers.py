"""Helpers of the labelling tests: small rosbag2 bags written with rosbags (a raw camera, a compressed camera and
a non-image topic), the settings of a fast labelling job, and reading an output bag back."""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("rosbags", reason="rosbags not installed: pip install -r requirements/label.txt")

from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.tools.label.labeller import LabelSettings
from zeroseg_ros.tools.label.outputs import OutputSettings

STORE = get_typestore(Stores.ROS2_JAZZY)
RAW_TOPIC, COMPRESSED_TOPIC, OTHER_TOPIC = "/front/image_raw", "/rear/image_raw/compressed", "/chatter"
FRAME_PERIOD_NS = 100_000_000
FIRST_STAMP_NS = 1_000_000_000


def make_frame(height: int, width: int, seed: int) -> np.ndarray:
    """An RGB frame with two coloured blocks and noise."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    image[: height // 2, : width // 2] += np.array([180, 20, 20], dtype=np.uint8)
    image[height // 2 :, width // 2 :] += np.array([20, 180, 20], dtype=np.uint8)
    return image


def _header(stamp_ns: int, frame_id: str) -> Any:
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    time = STORE.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    return STORE.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def raw_image(pixels: np.ndarray, stamp_ns: int, encoding: str = "rgb8", frame_id: str = "front") -> Any:
    height, width = pixels.shape[:2]
    return STORE.types["sensor_msgs/msg/Image"](
        header=_header(stamp_ns, frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=pixels.strides[0],
        data=np.ascontiguousarray(pixels).reshape(-1).view(np.uint8),
    )


def make_bag(
    path: Path,
    frames: int = 6,
    storage: str = "mcap",
    size: tuple[int, int] = (48, 64),
    compressed: bool = True,
    bad_frames: tuple[int, ...] = (),
) -> Path:
    """A bag of ``frames`` raw rgb8 frames on RAW_TOPIC (received 5 ms after their stamp), as many JPEG frames on
    COMPRESSED_TOPIC and strings on OTHER_TOPIC; the raw frames at ``bad_frames`` have a wrong data length."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        raw = writer.add_connection(RAW_TOPIC, "sensor_msgs/msg/Image", typestore=STORE)
        jpeg = writer.add_connection(COMPRESSED_TOPIC, "sensor_msgs/msg/CompressedImage", typestore=STORE)
        other = writer.add_connection(OTHER_TOPIC, "std_msgs/msg/String", typestore=STORE)
        for index in range(frames):
            stamp = FIRST_STAMP_NS + index * FRAME_PERIOD_NS
            pixels = make_frame(*size, seed=index)
            text = STORE.types["std_msgs/msg/String"](data=f"message {index}")
            writer.write(other, stamp + 1_000_000, STORE.serialize_cdr(text, "std_msgs/msg/String"))
            image = raw_image(pixels, stamp)
            if index in bad_frames:
                image.data = image.data[:-7]
            writer.write(raw, stamp + 5_000_000, STORE.serialize_cdr(image, "sensor_msgs/msg/Image"))
            if compressed:
                data = cv2.imencode(".jpg", pixels[:, :, ::-1])[1].reshape(-1)
                msg = STORE.types["sensor_msgs/msg/CompressedImage"](
                    header=_header(stamp, "rear"), format="jpeg", data=data
                )
                writer.write(jpeg, stamp + 7_000_000, STORE.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
    return path


def save_random_checkpoint(path: Path, model: str = "ViT-S-16") -> Path:
    """A random open_clip model's weights saved as a checkpoint: every process that loads it has the same."""
    import open_clip

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = open_clip.create_model(model, pretrained=None)
    torch.save(clip.state_dict(), path)
    return path


def fast_settings(checkpoint: Path, **changes: Any) -> LabelSettings:
    """A small model on 64-pixel inputs, no templates, no background words (random weights mean nothing to them)."""
    model = ModelConfig(name="ViT-S-16", checkpoint=str(checkpoint), device="cpu", precision="fp32", quick_gelu=False)
    settings = LabelSettings(
        queries="cat, dog, tree",
        model=model,
        segmenter=SegmenterConfig(templates="none", background_words=(), short_side=64),
        outputs=OutputSettings(),
        batch_size=4,
    )
    return replace(settings, **changes)


def read_bag(path: Path) -> tuple[list[tuple[str, int, Any]], dict[str, str]]:
    """Every message of a bag, deserialized, in order, and each topic's type."""
    with AnyReader([path]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        messages = [(c.topic, t, reader.deserialize(d, c.msgtype)) for c, t, d in reader.messages()]
    return messages, types


def by_topic(messages: list[tuple[str, int, Any]]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = defaultdict(list)
    for topic, _, msg in messages:
        grouped[topic].append(msg)
    return grouped


DEPTH_TOPIC, CAMERA_INFO_TOPIC = "/front/depth", "/front/camera_info"
FOCAL = 60.0


def camera_info(stamp_ns: int, height: int, width: int) -> Any:
    """A pinhole camera_info of the colour camera: focal length FOCAL, principal point in the image's centre."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return STORE.types["sensor_msgs/msg/CameraInfo"](
        header=_header(stamp_ns, "front"),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.array([FOCAL, 0.0, cx, 0.0, FOCAL, cy, 0.0, 0.0, 1.0]),
        r=np.eye(3).reshape(-1),
        p=np.array([FOCAL, 0.0, cx, 0.0, 0.0, FOCAL, cy, 0.0, 0.0, 0.0, 1.0, 0.0]),
        binning_x=0,
        binning_y=0,
        roi=STORE.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


def depth_millimetres(height: int, width: int, index: int) -> np.ndarray:
    """A wall at 2 m + 10 mm per frame, a box 0.5 m nearer in its middle, and no depth (0) in the top rows."""
    depth = np.full((height, width), 2000 + 10 * index, dtype=np.uint16)
    depth[height // 4 : height * 3 // 4, width // 4 : width // 2] -= 500
    depth[: height // 8] = 0
    return depth


def make_depth_bag(
    path: Path,
    frames: int = 6,
    size: tuple[int, int] = (48, 64),
    depth_size: tuple[int, int] | None = None,
    depth_delay_ns: int = 4_000_000,
    depth_encoding: str = "16UC1",
    without_depth: tuple[int, ...] = (),
    depth_topic: str = DEPTH_TOPIC,
    with_camera_info: bool = True,
) -> Path:
    """A bag of ``frames`` raw rgb8 frames on RAW_TOPIC (received 5 ms after their stamp), each with a depth image
    of the same stamp on ``depth_topic`` received ``depth_delay_ns`` after it (none for ``without_depth``), and
    camera_info on CAMERA_INFO_TOPIC (received 1 ms after the stamp)."""
    depth_height, depth_width = depth_size or size
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        raw = writer.add_connection(RAW_TOPIC, "sensor_msgs/msg/Image", typestore=STORE)
        depth = writer.add_connection(depth_topic, "sensor_msgs/msg/Image", typestore=STORE)
        info = writer.add_connection(CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo", typestore=STORE)
        messages = []  # (receive time, connection, CDR bytes), written in time order
        for index in range(frames):
            stamp = FIRST_STAMP_NS + index * FRAME_PERIOD_NS
            if with_camera_info:
                message = STORE.serialize_cdr(camera_info(stamp, *size), "sensor_msgs/msg/CameraInfo")
                messages.append((stamp + 1_000_000, info, message))
            image = raw_image(make_frame(*size, seed=index), stamp)
            messages.append((stamp + 5_000_000, raw, STORE.serialize_cdr(image, "sensor_msgs/msg/Image")))
            if index in without_depth:
                continue
            pixels = depth_millimetres(depth_height, depth_width, index)
            if depth_encoding == "mono8":
                pixels = (pixels // 16).astype(np.uint8)
            depth_msg = raw_image(pixels, stamp, encoding=depth_encoding)
            message = STORE.serialize_cdr(depth_msg, "sensor_msgs/msg/Image")
            messages.append((stamp + 5_000_000 + depth_delay_ns, depth, message))
        for timestamp, connection, message in sorted(messages, key=lambda m: m[0]):
            writer.write(connection, timestamp, message)
    return path

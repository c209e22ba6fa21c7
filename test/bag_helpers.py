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

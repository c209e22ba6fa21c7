"""The node's outputs of one segmented frame as rosbags messages (CDR bytes), with the same contents the live node
publishes for the same frame and settings: ``mask`` (mono8/mono16 label ids), ``mask_color`` (the overlay's
palette, rgb8), ``confidence`` (32FC1, optional), ``overlay/compressed`` (JPEG of the overlay with its legend),
``segmentation`` (zeroseg_ros/msg/Segmentation) and ``objects`` (zeroseg_ros/msg/SegmentedObjects).

Every output carries the input frame's header and is written at the frame's receive time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zeroseg_ros.core.objects import SegmentedRegion, find_objects
from zeroseg_ros.core.overlay import draw_palette_legend, palette
from zeroseg_ros.core.segmenter import SegmentationResult
from zeroseg_ros.ros.image_codec import image_fields, mask_encoding, overlay_jpeg
from zeroseg_ros.tools.label.bags import COMPRESSED_IMAGE, IMAGE, Camera, Record, TopicSpec, output_typestore

LABELS_TOPIC = "/zeroseg/labels"
STRING = "std_msgs/msg/String"
SEGMENTATION = "zeroseg_ros/msg/Segmentation"
SEGMENTED_OBJECTS = "zeroseg_ros/msg/SegmentedObjects"


@dataclass(frozen=True)
class OutputSettings:
    """Which outputs are written, and how they are drawn (the node's parameters of the same names)."""

    confidence: bool = False
    overlay_alpha: float = 0.5
    overlay_legend: bool = True
    min_object_pixels: int = 100


def output_specs(camera: Camera, settings: OutputSettings) -> list[TopicSpec]:
    """The topics a camera's outputs are written on."""
    names = {
        "mask": IMAGE,
        "mask_color": IMAGE,
        "overlay/compressed": COMPRESSED_IMAGE,
        "segmentation": SEGMENTATION,
        "objects": SEGMENTED_OBJECTS,
    }
    if settings.confidence:
        names["confidence"] = IMAGE
    return [TopicSpec(camera.output(name), msgtype) for name, msgtype in names.items()]


def labels_record(labels: Sequence[str], timestamp: int) -> Record:
    """``/zeroseg/labels``: the labels in mask order (mask value i is the i-th), as the node's ``labels``."""
    store = output_typestore()
    msg = store.types[STRING](data=", ".join(labels))
    return Record(LABELS_TOPIC, timestamp, bytes(store.serialize_cdr(msg, STRING)))


def _image(header: Any, pixels: np.ndarray, encoding: str) -> Any:
    fields = image_fields(pixels, encoding)
    fields["data"] = np.frombuffer(fields["data"], dtype=np.uint8)
    return output_typestore().types[IMAGE](header=header, **fields)


def frame_records(
    camera: Camera, header: Any, timestamp: int, order: str, result: SegmentationResult, settings: OutputSettings
) -> list[Record]:
    """The camera's outputs of one frame, serialized."""
    store = output_typestore()
    types = store.types
    mask = _image(header, result.label_map, mask_encoding(result.label_map))
    messages: list[tuple[str, str, Any]] = [("mask", IMAGE, mask)]
    colours = palette(len(result.labels))[result.label_map]
    messages.append(("mask_color", IMAGE, _image(header, colours, "rgb8")))
    if settings.confidence:
        messages.append(("confidence", IMAGE, _image(header, result.confidence, "32FC1")))
    if result.overlay is not None:
        if settings.overlay_legend and result.labels:  # as the node draws it
            draw_palette_legend(result.overlay, result.labels, result.areas, order)
        jpeg, format_ = overlay_jpeg(result.overlay, order)
        compressed = types[COMPRESSED_IMAGE](header=header, format=format_, data=np.frombuffer(jpeg, dtype=np.uint8))
        messages.append(("overlay/compressed", COMPRESSED_IMAGE, compressed))
    segmentation = types[SEGMENTATION](
        header=header,
        labels=list(result.labels),
        label_ids=np.arange(1, len(result.labels) + 1, dtype=np.uint16),
        scores=np.asarray(result.scores, dtype=np.float32),
        areas=np.asarray(result.areas, dtype=np.uint32),
        mask=mask,
    )
    messages.append(("segmentation", SEGMENTATION, segmentation))
    regions = find_objects(result.label_map, result.confidence, settings.min_object_pixels, None, None, 1)
    messages.append(("objects", SEGMENTED_OBJECTS, _objects(header, regions, result.labels)))
    return [
        Record(camera.output(name), timestamp, bytes(store.serialize_cdr(msg, msgtype)))
        for name, msgtype, msg in messages
    ]


def _objects(header: Any, regions: Sequence[SegmentedRegion], labels: Sequence[str]) -> Any:
    """zeroseg_ros/SegmentedObjects of 2-D regions (ids are their indices), as the node's objects output."""
    types = output_typestore().types
    point, vector = types["geometry_msgs/msg/Point"], types["geometry_msgs/msg/Vector3"]
    roi = types["sensor_msgs/msg/RegionOfInterest"]
    objects = []
    for index, region in enumerate(regions):
        x, y, width, height = region.box
        objects.append(
            types["zeroseg_ros/msg/SegmentedObject"](
                id=index,
                label_id=region.label,
                label=labels[region.label - 1],
                box=roi(x_offset=x, y_offset=y, height=height, width=width, do_rectify=False),
                pixel_count=region.pixels,
                mean_confidence=region.mean_confidence,
                has_depth=False,
                centroid=point(x=0.0, y=0.0, z=0.0),
                extents=vector(x=0.0, y=0.0, z=0.0),
                valid_depth_fraction=region.valid_depth_fraction,
            )
        )
    return types[SEGMENTED_OBJECTS](header=header, has_depth=False, objects=objects)

"""The node's outputs of one segmented frame as rosbags messages (CDR bytes), with the same contents the live node
publishes for the same frame and settings: ``mask`` (mono8/mono16 label ids), ``mask_color`` (the overlay's
palette, rgb8), ``confidence`` (32FC1, optional), ``overlay/compressed`` (JPEG of the overlay with its legend),
``segmentation`` (zeroseg_ros/msg/Segmentation), ``objects`` (zeroseg_ros/msg/SegmentedObjects) and, for a camera
with depth, ``points`` (sensor_msgs/PointCloud2) with 3-D statistics in ``objects``.

Every output carries the input frame's header and is written at the frame's receive time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zeroseg_ros.core.geometry import POINT_DTYPE, POINT_FIELDS, Intrinsics, labelled_points, point_array
from zeroseg_ros.core.objects import SegmentedRegion, find_objects
from zeroseg_ros.core.overlay import draw_palette_legend, palette
from zeroseg_ros.core.segmenter import SegmentationResult
from zeroseg_ros.ros.image_codec import image_fields, mask_encoding, overlay_jpeg
from zeroseg_ros.tools.label.bags import COMPRESSED_IMAGE, IMAGE, Camera, Record, TopicSpec, output_typestore

LABELS_TOPIC = "/zeroseg/labels"
STRING = "std_msgs/msg/String"
SEGMENTATION = "zeroseg_ros/msg/Segmentation"
SEGMENTED_OBJECTS = "zeroseg_ros/msg/SegmentedObjects"
POINT_CLOUD2 = "sensor_msgs/msg/PointCloud2"


@dataclass(frozen=True)
class OutputSettings:
    """Which outputs are written, and how they are drawn (the node's parameters of the same names)."""

    confidence: bool = False
    overlay_alpha: float = 0.5
    overlay_legend: bool = True
    min_object_pixels: int = 100
    depth_tolerance: float = 0.02  # seconds between a frame's stamp and its depth image's
    points_stride: int = 2  # every n-th depth pixel in both directions becomes a point


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
    if camera.depth is not None:
        names["points"] = POINT_CLOUD2
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
    camera: Camera,
    header: Any,
    timestamp: int,
    order: str,
    result: SegmentationResult,
    settings: OutputSettings,
    depth: tuple[np.ndarray, Intrinsics] | None = None,
) -> list[Record]:
    """The camera's outputs of one frame, serialized; ``depth``: its paired depth image in metres and intrinsics."""
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
    depth_m, intrinsics = depth if depth is not None else (None, None)
    stride = settings.points_stride
    if depth is not None:
        points = labelled_points(result.label_map, result.confidence, *depth, stride)
        messages.append(("points", POINT_CLOUD2, _point_cloud(header, point_array(points))))
    regions = find_objects(result.label_map, result.confidence, settings.min_object_pixels, depth_m, intrinsics, stride)
    messages.append(("objects", SEGMENTED_OBJECTS, _objects(header, regions, result.labels, depth is not None)))
    return [
        Record(camera.output(name), timestamp, bytes(store.serialize_cdr(msg, msgtype)))
        for name, msgtype, msg in messages
    ]


def _point_cloud(header: Any, cloud: np.ndarray) -> Any:
    """An unorganised PointCloud2 of ``POINT_DTYPE`` records, as the node's points output."""
    types = output_typestore().types
    fields = [types["sensor_msgs/msg/PointField"](name=n, offset=o, datatype=d, count=1) for n, o, d in POINT_FIELDS]
    return types[POINT_CLOUD2](
        header=header,
        height=1,
        width=len(cloud),
        fields=fields,
        is_bigendian=False,
        point_step=POINT_DTYPE.itemsize,
        row_step=POINT_DTYPE.itemsize * len(cloud),
        data=np.frombuffer(cloud.tobytes(), dtype=np.uint8),
        is_dense=True,
    )


def _objects(header: Any, regions: Sequence[SegmentedRegion], labels: Sequence[str], has_depth: bool) -> Any:
    """zeroseg_ros/SegmentedObjects of the regions (ids are their indices), as the node's objects output."""
    types = output_typestore().types
    point, vector = types["geometry_msgs/msg/Point"], types["geometry_msgs/msg/Vector3"]
    roi = types["sensor_msgs/msg/RegionOfInterest"]
    objects = []
    for index, region in enumerate(regions):
        x, y, width, height = region.box
        centroid, extents = region.centroid, region.extents
        in_3d = centroid is not None and extents is not None
        objects.append(
            types["zeroseg_ros/msg/SegmentedObject"](
                id=index,
                label_id=region.label,
                label=labels[region.label - 1],
                box=roi(x_offset=x, y_offset=y, height=height, width=width, do_rectify=False),
                pixel_count=region.pixels,
                mean_confidence=region.mean_confidence,
                has_depth=in_3d,
                centroid=point(**_xyz(centroid if in_3d else None)),
                extents=vector(**_xyz(extents if in_3d else None)),
                valid_depth_fraction=region.valid_depth_fraction,
            )
        )
    return types[SEGMENTED_OBJECTS](header=header, has_depth=has_depth, objects=objects)


def _xyz(values: np.ndarray | None) -> dict[str, float]:
    x, y, z = (0.0, 0.0, 0.0) if values is None else (float(v) for v in values)
    return {"x": x, "y": y, "z": z}

"""Depth images and pinhole intrinsics: metres per pixel, intrinsics of another resolution, 3-D points.

ROS-free (numpy only). Conventions of sensor_msgs (REP 118, REP 103): depth ``16UC1`` is millimetres and
``32FC1`` metres; 0, NaN and infinities mean "no depth"; points are in the camera's optical frame (x right,
y down, z forward). The depth image is registered to the colour camera but may have another resolution: its
intrinsics are the colour camera's scaled, and each depth pixel takes the label of the colour pixel under its
centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zeroseg_ros.core.errors import InvalidImageError

DEPTH_SCALES = {"16UC1": 0.001, "32FC1": 1.0}  # metres per stored unit, per sensor_msgs encoding
# sensor_msgs/PointField's datatype codes of the fields below.
POINT_FIELD_UINT16, POINT_FIELD_FLOAT32 = 4, 7
# x, y, z float32 metres, label uint16 (2 bytes of padding keep confidence aligned), confidence float32.
POINT_DTYPE = np.dtype(
    {
        "names": ["x", "y", "z", "label", "confidence"],
        "formats": ["<f4", "<f4", "<f4", "<u2", "<f4"],
        "offsets": [0, 4, 8, 12, 16],
        "itemsize": 20,
    }
)
# (name, byte offset, PointField datatype) of each field of POINT_DTYPE, as a PointCloud2 describes them.
POINT_FIELDS = (
    ("x", 0, POINT_FIELD_FLOAT32),
    ("y", 4, POINT_FIELD_FLOAT32),
    ("z", 8, POINT_FIELD_FLOAT32),
    ("label", 12, POINT_FIELD_UINT16),
    ("confidence", 16, POINT_FIELD_FLOAT32),
)


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera of ``width x height`` pixels: focal lengths and principal point in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> Intrinsics:
        """From a row-major 3x3 camera matrix (sensor_msgs/CameraInfo ``k``) of a ``width x height`` image."""
        values = [float(v) for v in k]
        if len(values) != 9:
            raise InvalidImageError(f"camera matrix K must have 9 values, got {len(values)}")
        fx, fy, cx, cy = values[0], values[4], values[2], values[5]
        if not all(np.isfinite(values)) or fx <= 0 or fy <= 0:
            raise InvalidImageError(
                f"camera matrix K has no usable focal lengths (fx {fx}, fy {fy}): is the camera calibrated?"
            )
        if width <= 0 or height <= 0:
            raise InvalidImageError(f"camera image size must be positive, got {width}x{height}")
        return cls(fx, fy, cx, cy, int(width), int(height))

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera at ``width x height`` pixels (pixel centres at integer coordinates: the point
        ``u`` of this image lies at ``(u + 0.5) * sx - 0.5`` of the other)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, width, height
        )


def depth_in_metres(depth: np.ndarray, encoding: str) -> np.ndarray:
    """``H x W`` float32 metres, NaN where there is no depth (0, NaN, inf or negative)."""
    scale = DEPTH_SCALES.get(encoding)
    if scale is None:
        raise InvalidImageError(f"depth encoding must be one of {', '.join(DEPTH_SCALES)}, got {encoding!r}")
    metres = depth.astype(np.float32) * np.float32(scale)
    metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres


@dataclass(frozen=True)
class DepthImage:
    """A received depth image as stored (``16UC1`` or ``32FC1`` pixels, H x W); converted only when paired."""

    pixels: np.ndarray
    encoding: str

    def registered(
        self, k: Sequence[float], info_width: int, info_height: int, colour_size: tuple[int, int]
    ) -> tuple[np.ndarray, Intrinsics]:
        """This image in metres and its intrinsics, given the colour camera's camera_info (``k`` and its image
        size; a size of 0 means the colour frame's) and the colour frame's (height, width)."""
        height, width = self.pixels.shape[:2]
        check_registered((height, width), colour_size)
        intrinsics = Intrinsics.from_k(k, info_width or colour_size[1], info_height or colour_size[0])
        return depth_in_metres(self.pixels, self.encoding), intrinsics.scaled(width, height)


def check_registered(depth_size: tuple[int, int], colour_size: tuple[int, int], tolerance: float = 0.02) -> None:
    """A depth image registered to the colour camera covers the same field of view: same aspect ratio.
    Sizes are (height, width)."""
    (dh, dw), (ch, cw) = depth_size, colour_size
    if abs(dw / cw - dh / ch) > tolerance * max(dw / cw, dh / ch):
        raise InvalidImageError(
            f"depth image {dw}x{dh} does not have the colour image's aspect ratio ({cw}x{ch}): is it registered "
            "to the colour camera (e.g. aligned_depth_to_color)?"
        )


def sample_indices(source: int, target: int) -> np.ndarray:
    """For each of ``target`` pixels along an axis, the pixel of a ``source``-pixel axis under its centre."""
    centres = (np.arange(target) + 0.5) * (source / target)
    return np.minimum(centres.astype(np.int64), source - 1)


def resample_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` seen at ``height x width``: each pixel takes the value under its centre."""
    if image.shape[:2] == (height, width):
        return image
    rows = sample_indices(image.shape[0], height)
    cols = sample_indices(image.shape[1], width)
    return image[rows[:, None], cols[None, :]]


def back_project(depth_m: np.ndarray, intrinsics: Intrinsics, stride: int = 1) -> np.ndarray:
    """``(H', W', 3)`` float32 points (x, y, z in metres) of every ``stride``-th depth pixel in both directions;
    NaN where there is no depth. ``intrinsics`` are those of the depth image."""
    z = depth_m[::stride, ::stride]
    u = np.arange(0, depth_m.shape[1], stride, dtype=np.float32)
    v = np.arange(0, depth_m.shape[0], stride, dtype=np.float32)
    x = z * ((u - np.float32(intrinsics.cx)) / np.float32(intrinsics.fx))[None, :]
    y = z * ((v - np.float32(intrinsics.cy)) / np.float32(intrinsics.fy))[:, None]
    return np.stack((x, y, z), axis=-1)


@dataclass(frozen=True)
class LabelledPoints:
    """The labelled pixels with valid depth as 3-D points (background and pixels without depth left out)."""

    xyz: np.ndarray  # (N, 3) float32 metres
    labels: np.ndarray  # (N,) uint16
    confidence: np.ndarray  # (N,) float32


def labelled_points(
    label_map: np.ndarray,
    confidence: np.ndarray,
    depth_m: np.ndarray,
    depth_intrinsics: Intrinsics,
    stride: int,
) -> LabelledPoints:
    """The points of every ``stride``-th depth pixel whose colour pixel has a label and which has depth."""
    height, width = depth_m.shape
    rows = sample_indices(label_map.shape[0], height)[::stride]
    cols = sample_indices(label_map.shape[1], width)[::stride]
    labels = label_map[rows[:, None], cols[None, :]]
    xyz = back_project(depth_m, depth_intrinsics, stride)
    keep = (labels > 0) & np.isfinite(xyz[..., 2])
    return LabelledPoints(
        xyz=xyz[keep],
        labels=labels[keep].astype(np.uint16),
        confidence=confidence[rows[:, None], cols[None, :]][keep].astype(np.float32),
    )


def point_array(points: LabelledPoints) -> np.ndarray:
    """``points`` as one little-endian record per point (``POINT_DTYPE``): a PointCloud2's data."""
    cloud = np.zeros(len(points.labels), dtype=POINT_DTYPE)
    cloud["x"], cloud["y"], cloud["z"] = points.xyz[:, 0], points.xyz[:, 1], points.xyz[:, 2]
    cloud["label"], cloud["confidence"] = points.labels, points.confidence
    return cloud

"""Objects from a label map: the connected components of each label (instances), their 2-D boxes, pixel counts
and mean confidence, and with a depth image their robust 3-D centroid and extents.

ROS-free (numpy and OpenCV). Robust statistics, because the pixels of a mask's edge often carry the depth of
what lies behind the object (or a flying pixel between both): the centroid is the per-axis median of the
object's points, and the extents are per axis the span of the points inside Tukey's fences (first and third
quartiles widened by 1.5 interquartile ranges), which drops such outliers but keeps the whole of a surface.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from zeroseg_ros.core.geometry import Intrinsics, back_project, sample_indices

FENCE = 1.5  # Tukey's fences: quartiles +- FENCE x interquartile range


@dataclass(frozen=True)
class SegmentedRegion:
    """One connected component of one label. ``box`` is (x, y, width, height) in colour pixels; the 3-D fields
    are in metres in the camera's optical frame, None without depth or without a valid depth pixel."""

    label: int
    box: tuple[int, int, int, int]
    pixels: int
    mean_confidence: float
    centroid: np.ndarray | None = None  # (3,) float64: per-axis median of the object's points
    extents: np.ndarray | None = None  # (3,) float64: per-axis span inside Tukey's fences
    valid_depth_fraction: float = 0.0  # of the object's depth pixels (every stride-th) that have depth


def robust_centroid_and_extents(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 3)`` points -> (per-axis median, per-axis span of the values inside Tukey's fences); quartiles and
    median by rank (the lower of two middle values), which needs one partial sort per axis."""
    axes = np.ascontiguousarray(points.T)
    last = axes.shape[1] - 1
    ranks = [last // 4, last // 2, 3 * last // 4]
    q1, median, q3 = np.partition(axes, ranks, axis=1)[:, ranks].T
    spread = FENCE * (q3 - q1)
    inside = (axes >= (q1 - spread)[:, None]) & (axes <= (q3 + spread)[:, None])
    low = np.where(inside, axes, np.inf).min(axis=1)
    high = np.where(inside, axes, -np.inf).max(axis=1)
    return median.astype(np.float64), (high - low).astype(np.float64)


def find_objects(
    label_map: np.ndarray,
    confidence: np.ndarray,
    min_pixels: int,
    depth_m: np.ndarray | None = None,
    depth_intrinsics: Intrinsics | None = None,
    stride: int = 1,
) -> list[SegmentedRegion]:
    """The 8-connected components of each label (0 is background) with at least ``min_pixels`` pixels, in
    label order, then in OpenCV's component order. With ``depth_m`` (metres, NaN for no
    depth, registered to the colour image at any resolution) and its intrinsics, every ``stride``-th depth
    pixel in both directions gives the 3-D statistics."""
    counts = np.bincount(label_map.ravel(), minlength=1)
    regions: list[SegmentedRegion] = []
    instance = np.zeros(label_map.shape, dtype=np.int32) if depth_m is not None else None  # pixel -> object number
    for label in np.flatnonzero(counts[1:] >= min_pixels) + 1:
        mask = label_map == label
        # Components within the label's bounding box only: OpenCV's statistics cost per pixel of the image.
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        local = np.ascontiguousarray(mask[window])
        count, components, stats, _ = cv2.connectedComponentsWithStats(local.view(np.uint8), connectivity=8)
        ids = components[local]
        sums = np.bincount(ids, weights=confidence[window][local], minlength=count)
        numbers = np.zeros(count, dtype=np.int32)  # component -> 1-based object number (0: too small)
        # Component 0 is everything that is not this label.
        for component in np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= min_pixels) + 1:
            x, y, width, height, area = (int(v) for v in stats[component])
            box = (x + int(cols[0]), y + int(rows[0]), width, height)
            regions.append(SegmentedRegion(int(label), box, area, float(sums[component] / area)))
            numbers[component] = len(regions)
        if instance is not None:
            instance[window][local] = numbers[ids]
    if instance is None or depth_m is None or depth_intrinsics is None or not regions:
        return regions

    rows = sample_indices(label_map.shape[0], depth_m.shape[0])[::stride]
    cols = sample_indices(label_map.shape[1], depth_m.shape[1])[::stride]
    owner = instance[rows[:, None], cols[None, :]].ravel()
    points = back_project(depth_m, depth_intrinsics, stride).reshape(-1, 3)
    sampled = np.bincount(owner, minlength=len(regions) + 1)
    valid = (owner > 0) & np.isfinite(points[:, 2])
    owner, points = owner[valid], points[valid]
    order = np.argsort(owner)
    per_object = np.split(points[order], np.cumsum(np.bincount(owner, minlength=len(regions) + 1))[:-1])
    with_depth = []
    for index, region in enumerate(regions, start=1):
        own = per_object[index]
        centroid, extents = robust_centroid_and_extents(own) if len(own) else (None, None)
        fraction = len(own) / sampled[index] if sampled[index] else 0.0
        with_depth.append(replace(region, centroid=centroid, extents=extents, valid_depth_fraction=float(fraction)))
    return with_depth

"""Objects from a label map: the connected components of each label (instances), their 2-D boxes, pixel counts
and mean confidence, and with a depth image their robust 3-D centroid and extents.

ROS-free (numpy and OpenCV). Robust statistics, because the pixels of a mask's edge often carry the depth of
what lies behind the object (or a flying pixel between both): the centroid is the per-axis median of the
object's points, and the extents are per axis the span of the points inside Tukey's fences (first and third
quartiles widened by 1.5 interquartile ranges), which drops such outliers but keeps the whole of a surface.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache

import cv2
import numpy as np

from zeroseg_ros.core.geometry import Intrinsics, back_project, sample_indices

FENCE = 1.5  # Tukey's fences: quartiles +- FENCE x interquartile range
MAX_THREADS = 4


@cache
def _pool() -> ThreadPoolExecutor:
    """Threads for the per-label work, made on first use; they wait idle between frames."""
    return ThreadPoolExecutor(min(MAX_THREADS, os.cpu_count() or 1), thread_name_prefix="zeroseg-objects")


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


@dataclass(frozen=True)
class _LabelComponents:
    """The connected components of one label within its bounding box ``window`` (OpenCV's numbering: 0 is
    every pixel of another label), and those with at least the minimum pixel count."""

    window: tuple[slice, slice]
    components: np.ndarray  # window-sized component numbers
    stats: np.ndarray  # OpenCV's per-component x, y, width, height, area (window coordinates)
    confidence_sums: np.ndarray  # per component
    large: np.ndarray  # the component numbers kept


def _label_components(
    label_map: np.ndarray, confidence: np.ndarray, label: int, pixels: int, min_pixels: int
) -> _LabelComponents | None:
    mask = label_map == label
    # Components within the label's bounding box only: OpenCV's statistics cost per pixel of the image.
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    window = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    local = np.ascontiguousarray(mask[window])
    # 16-bit component numbers where they provably fit (a label of n pixels has at most n components; in a 2x2
    # block all pixels touch, so there are at most as many components as blocks): about a third faster.
    most = min(pixels, -(-local.shape[0] // 2) * -(-local.shape[1] // 2))
    number_type = cv2.CV_16U if most < np.iinfo(np.uint16).max else cv2.CV_32S
    count, components, stats, _ = cv2.connectedComponentsWithStats(
        local.view(np.uint8), connectivity=8, ltype=number_type
    )
    large = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= min_pixels) + 1
    if not large.size:
        return None
    sums = np.bincount(components[local], weights=confidence[window][local], minlength=count)
    return _LabelComponents(window, components, stats, sums, large)


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
    labels = [int(label) for label in np.flatnonzero(counts[1:] >= min_pixels) + 1]
    # OpenCV and numpy's large operations release the GIL: labels on several threads use the cores that the
    # image encoder uses (idle meanwhile).
    per_label = _pool().map(
        lambda label: _label_components(label_map, confidence, label, counts[label], min_pixels), labels
    )
    regions: list[SegmentedRegion] = []
    owner: np.ndarray | None = None  # per stride-th depth pixel, the object of the colour pixel under it (0: none)
    if depth_m is not None and depth_intrinsics is not None:
        sample_rows = sample_indices(label_map.shape[0], depth_m.shape[0])[::stride]
        sample_cols = sample_indices(label_map.shape[1], depth_m.shape[1])[::stride]
        owner = np.zeros((len(sample_rows), len(sample_cols)), dtype=np.int32)
    for label, found in zip(labels, per_label, strict=True):
        if found is None:
            continue
        numbers = np.zeros(len(found.stats), dtype=np.int32)  # component -> 1-based object number (0: none)
        top, left = found.window[0].start, found.window[1].start
        for component in found.large:
            x, y, width, height, area = (int(v) for v in found.stats[component])
            mean = float(found.confidence_sums[component] / area)
            regions.append(SegmentedRegion(label, (x + left, y + top, width, height), area, mean))
            numbers[component] = len(regions)
        if owner is not None:
            # Only the sampled pixels inside the window; other labels' pixels there are component 0.
            row_span = slice(*np.searchsorted(sample_rows, (top, found.window[0].stop)))
            col_span = slice(*np.searchsorted(sample_cols, (left, found.window[1].stop)))
            inside = found.components.take(sample_rows[row_span] - top, axis=0)
            owner[row_span, col_span] += numbers[inside.take(sample_cols[col_span] - left, axis=1)]
    if owner is None or depth_m is None or depth_intrinsics is None or not regions:
        return regions

    owners = owner.ravel()
    points = back_project(depth_m, depth_intrinsics, stride).reshape(-1, 3)
    sampled = np.bincount(owners, minlength=len(regions) + 1)
    valid = np.flatnonzero((owners > 0) & np.isfinite(points[:, 2]))
    order = valid[np.argsort(owners[valid])]
    per_object = np.split(points[order], np.cumsum(np.bincount(owners[order], minlength=len(regions) + 1))[:-1])
    located = []
    for index, region in enumerate(regions, start=1):
        own = per_object[index]
        centroid, extents = robust_centroid_and_extents(own) if len(own) else (None, None)
        fraction = len(own) / sampled[index] if sampled[index] else 0.0
        located.append(replace(region, centroid=centroid, extents=extents, valid_depth_fraction=float(fraction)))
    return located

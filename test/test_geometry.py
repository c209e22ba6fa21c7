"""Depth, intrinsics, 3-D points and objects on synthetic scenes whose answer is known: a fronto-parallel wall
at 2.000 m and the front face of a box at 1.500 m before it, seen by a pinhole camera whose depth image has
half the colour image's resolution (each depth pixel is a 2x2 block of colour pixels)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from zeroseg_ros.core.errors import InvalidImageError
from zeroseg_ros.core.geometry import (
    Intrinsics,
    back_project,
    check_registered,
    depth_in_metres,
    labelled_points,
    resample_nearest,
)
from zeroseg_ros.core.objects import find_objects, robust_centroid_and_extents

WIDTH, HEIGHT, F, CX, CY = 640, 480, 600.0, 319.5, 239.5
K = [F, 0.0, CX, 0.0, F, CY, 0.0, 0.0, 1.0]
WALL_Z, BOX_Z = 2.0, 1.5
# The box face's edges fall on even colour pixel boundaries (x: 355.5 and 515.5, y: 139.5 and 259.5), so
# each depth pixel is either all box or all wall.
BOX_X, BOX_Y = (0.09, 0.49), (-0.25, 0.05)
WALL, BOX = 1, 2
NO_DEPTH_ROWS = 24  # top depth rows without depth (0 or NaN)


@dataclass
class Scene:
    label_map: np.ndarray  # colour resolution
    confidence: np.ndarray
    depth_m: np.ndarray  # depth resolution, NaN for no depth
    raw_depth: np.ndarray
    encoding: str


def rays(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray slopes x/z, y/z through colour image coordinates."""
    return (xs[None, :] - CX) / F + 0 * ys[:, None], (ys[:, None] - CY) / F + 0 * xs[None, :]


def hits_box(slope_x: np.ndarray, slope_y: np.ndarray) -> np.ndarray:
    x, y = slope_x * BOX_Z, slope_y * BOX_Z
    return (x > BOX_X[0]) & (x < BOX_X[1]) & (y > BOX_Y[0]) & (y < BOX_Y[1])


def make_scene(encoding: str) -> Scene:
    colour_box = hits_box(*rays(np.arange(WIDTH, dtype=float), np.arange(HEIGHT, dtype=float)))
    label_map = np.where(colour_box, BOX, WALL).astype(np.uint8)
    confidence = np.where(colour_box, 0.8, 0.6).astype(np.float32)
    # Depth pixel (u, v) covers colour pixels 2u, 2u+1: its centre lies at colour coordinate 2u + 0.5.
    depth_box = hits_box(*rays(np.arange(WIDTH // 2) * 2 + 0.5, np.arange(HEIGHT // 2) * 2 + 0.5))
    metres = np.where(depth_box, BOX_Z, WALL_Z)
    if encoding == "16UC1":
        raw = np.round(metres * 1000).astype(np.uint16)
        raw[:NO_DEPTH_ROWS] = 0
    else:
        raw = metres.astype(np.float32)
        raw[:NO_DEPTH_ROWS] = np.nan
        raw[:NO_DEPTH_ROWS, ::2] = np.inf
    return Scene(label_map, confidence, depth_in_metres(raw, encoding), raw, encoding)


def colour_intrinsics() -> Intrinsics:
    return Intrinsics.from_k(K, WIDTH, HEIGHT)


@pytest.fixture(params=["16UC1", "32FC1"])
def scene(request: pytest.FixtureRequest) -> Scene:
    return make_scene(request.param)


def test_scaled_intrinsics_put_a_point_where_the_smaller_image_sees_it() -> None:
    depth = colour_intrinsics().scaled(WIDTH // 2, HEIGHT // 2)
    point = np.array([0.3, -0.2, 1.7])
    u_colour = F * point[0] / point[2] + CX
    v_colour = F * point[1] / point[2] + CY
    u_depth = depth.fx * point[0] / point[2] + depth.cx
    v_depth = depth.fy * point[1] / point[2] + depth.cy
    # Depth pixel u spans colour pixels 2u and 2u + 1; its centre is colour coordinate 2u + 0.5.
    assert 2 * u_depth + 0.5 == pytest.approx(u_colour)
    assert 2 * v_depth + 0.5 == pytest.approx(v_colour)
    assert (depth.width, depth.height) == (WIDTH // 2, HEIGHT // 2)


@pytest.mark.parametrize("k", [[0.0] * 9, [F, 0, CX, 0, -F, CY, 0, 0, 1], [float("nan")] * 9, [F, 0, CX]])
def test_a_camera_matrix_without_focal_lengths_is_refused(k: list[float]) -> None:
    with pytest.raises(InvalidImageError, match="K"):
        Intrinsics.from_k(k, WIDTH, HEIGHT)


def test_depth_in_metres_marks_zero_nan_and_infinite_depth_as_missing() -> None:
    millimetres = np.array([[0, 1500, 65535]], dtype=np.uint16)
    np.testing.assert_allclose(depth_in_metres(millimetres, "16UC1"), [[np.nan, 1.5, 65.535]], rtol=1e-6)
    metres = np.array([[np.nan, np.inf, -np.inf, 0.0, -1.0, 2.25]], dtype=np.float32)
    result = depth_in_metres(metres, "32FC1")
    assert result.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(result), [[True, True, True, True, True, False]])
    assert result[0, 5] == 2.25
    with pytest.raises(InvalidImageError, match="depth encoding must be one of 16UC1, 32FC1, got 'mono8'"):
        depth_in_metres(millimetres.astype(np.uint8), "mono8")


def test_a_depth_image_of_another_aspect_ratio_is_refused() -> None:
    check_registered((240, 320), (480, 640))
    check_registered((720, 1280), (480, 854))  # 854 x 480 is 16:9 within the tolerance
    with pytest.raises(InvalidImageError, match="aspect ratio"):
        check_registered((240, 240), (480, 640))


def test_resample_nearest_takes_the_pixel_under_each_centre() -> None:
    image = np.arange(16).reshape(4, 4)
    np.testing.assert_array_equal(resample_nearest(image, 2, 2), [[5, 7], [13, 15]])
    np.testing.assert_array_equal(resample_nearest(image[:2, :2], 4, 4)[:, 0], [0, 0, 4, 4])


def test_back_projection_is_the_inverse_of_the_pinhole_projection() -> None:
    intrinsics = Intrinsics.from_k([500.0, 0, 40.0, 0, 400.0, 30.0, 0, 0, 1], 80, 60)
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 5.0, (60, 80)).astype(np.float32)
    points = back_project(depth, intrinsics, stride=3)
    assert points.shape == (20, 27, 3)
    u = points[..., 0] / points[..., 2] * 500.0 + 40.0
    v = points[..., 1] / points[..., 2] * 400.0 + 30.0
    np.testing.assert_allclose(u, np.arange(0, 80, 3)[None, :] + 0 * u, atol=1e-3)
    np.testing.assert_allclose(v, np.arange(0, 60, 3)[:, None] + 0 * v, atol=1e-3)
    np.testing.assert_array_equal(points[..., 2], depth[::3, ::3])


def test_points_on_the_wall_lie_on_the_plane_and_every_point_keeps_its_label(scene: Scene) -> None:
    depth_intrinsics = colour_intrinsics().scaled(WIDTH // 2, HEIGHT // 2)
    for stride in (1, 2):
        points = labelled_points(scene.label_map, scene.confidence, scene.depth_m, depth_intrinsics, stride)
        wall, box = points.labels == WALL, points.labels == BOX
        assert wall.sum() > 0 and box.sum() > 0
        assert np.abs(points.xyz[wall, 2] - WALL_Z).max() < 0.001
        assert np.abs(points.xyz[box, 2] - BOX_Z).max() < 0.001
        # Every point projects back into the colour image onto a pixel of its own label.
        u = np.floor(points.xyz[:, 0] / points.xyz[:, 2] * F + CX + 0.5).astype(int)
        v = np.floor(points.xyz[:, 1] / points.xyz[:, 2] * F + CY + 0.5).astype(int)
        np.testing.assert_array_equal(scene.label_map[v, u], points.labels)
        np.testing.assert_array_equal(points.confidence, np.where(box, 0.8, 0.6).astype(np.float32))
        # Pixels without depth give no point: none from the top rows.
        assert v.min() >= NO_DEPTH_ROWS * 2
        expected = np.isfinite(scene.depth_m[::stride, ::stride]).sum()
        assert len(points.labels) == expected


def test_background_pixels_give_no_points() -> None:
    scene = make_scene("32FC1")
    label_map = np.where(scene.label_map == BOX, BOX, 0).astype(np.uint8)
    intrinsics = colour_intrinsics().scaled(WIDTH // 2, HEIGHT // 2)
    points = labelled_points(label_map, scene.confidence, scene.depth_m, intrinsics, stride=1)
    assert set(points.labels.tolist()) == {BOX}
    assert np.abs(points.xyz[:, 2] - BOX_Z).max() < 0.001


def test_box_and_wall_objects_have_the_scene_centroid_extents_and_valid_fraction(scene: Scene) -> None:
    depth_intrinsics = colour_intrinsics().scaled(WIDTH // 2, HEIGHT // 2)
    for stride in (1, 2):
        objects = find_objects(scene.label_map, scene.confidence, 100, scene.depth_m, depth_intrinsics, stride)
        assert [o.label for o in objects] == [WALL, BOX]
        wall, box = objects
        assert box.centroid is not None and box.extents is not None
        expected_centre = [(BOX_X[0] + BOX_X[1]) / 2, (BOX_Y[0] + BOX_Y[1]) / 2, BOX_Z]
        assert np.abs(box.centroid - expected_centre).max() < 0.01
        assert np.abs(box.extents - [BOX_X[1] - BOX_X[0], BOX_Y[1] - BOX_Y[0], 0.0]).max() < 0.02
        assert box.valid_depth_fraction == 1.0
        assert box.box == (356, 140, 160, 120) and box.pixels == 160 * 120
        assert box.mean_confidence == pytest.approx(0.8)

        assert wall.centroid is not None and wall.extents is not None
        assert abs(wall.centroid[2] - WALL_Z) < 0.001
        # The wall fills the view: from the first to the last pixel centre at 2 m, minus the rows without depth.
        first_row = (NO_DEPTH_ROWS * 2 - CY) / F * WALL_Z
        expected_extents = [(WIDTH - 1) / F * WALL_Z, ((HEIGHT - 1 - CY) / F * WALL_Z) - first_row, 0.0]
        assert np.abs(wall.extents - expected_extents).max() < 0.02
        wall_depth_pixels = scene.label_map[1::2, 1::2][::stride, ::stride] == WALL
        without = wall_depth_pixels & ~np.isfinite(scene.depth_m[::stride, ::stride])
        assert wall.valid_depth_fraction == pytest.approx(1 - without.sum() / wall_depth_pixels.sum())
        assert wall.box == (0, 0, WIDTH, HEIGHT) and wall.pixels == WIDTH * HEIGHT - 160 * 120


def test_robust_statistics_ignore_edge_pixels_with_the_depth_behind() -> None:
    rng = np.random.default_rng(1)
    face = np.column_stack([rng.uniform(-0.2, 0.2, 900), rng.uniform(-0.1, 0.1, 900), np.full(900, 1.5)])
    behind = np.column_stack([rng.uniform(-0.2, 0.2, 60), rng.uniform(-0.1, 0.1, 60), np.full(60, 2.0)])
    centroid, extents = robust_centroid_and_extents(np.vstack([face, behind]))
    assert centroid[2] == 1.5 and extents[2] == 0.0
    assert np.abs(extents[:2] - [0.4, 0.2]).max() < 0.01


def test_objects_are_the_connected_components_of_each_label_above_the_minimum() -> None:
    label_map = np.zeros((40, 60), dtype=np.uint8)
    label_map[2:12, 3:13] = 1  # 100 pixels
    label_map[20:30, 40:55] = 1  # 150 pixels, another instance of label 1
    label_map[30:33, 0:3] = 1  # 9 pixels: below the minimum
    label_map[15:25, 10:20] = 3  # 100 pixels of label 3
    confidence = np.linspace(0, 1, label_map.size, dtype=np.float32).reshape(label_map.shape)
    objects = find_objects(label_map, confidence, min_pixels=10)
    assert [(o.label, o.box, o.pixels) for o in objects] == [
        (1, (3, 2, 10, 10), 100),
        (1, (40, 20, 15, 10), 150),
        (3, (10, 15, 10, 10), 100),
    ]
    for found in objects:
        x, y, width, height = found.box
        region = label_map[y : y + height, x : x + width] == found.label
        assert found.mean_confidence == pytest.approx(float(confidence[y : y + height, x : x + width][region].mean()))
        assert found.centroid is None and found.extents is None and found.valid_depth_fraction == 0.0
    # Diagonal neighbours are one object (8-connectivity).
    diagonal = np.zeros((10, 10), dtype=np.uint8)
    diagonal[np.arange(10), np.arange(10)] = 2
    assert [o.pixels for o in find_objects(diagonal, np.ones((10, 10), np.float32), min_pixels=1)] == [10]


def test_an_object_without_any_depth_has_no_3d_statistics() -> None:
    label_map = np.zeros((20, 20), dtype=np.uint8)
    label_map[5:15, 5:15] = 1
    depth = np.full((10, 10), np.nan, dtype=np.float32)
    intrinsics = Intrinsics.from_k([20.0, 0, 9.5, 0, 20.0, 9.5, 0, 0, 1], 20, 20).scaled(10, 10)
    (found,) = find_objects(label_map, np.ones((20, 20), np.float32), 10, depth, intrinsics)
    assert found.centroid is None and found.extents is None and found.valid_depth_fraction == 0.0


@pytest.mark.parametrize("spacing", [2, 3], ids=["more_than_65535_components", "fewer_than_65535_components"])
def test_every_component_is_its_own_object_however_many_there_are(spacing: int) -> None:
    # Isolated pixels: 600x600 / 2^2 = 90,000 components (OpenCV's 32-bit numbering), / 3^2 = 40,000 (16-bit).
    label_map = np.zeros((600, 600), dtype=np.uint8)
    label_map[::spacing, ::spacing] = 1
    confidence = np.random.default_rng(0).random(label_map.shape, dtype=np.float32)
    objects = find_objects(label_map, confidence, min_pixels=1)
    rows, cols = np.nonzero(label_map)
    assert len(objects) == len(rows) == (600 // spacing) ** 2
    assert sorted((o.box[1], o.box[0]) for o in objects) == sorted(zip(rows.tolist(), cols.tolist(), strict=True))
    assert all(o.pixels == 1 and o.box[2:] == (1, 1) for o in objects)
    by_pixel = {(o.box[1], o.box[0]): o.mean_confidence for o in objects}
    assert [by_pixel[(r, c)] for r, c in zip(rows[:50], cols[:50], strict=True)] == pytest.approx(
        confidence[rows[:50], cols[:50]].tolist()
    )

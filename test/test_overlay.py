"""Colour palette, blending and legend of overlays."""

from __future__ import annotations

import numpy as np

from zeroseg_ros.core.overlay import blend, draw_legend, draw_overlay, palette


def test_palette_is_deterministic_distinct_and_starts_with_black():
    colours = palette(40)
    assert colours.shape == (41, 3) and colours.dtype == np.uint8
    assert (colours[0] == 0).all()
    assert len({tuple(c) for c in colours}) == 41
    np.testing.assert_array_equal(palette(5), colours[:6])  # adding queries keeps existing colours


def test_blend_paints_labels_and_keeps_background():
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    labels = np.zeros((4, 4), dtype=np.uint8)
    labels[0, 0] = 1
    colours = palette(1)
    out = blend(image, labels, colours, alpha=0.25)
    np.testing.assert_array_equal(out[1:, :], image[1:, :])
    np.testing.assert_array_equal(out[0, 0], np.rint(0.75 * 100 + 0.25 * colours[1].astype(float)).astype(np.uint8))


def test_legend_is_drawn_top_left_and_survives_many_labels():
    image = np.full((60, 200, 3), 128, dtype=np.uint8)
    draw_legend(image, [f"label {i}" for i in range(50)], palette(50))
    assert (image[:20, :40] != 128).any()
    assert (image[50:, 150:] == 128).all()


def test_draw_overlay_does_not_modify_its_input():
    image = np.full((30, 30, 3), 50, dtype=np.uint8)
    labels = np.ones((30, 30), dtype=np.uint8)
    out = draw_overlay(image, labels, ["thing"], alpha=0.5)
    assert (image == 50).all() and out.shape == image.shape and (out != 50).any()

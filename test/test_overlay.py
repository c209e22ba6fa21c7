"""Colour palette, blending and legend of overlays."""

from __future__ import annotations

import numpy as np
import pytest
from legend_helpers import legend_order

from zeroseg_ros.core.overlay import blend, draw_legend, draw_overlay, legend_entries, palette

# A background no legend pixel can have: the text is grey on a black box, and every palette colour has each
# channel at 31 or more (saturation 0.85).
BACKGROUND = (10, 250, 20)


def _canvas(height: int, width: int) -> np.ndarray:
    return np.tile(np.array(BACKGROUND, dtype=np.uint8), (height, width, 1))


def assert_legend_inside_its_boxes(image: np.ndarray) -> None:
    """Every pixel row the legend changed is one run of changed pixels that starts and ends on its black box,
    so no glyph stands outside a box (above, below or beside it)."""
    changed = (image != np.array(BACKGROUND, dtype=np.uint8)).any(axis=-1)
    assert changed.any()
    for y in np.nonzero(changed.any(axis=1))[0]:
        xs = np.nonzero(changed[y])[0]
        assert xs[-1] - xs[0] + 1 == len(xs), f"row {y}: legend pixels outside a box"
        assert (image[y, xs[0]] == 0).all() and (image[y, xs[-1]] == 0).all(), f"row {y}: a run not closed by a box"


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


def test_legend_entries_are_the_labels_present_largest_first_with_their_share():
    entries = legend_entries(["cat", "sofa", "lamp", "rug", "door"], [30, 0, 500, 2, 30], pixels=1000)
    assert entries == [(3, "lamp", "50%"), (1, "cat", "3%"), (5, "door", "3%"), (4, "rug", "<1%")]
    assert legend_entries(["cat"], [0], pixels=10) == []
    with pytest.raises(ValueError, match="2 labels but 1 areas"):
        legend_entries(["cat", "sofa"], [1], pixels=10)


def test_legend_shows_only_the_labels_present_in_order_of_area():
    labels = [f"label {i}" for i in range(30)]
    areas = np.zeros(30, dtype=np.int64)
    areas[[17, 3, 25, 8]] = [40_000, 90_000, 5, 1_200]
    colours = palette(30)
    image = draw_legend(_canvas(480, 640), labels, areas, colours)
    assert legend_order(image, colours, range(1, 31)) == [4, 18, 9, 26]  # label ids are indices + 1


@pytest.mark.parametrize(("height", "width"), [(240, 320), (480, 640), (1080, 1920)])
def test_legend_text_lies_inside_its_boxes(height, width):
    labels = ["gypsy jug (y)", "Tall Jj|{}[]", "person", "sky-other-merged", "qpg_,;", "Éclair ÅÇ"]
    image = draw_legend(_canvas(height, width), labels, [50, 40, 30, 20, 10, 5], palette(6))
    assert_legend_inside_its_boxes(image)
    assert (image > 200).all(axis=-1).any()  # white text was drawn


def test_legend_text_scales_with_the_image():
    heights = []
    for height, width in [(240, 320), (1080, 1920)]:
        image = draw_legend(_canvas(height, width), ["person"], [100], palette(1))
        heights.append(int((image != np.array(BACKGROUND, dtype=np.uint8)).any(axis=-1).any(axis=1).sum()))
    assert heights[1] >= 3 * heights[0]


def test_legend_fits_a_small_image_and_counts_what_does_not_fit():
    labels = [f"a rather long label number {i}" for i in range(50)]
    image = draw_legend(_canvas(60, 120), labels, np.arange(50, 0, -1), palette(50))
    assert_legend_inside_its_boxes(image)
    changed = (image != np.array(BACKGROUND, dtype=np.uint8)).any(axis=-1)
    assert not changed[-1].any() and not changed[:, -1].any()  # the legend ends inside the image
    shown = legend_order(image, palette(50), range(1, 51))
    assert 1 <= len(shown) < 50 and shown == list(range(1, len(shown) + 1))  # the largest, then "+N more"


def test_legend_of_a_frame_without_labels_draws_nothing():
    image = draw_legend(_canvas(48, 64), ["cat", "sofa"], [0, 0], palette(2))
    assert (image == np.array(BACKGROUND, dtype=np.uint8)).all()


def test_draw_overlay_does_not_modify_its_input():
    image = np.full((30, 30, 3), 50, dtype=np.uint8)
    labels = np.ones((30, 30), dtype=np.uint8)
    out = draw_overlay(image, labels, ["thing"], [900], alpha=0.5)
    assert (image == 50).all() and out.shape == image.shape and (out != 50).any()

"""Colour overlays of label maps, with a legend, for RViz and for files."""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Sequence

import cv2
import numpy as np

_GOLDEN_RATIO = 0.618033988749895


def palette(count: int) -> np.ndarray:
    """``(count + 1, 3)`` uint8 RGB colours: row 0 (background) black, then well-separated hues.

    Hues step by the golden ratio so any prefix is spread over the colour wheel and a label keeps its colour
    when queries are appended.
    """
    colours = np.zeros((count + 1, 3), dtype=np.uint8)
    for index in range(1, count + 1):
        hue = (index * _GOLDEN_RATIO) % 1.0
        value = 1.0 if index % 2 else 0.8
        colours[index] = np.round(np.array(colorsys.hsv_to_rgb(hue, 0.85, value)) * 255)
    return colours


def blend(image: np.ndarray, label_map: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """Paint each labelled pixel with ``alpha`` of its label's colour; background pixels keep the image."""
    if image.shape[:2] != label_map.shape:
        raise ValueError(f"image {image.shape[:2]} and label map {label_map.shape} differ in size")
    painted = image.astype(np.float32)
    foreground = label_map > 0
    painted[foreground] = (1.0 - alpha) * painted[foreground] + alpha * colours[label_map[foreground]]
    return np.clip(np.rint(painted), 0, 255).astype(np.uint8)


_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT = (255, 255, 255)
_BOX = (0, 0, 0)
_ASCII = "".join(chr(code) for code in range(33, 127))


def legend_entries(labels: Sequence[str], areas: Sequence[int] | np.ndarray, pixels: int) -> list[tuple[int, str, str]]:
    """(label id, label, share of the frame) of each label present (area above 0), largest area first.

    ``areas[i]`` is the pixel count of ``labels[i]`` (label id ``i + 1``) in a frame of ``pixels`` pixels; ties
    keep the query order. A share under 1 % reads ``<1%``.
    """
    if len(areas) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(areas)} areas")
    if pixels <= 0:
        raise ValueError(f"a frame of {pixels} pixels has no legend")
    present = sorted((index for index, area in enumerate(areas) if area > 0), key=lambda index: -int(areas[index]))
    entries = []
    for index in present:
        percent = 100.0 * int(areas[index]) / pixels
        entries.append((index + 1, labels[index], "<1%" if percent < 1.0 else f"{round(percent)}%"))
    return entries


@functools.lru_cache(maxsize=16)
def _ink_extent(scale: float, thickness: int) -> tuple[int, int]:
    """(ascent, descent): how many pixel rows ``putText``'s ink reaches above and below the baseline over every
    printable ASCII glyph. ``getTextSize``'s height stops at the capitals in OpenCV 4's Hershey fonts, and
    brackets and bars reach higher."""
    (width, height), below = cv2.getTextSize(_ASCII, _FONT, scale, thickness)
    margin = height + below + 2 * thickness + 4
    canvas = np.zeros((height + 2 * margin, width + 2 * margin), dtype=np.uint8)
    baseline = margin + height
    cv2.putText(canvas, _ASCII, (margin, baseline), _FONT, scale, 255, thickness, cv2.LINE_AA)
    rows = np.nonzero(canvas.any(axis=1))[0]
    return baseline - int(rows[0]), int(rows[-1]) - baseline


def _fit(text: str, width: int, scale: float, thickness: int) -> str | None:
    """``text``, or its longest prefix ending in ``..``, that is at most ``width`` pixels wide; None if none is."""
    if cv2.getTextSize(text, _FONT, scale, thickness)[0][0] <= width:
        return text
    for end in range(len(text) - 1, 0, -1):
        shortened = text[:end].rstrip() + ".."
        if cv2.getTextSize(shortened, _FONT, scale, thickness)[0][0] <= width:
            return shortened
    return None


def draw_legend(
    image: np.ndarray, labels: Sequence[str], areas: Sequence[int] | np.ndarray, colours: np.ndarray
) -> np.ndarray:
    """Draw a colour key of the labels present in ``image`` into its top-left corner, in place.

    ``areas[i]`` is the pixel count of ``labels[i]`` in the image, whose colour is ``colours[i + 1]``. Labels
    with no pixels are left out; the others are listed largest first, each with its share of the frame where
    the row has room for it, and a last row counts the labels that do not fit in the image's height. The text
    scales with the image's short side, and each row's dark box holds all of its text's ink, with a margin.
    """
    height, width = image.shape[:2]
    entries = legend_entries(labels, areas, height * width)
    if not entries:
        return image
    scale = min(3.0, max(0.35, min(height, width) / 800))
    thickness = max(1, round(scale * 1.5))
    pad = max(2, round(4 * scale))
    # Rows as tall as the ink of every ASCII glyph and the font's own measure of each label (other scripts), so
    # no glyph leaves its box.
    ascent, descent = _ink_extent(scale, thickness)
    for _, label, _ in entries:
        (_, above), below = cv2.getTextSize(label, _FONT, scale, thickness)
        ascent, descent = max(ascent, above), max(descent, below)
    text_height = ascent + descent + 1
    row_height = text_height + 2 * pad
    gap = max(1, pad // 2)
    swatch = text_height
    rows = (height - 2 * pad + gap) // (row_height + gap)
    text_left = pad + pad + swatch + pad
    room = width - pad - text_left - pad  # text width that keeps the box inside the image
    if rows < 1 or room < 1:
        return image
    shown: list[tuple[int | None, str]] = []
    for label_id, label, share in entries[: rows if len(entries) <= rows else rows - 1]:
        text = _fit(f"{label} {share}", room, scale, thickness)
        if text is None or text.endswith(".."):  # no room for the share: the label alone
            text = _fit(label, room, scale, thickness)
        if text is not None:
            shown.append((label_id, text))
    if len(entries) > rows:
        more = _fit(f"+{len(entries) - len(shown)} more", room, scale, thickness)
        if more is not None:
            shown.append((None, more))
    for row, (label_id, text) in enumerate(shown):
        top = pad + row * (row_height + gap)
        (text_width, _), _ = cv2.getTextSize(text, _FONT, scale, thickness)
        cv2.rectangle(image, (pad, top), (text_left + text_width + pad - 1, top + row_height - 1), _BOX, -1)
        if label_id is not None:
            colour = tuple(int(c) for c in colours[label_id])
            cv2.rectangle(image, (2 * pad, top + pad), (2 * pad + swatch - 1, top + pad + swatch - 1), colour, -1)
        baseline = top + pad + ascent
        cv2.putText(image, text, (text_left, baseline), _FONT, scale, _TEXT, thickness, cv2.LINE_AA)
    return image


def draw_overlay(
    image_rgb: np.ndarray,
    label_map: np.ndarray,
    labels: Sequence[str],
    areas: Sequence[int] | np.ndarray,
    alpha: float = 0.5,
    legend: bool = True,
) -> np.ndarray:
    """An RGB overlay of ``label_map`` on ``image_rgb`` (label i+1 is ``labels[i]``, covering ``areas[i]``
    pixels), with a legend of the labels present."""
    colours = palette(len(labels))
    overlay = blend(image_rgb, label_map, colours, alpha)
    return draw_legend(overlay, labels, areas, colours) if legend and labels else overlay

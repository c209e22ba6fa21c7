"""Colour overlays of label maps, with a legend, for RViz and for files."""

from __future__ import annotations

import colorsys
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


def draw_legend(image: np.ndarray, labels: Sequence[str], colours: np.ndarray) -> np.ndarray:
    """Draw a colour key of ``labels`` (label i has ``colours[i + 1]``) into the top-left corner, in place."""
    height = image.shape[0]
    scale = max(0.35, min(1.0, height / 900))
    line = round(22 * scale) + 4
    rows = max(1, (height - 8) // line)
    truncated = len(labels) > rows
    shown = [*labels[: rows - 1], f"+{len(labels) - rows + 1} more"] if truncated else list(labels)
    for row, text in enumerate(shown):
        top = 4 + row * line
        (text_width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(image, (4, top), (4 + line + text_width + 8, top + line - 2), (0, 0, 0), thickness=-1)
        if not (truncated and row == len(shown) - 1):
            colour = tuple(int(c) for c in colours[row + 1])
            cv2.rectangle(image, (6, top + 2), (2 + line, top + line - 4), colour, thickness=-1)
        cv2.putText(
            image, text, (line + 6, top + line - 7), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
        )
    return image


def draw_overlay(
    image_rgb: np.ndarray,
    label_map: np.ndarray,
    labels: Sequence[str],
    alpha: float = 0.5,
    legend: bool = True,
) -> np.ndarray:
    """An RGB overlay of ``label_map`` on ``image_rgb`` (label i+1 is ``labels[i]``), with a legend."""
    colours = palette(len(labels))
    overlay = blend(image_rgb, label_map, colours, alpha)
    return draw_legend(overlay, labels, colours) if legend and labels else overlay

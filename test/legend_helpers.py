"""Reading an overlay's legend back: which labels it shows, top to bottom, by their colour swatches."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def legend_order(image: np.ndarray, colours: np.ndarray, label_ids: Iterable[int]) -> list[int]:
    """The ids among ``label_ids`` whose exact colour (``colours[id]``) covers 4 or more pixels of ``image``, by
    the mean row of those pixels: the legend's swatches from the top, when nothing else in the image has exactly
    a label's colour (a blended or grey background)."""
    rows = {}
    for label_id in label_ids:
        ys, _ = np.nonzero((image == colours[label_id]).all(axis=-1))
        if len(ys) >= 4:
            rows[label_id] = float(ys.mean())
    return sorted(rows, key=rows.__getitem__)

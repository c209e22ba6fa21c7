"""temporal_smoothing (a moving average of the class probabilities over frames, restarted on any change) and
heatmap_query (one query's probability per pixel), on a random-weight ViT-S-16."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.core.temporal import ProbabilityEMA, blend, flicker

# MaskCLIP: with random weights its labels vary over the frame and with noise (NACLIP's would not).
BASE = SegmenterConfig(templates="none", short_side=64, method="maskclip")
QUERIES = "cat, dog, car, tree, road"
CAR = 3
SCALE = 40.0


@pytest.fixture(scope="module")
def shared_segmenter() -> Segmenter:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Segmenter(ModelConfig(name="ViT-S-16", random_init=True, device="cpu"), BASE)


@pytest.fixture
def segmenter(shared_segmenter: Segmenter) -> Segmenter:
    shared_segmenter.update_config(**dataclasses.asdict(BASE))
    shared_segmenter.set_queries(QUERIES)
    return shared_segmenter


def scene(height: int = 48, width: int = 64) -> np.ndarray:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 2] = (200, 40, 40)
    image[height // 3 :, width // 3 :] = (30, 160, 60)
    return image


def noisy(image: np.ndarray, seed: int, sigma: float = 12.0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits * SCALE, dim=1)


def test_the_average_starts_with_the_first_frame_and_blends_the_next() -> None:
    ema = ProbabilityEMA()
    first, second = torch.randn(1, 4, 3, 5) / 10, torch.randn(1, 4, 3, 5) / 10
    out, average = blend(first, *ema.past(["front"], (48, 64), (4, 3, 5), 0.75, torch.device("cpu")), SCALE)
    torch.testing.assert_close(probabilities(out), probabilities(first))
    ema.keep(["front"], (48, 64), average)
    out, _ = blend(second, *ema.past(["front"], (48, 64), (4, 3, 5), 0.75, torch.device("cpu")), SCALE)
    torch.testing.assert_close(probabilities(out), 0.75 * probabilities(first) + 0.25 * probabilities(second))


@pytest.mark.parametrize("change", ["size", "clear", "other stream"])
def test_the_average_restarts_after_a_change(change: str) -> None:
    ema = ProbabilityEMA()
    cpu = torch.device("cpu")
    first, second = torch.randn(1, 4, 3, 5) / 10, torch.randn(1, 4, 3, 5) / 10
    _, average = blend(first, *ema.past(["front"], (48, 64), (4, 3, 5), 0.75, cpu), SCALE)
    ema.keep(["front"], (48, 64), average)
    stream = "front"
    if change == "size":
        _, average = blend(torch.randn(1, 4, 6, 10), *ema.past(["front"], (96, 128), (4, 6, 10), 0.75, cpu), SCALE)
        ema.keep(["front"], (96, 128), average)
    elif change == "clear":
        ema.clear()
    else:
        stream = "left"  # another camera's frame of the same size starts its own average
    out, _ = blend(second, *ema.past([stream], (48, 64), (4, 3, 5), 0.75, cpu), SCALE)
    torch.testing.assert_close(probabilities(out), probabilities(second))


def test_temporal_smoothing_must_be_below_one() -> None:
    with pytest.raises(ConfigError, match=r"temporal_smoothing must be in \[0, 1\)"):
        SegmenterConfig(temporal_smoothing=1.0)


def test_smoothing_carries_over_frames_and_restarts_after_new_queries_or_sizes(segmenter: Segmenter) -> None:
    segmenter.update_config(temporal_smoothing=0.8)
    first, second = noisy(scene(), 1, 60.0), noisy(scene(), 2, 60.0)
    alone = segmenter.segment(second).confidence

    segmenter.set_queries(QUERIES)
    segmenter.segment(first)
    after_first = segmenter.segment(second).confidence
    assert not np.allclose(after_first, alone)

    segmenter.segment(first)
    segmenter.set_queries(QUERIES)
    np.testing.assert_array_equal(segmenter.segment(second).confidence, alone)

    segmenter.segment(first)
    segmenter.segment(scene(32, 40))
    np.testing.assert_array_equal(segmenter.segment(second).confidence, alone)

    segmenter.segment(first)
    segmenter.warmup([(48, 64)])
    np.testing.assert_array_equal(segmenter.segment(second).confidence, alone)


def test_smoothing_lowers_the_flicker_of_a_static_noisy_scene(segmenter: Segmenter) -> None:
    frames = [noisy(scene(), seed, 30.0) for seed in range(8)]
    measured = {}
    for weight in (0.0, 0.8):
        segmenter.update_config(temporal_smoothing=weight)
        measured[weight] = flicker([segmenter.segment(frame).label_map for frame in frames])
    assert measured[0.0] > 0.0, "the noise must make the unsmoothed labels flicker for this test to mean anything"
    assert measured[0.8] < measured[0.0]


@pytest.mark.parametrize("background", ["", "sky, wall"])
def test_the_heatmap_is_the_named_querys_probability(segmenter: Segmenter, background: str) -> None:
    segmenter.update_config(heatmap_query="Car", background_words=tuple(w for w in background.split(", ") if w))
    result = segmenter.segment(noisy(scene(), 3, 30.0))
    assert result.heatmap is not None
    assert result.heatmap.shape == (48, 64) and result.heatmap.dtype == np.float32
    car = result.label_map == CAR
    assert car.any() and not car.all()
    # Where "car" wins, its probability is the winning one; elsewhere it is at most the winner's. The heat map
    # sums the softmax's denominator in its own order (labels.query_probability): equal to float rounding.
    np.testing.assert_allclose(result.heatmap[car], result.confidence[car], rtol=1e-5, atol=1e-6)
    assert np.all(result.heatmap[~car] <= result.confidence[~car] + 1e-6)
    assert np.all(result.heatmap >= 0) and np.all(result.heatmap <= 1)


def test_no_heatmap_without_a_matching_query(segmenter: Segmenter) -> None:
    assert segmenter.segment(scene()).heatmap is None
    segmenter.update_config(heatmap_query="door handle")
    result = segmenter.segment(scene(), overlay_alpha=0.5)
    assert result.heatmap is None and result.overlay is not None


def test_heatmap_and_overlay_come_together(segmenter: Segmenter) -> None:
    segmenter.update_config(heatmap_query="car")
    result = segmenter.segment(scene(), overlay_alpha=0.5)
    assert result.overlay is not None and result.overlay.shape == (48, 64, 3)
    assert result.heatmap is not None and result.heatmap.shape == (48, 64)
    car = result.label_map == CAR
    np.testing.assert_allclose(result.heatmap[car], result.confidence[car], rtol=1e-5, atol=1e-6)


def test_flicker_is_the_mean_fraction_of_changed_labels() -> None:
    a = np.zeros((2, 5), np.uint8)
    b = a.copy()
    b[0, :2] = 1
    assert flicker([a, b, b]) == pytest.approx((0.2 + 0.0) / 2)

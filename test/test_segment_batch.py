"""Segmenter.segment_batch: several frames through the pipeline together give what each frame gives alone (label
maps identical, confidence to float rounding) for every method, sliding windows and PAMR; temporal smoothing
keeps one average per stream. On a random-weight ViT-S-16."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from zeroseg_ros.core.config import METHODS, ModelConfig, SegmenterConfig
from zeroseg_ros.core.errors import InvalidImageError
from zeroseg_ros.core.segmenter import SegmentationResult, Segmenter, plan_passes

BASE = SegmenterConfig(templates="none", short_side=64, background_words=(), probability_threshold=0.0)
# More phrases than candidate slots: the candidate labelling runs, not only the exact one.
QUERIES = "cat, dog, car, tree, road, sky, wall, floor, door, window"
CONFIDENCE_TOLERANCE = 5e-6  # batched products sum in another order than single ones: float rounding only

OPTIONS = {
    "single pass": {},
    "sliding windows": {"slide_crop": 32, "slide_stride": 16},
    "PAMR at the input": {"pamr": True},
    "PAMR at the frame": {"pamr": True, "pamr_resolution": "frame"},
}


@pytest.fixture(scope="module")
def shared_segmenter() -> Segmenter:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Segmenter(ModelConfig(name="ViT-S-16", random_init=True, device="cpu", precision="fp32"), BASE)


@pytest.fixture
def segmenter(shared_segmenter: Segmenter) -> Segmenter:
    shared_segmenter.update_config(**dataclasses.asdict(BASE))
    shared_segmenter.set_queries(QUERIES)
    return shared_segmenter


def frames(count: int, height: int = 48, width: int = 64, seed: int = 0) -> list[np.ndarray]:
    generator = np.random.default_rng(seed)
    return [generator.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def assert_same(batched: SegmentationResult, alone: SegmentationResult) -> None:
    assert batched.labels == alone.labels
    np.testing.assert_array_equal(batched.label_map, alone.label_map)
    np.testing.assert_allclose(batched.confidence, alone.confidence, rtol=0, atol=CONFIDENCE_TOLERANCE)
    np.testing.assert_array_equal(batched.areas, alone.areas)
    np.testing.assert_allclose(batched.scores, alone.scores, rtol=0, atol=CONFIDENCE_TOLERANCE)
    for batched_extra, alone_extra in ((batched.overlay, alone.overlay), (batched.heatmap, alone.heatmap)):
        assert (batched_extra is None) == (alone_extra is None)
    if alone.heatmap is not None:
        np.testing.assert_allclose(batched.heatmap, alone.heatmap, rtol=0, atol=CONFIDENCE_TOLERANCE)
    if alone.overlay is not None:
        # A pixel whose confidence moved by rounding may round its blended colour the other way: off by one.
        assert np.abs(batched.overlay.astype(int) - alone.overlay.astype(int)).max() <= 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_a_batch_equals_each_frame_alone(segmenter: Segmenter, method: str, options: dict[str, object]) -> None:
    segmenter.update_config(method=method, **options)
    images = frames(3)
    alone = [segmenter.segment(image) for image in images]
    batched = segmenter.segment_batch(images)
    assert len(batched) == 3
    for result, expected in zip(batched, alone, strict=True):
        assert_same(result, expected)


def test_channel_orders_overlay_and_heatmap_per_frame(segmenter: Segmenter) -> None:
    segmenter.update_config(heatmap_query="car")
    images = frames(3, seed=1)
    orders = ["rgb", "bgr", "rgb"]
    alone = [segmenter.segment(image, order, overlay_alpha=0.5) for image, order in zip(images, orders, strict=True)]
    batched = segmenter.segment_batch(images, orders, overlay_alpha=0.5)
    for result, expected in zip(batched, alone, strict=True):
        assert_same(result, expected)
    assert not np.array_equal(batched[1].overlay, segmenter.segment(images[1], "rgb", 0.5).overlay)


def test_frames_of_other_sizes_run_in_passes_of_their_own_and_come_back_in_order(segmenter: Segmenter) -> None:
    small, large = frames(2, 48, 64, seed=2), frames(2, 64, 80, seed=3)
    images = [small[0], large[0], small[1], large[1]]
    batched = segmenter.segment_batch(images)
    assert [r.label_map.shape for r in batched] == [(48, 64), (64, 80), (48, 64), (64, 80)]
    for result, image in zip(batched, images, strict=True):
        assert_same(result, segmenter.segment(image))


def test_temporal_smoothing_keeps_one_average_per_stream(segmenter: Segmenter) -> None:
    segmenter.update_config(temporal_smoothing=0.8)
    front, left = frames(3, seed=4), frames(3, seed=5)
    expected = {}
    for name, stream in (("front", front), ("left", left)):
        segmenter.set_queries(QUERIES)  # a fresh average: the default stream then sees only this camera
        expected[name] = [segmenter.segment(image) for image in stream]
    segmenter.set_queries(QUERIES)
    for index in range(3):
        batched = segmenter.segment_batch([front[index], left[index]], streams=["front", "left"])
        assert_same(batched[0], expected["front"][index])
        assert_same(batched[1], expected["left"][index])
    # The averages did carry over: the last frame differs from that frame alone.
    segmenter.set_queries(QUERIES)
    assert not np.allclose(segmenter.segment(front[2]).confidence, expected["front"][2].confidence)


def test_without_streams_the_frames_are_successive_frames_of_the_default_stream(segmenter: Segmenter) -> None:
    segmenter.update_config(temporal_smoothing=0.8)
    images = frames(3, seed=6)
    expected = [segmenter.segment(image) for image in images]
    segmenter.set_queries(QUERIES)
    for result, alone in zip(segmenter.segment_batch(images), expected, strict=True):
        assert_same(result, alone)


def test_passes_group_sizes_and_keep_each_streams_order() -> None:
    a, b = (48, 64), (64, 80)
    assert plan_passes([a, b, a, b], ["x", "y", "z", "w"], ordered=True) == [[0, 2], [1, 3]]
    assert plan_passes([a, a, a], [None, None, None], ordered=False) == [[0, 1, 2]]
    # With smoothing a stream's second frame waits for its first: every open pass runs before it.
    assert plan_passes([a, b, a, a], ["x", "y", "z", "x"], ordered=True) == [[0, 2], [1], [3]]
    assert plan_passes([a, a, a], [None, None, None], ordered=True) == [[0], [1], [2]]


def test_bad_input_refuses_the_batch_before_any_work(segmenter: Segmenter) -> None:
    assert segmenter.segment_batch([]) == []
    good = frames(1)[0]
    with pytest.raises(InvalidImageError, match="uint8"):
        segmenter.segment_batch([good, good.astype(np.float32)])
    with pytest.raises(InvalidImageError, match="channel_order"):
        segmenter.segment_batch([good, good], ["rgb", "hsv"])
    with pytest.raises(ValueError, match="as many channel orders and streams"):
        segmenter.segment_batch([good, good], streams=["front"])


def test_warmup_runs_each_batch_size_and_leaves_no_average(segmenter: Segmenter) -> None:
    segmenter.update_config(temporal_smoothing=0.8)
    image = frames(1, seed=7)[0]
    alone = segmenter.segment(image)
    segmenter.set_queries(QUERIES)
    segmenter.segment(frames(1, seed=8)[0])
    segmenter.warmup([(48, 64)], batch_sizes=(1, 2))
    assert_same(segmenter.segment(image), alone)

"""The naive baseline computes what the pipeline computes (so the benchmark compares equal work)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.dense import DenseCLIPEncoder
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.tools.bench.naive import NaivePipeline

QUERIES = "cat, dog|puppy, car, tree"


@pytest.fixture(scope="module")
def pair() -> tuple[NaivePipeline, Segmenter]:
    model = ModelConfig(name="ViT-B-16", random_init=True, device="cpu", precision="fp32")
    config = SegmenterConfig(method="maskclip", templates="short", short_side=160)
    torch.manual_seed(0)  # the same seed gives both the same random weights
    naive = NaivePipeline(model, config, QUERIES)
    torch.manual_seed(0)
    segmenter = Segmenter(model, config)
    segmenter.set_queries(QUERIES)
    return naive, segmenter


def test_naive_features_equal_maskclip_encoder(pair: tuple[NaivePipeline, Segmenter]) -> None:
    naive, _ = pair
    pixels = torch.randn(1, 3, 160, 208, generator=torch.Generator().manual_seed(1))
    expected = DenseCLIPEncoder(naive.model.visual, "maskclip")(pixels)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(naive.encode_image(pixels), expected, atol=1e-4)


def test_naive_text_equals_cached_text_encoder(pair: tuple[NaivePipeline, Segmenter]) -> None:
    naive, segmenter = pair
    phrases = [p for q in naive.queries for p in q.synonyms]
    np.testing.assert_allclose(naive.encode_text(), segmenter.text_encoder.encode(phrases).numpy(), atol=1e-5)


def test_naive_label_map_agrees_with_segmenter(pair: tuple[NaivePipeline, Segmenter]) -> None:
    naive, segmenter = pair
    rng = np.random.default_rng(2)
    # Smooth content, so that the uint8 rounding of PIL's resize moves few decisions.
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(small).resize((200, 150)))
    ours = segmenter.segment(image).label_map
    theirs = naive.segment(image).label_map
    assert theirs.shape == ours.shape == (150, 200)
    assert len(np.unique(ours)) > 1, "degenerate test: one label everywhere"
    assert (theirs == ours).mean() > 0.97, f"agreement {(theirs == ours).mean():.4f}"


def test_naive_rejects_what_it_does_not_implement() -> None:
    with pytest.raises(ConfigError):
        NaivePipeline(ModelConfig(name="ViT-B-16", random_init=True, device="cpu"), SegmenterConfig(pamr=True), "cat")

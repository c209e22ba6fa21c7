"""One target at a time (issue 14): with the default settings a lone query wins only the pixels that match it.

The scoring stage runs on hand-made embeddings: an image encoder stand-in returns three chosen patch
features (one per output pixel) and the text encoder returns chosen unit vectors per phrase, so the expected
probabilities are computed here from the formula, ``softmax(logit_scale * cos)`` over every phrase.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pytest
import torch

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.core.vocab import expand_background_words, load_vocabulary
from zeroseg_ros.tools.evaluation.cli import protocol_from_args, register
from zeroseg_ros.tools.evaluation.datasets import DATASETS
from zeroseg_ros.tools.evaluation.presets import PRESETS, resolve_protocol

DIM = 64
QUERY = "door handle"
BACKGROUND = expand_background_words(("@background",))
MATCH, WEAK = 0.30, 0.15  # cosines of the order CLIP gives to matching and to unrelated patch/text pairs


def _unit(index: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(index), DIM).float()


# Phrase vectors: the query on axis 0, background word i on axis i + 1 (all orthogonal).
PHRASE_AXIS = {QUERY: 0, **{word: index + 1 for index, word in enumerate(BACKGROUND)}}


def _patch(query: float, background: dict[str, float]) -> torch.Tensor:
    """A unit patch feature with the given cosines to the query and each background word (default WEAK)."""
    vector = query * _unit(0)
    for word in BACKGROUND:
        vector += background.get(word, WEAK) * _unit(PHRASE_AXIS[word])
    return vector + (1.0 - float(vector @ vector)) ** 0.5 * _unit(DIM - 1)


PATCHES = {
    "query": _patch(MATCH, {}),  # looks like a door handle
    "wall": _patch(WEAK, {"wall": MATCH}),  # looks like a wall
    "nothing": _patch(WEAK + 0.01, {}),  # like nothing in particular: a hair closer to the query than the rest
}


class HandMadePatches:
    """Image encoder stand-in: a 1 x 3 patch grid holding ``PATCHES`` whatever the pixels."""

    input_size = (16, 48)
    method = SegmenterConfig().method  # the default settings' method, which the segmenter checks
    cuda_graph_safe = False

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.stack(list(PATCHES.values()), dim=1).view(1, DIM, 1, 3)


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ModelConfig(name="ViT-S-16", random_init=True, device="cpu")
        segmenter = Segmenter(model, SegmenterConfig(), image_encoder=HandMadePatches())
    segmenter.text_encoder.encode = lambda phrases, progress=None: torch.stack([_unit(PHRASE_AXIS[p]) for p in phrases])
    return segmenter


def _segment(segmenter: Segmenter, **changes: object):
    segmenter.update_config(**{**SegmenterConfig().__dict__, **changes})
    segmenter.set_queries(QUERY)
    return segmenter.segment(np.zeros((1, 3, 3), dtype=np.uint8))  # one output pixel per patch


def _expected_probabilities(patch: torch.Tensor, phrases: list[str], scale: float) -> np.ndarray:
    cosines = torch.stack([patch @ _unit(PHRASE_AXIS[p]) for p in phrases])
    return torch.softmax(scale * cosines, dim=0).numpy()


def test_by_default_a_lone_query_wins_only_the_patch_that_matches_it(segmenter):
    result = _segment(segmenter)
    assert SegmenterConfig().background_words == ("@background",)
    assert result.label_map.tolist() == [[1, 0, 0]]  # query, wall (background), nothing (background)

    scale = SegmenterConfig().logit_scale
    phrases = [*BACKGROUND, QUERY]
    query_probability = _expected_probabilities(PATCHES["query"], phrases, scale)[-1]
    assert result.confidence[0, 0] == pytest.approx(query_probability, rel=1e-4)
    wall_probability = _expected_probabilities(PATCHES["wall"], phrases, scale)[BACKGROUND.index("wall")]
    assert result.confidence[0, 1] == pytest.approx(wall_probability, rel=1e-4)
    # The patch like nothing spreads its probability over every phrase: its best is far below the matches,
    # under the default threshold, so it is background rather than a door handle.
    nothing = _expected_probabilities(PATCHES["nothing"], phrases, scale)
    assert nothing.max() == nothing[-1] < SegmenterConfig().probability_threshold < query_probability
    assert result.confidence[0, 2] == pytest.approx(nothing[-1], rel=1e-4)
    # The lone query's mean score is its probability against the scene, not 1 by construction.
    assert result.areas.tolist() == [1]
    assert result.scores[0] == pytest.approx(query_probability, rel=1e-4) and result.scores[0] < 0.99


def test_without_background_words_a_lone_query_wins_every_pixel_with_probability_one(segmenter):
    result = _segment(segmenter, background_words=())  # what issue 14 saw; still expressible on purpose
    assert result.label_map.tolist() == [[1, 1, 1]]
    np.testing.assert_array_equal(result.confidence, 1.0)


def test_a_query_wins_over_the_background_word_of_the_same_name(segmenter):
    segmenter.update_config(**SegmenterConfig().__dict__)
    segmenter.set_queries("wall")
    result = segmenter.segment(np.zeros((1, 3, 3), dtype=np.uint8))
    assert result.label_map[0, 1] == 1  # the wall patch is the query's, not background
    assert segmenter._state.embeddings.shape[0] == len(BACKGROUND)  # 25 background words and the query


def test_the_background_preset_holds_generic_scene_words():
    words = load_vocabulary("background")
    assert {"sky", "wall", "tree", "road", "floor", "building", "ceiling", "grass"} <= set(words)
    # The published VOC21 background class (SCLIP's cls_voc21.txt, first line), one word a line.
    assert "|".join(words) == load_vocabulary("voc21")[0]
    assert expand_background_words(("@background", "carpet", "sky")) == (*words, "carpet")
    with pytest.raises(ConfigError, match="unknown vocabulary"):
        SegmenterConfig(background_words=("@nothing-like-this",))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_evaluation_presets_keep_their_published_background_handling(preset, dataset):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["eval", "--root", "r", "--out", "o", "--dataset", dataset, "--preset", preset])
    for protocol in (resolve_protocol(preset, dataset), protocol_from_args(args)):  # the library and the CLI
        classes = load_vocabulary(protocol.vocabulary)
        published = tuple(classes[0].split("|")) if DATASETS[dataset].has_background else ()
        assert protocol.segmenter.background_words == published  # never the segmenter's @background default
        threshold = PRESETS[preset][dataset].get("probability_threshold", 0.0)
        assert protocol.segmenter.probability_threshold == threshold  # nor its default threshold

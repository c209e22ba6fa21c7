"""The whole core pipeline on a random-weight ViT-B-16: shapes, dtypes, label semantics and bad input."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.errors import ConfigError, InvalidImageError, InvalidQueryError
from zeroseg_ros.core.pamr import pamr
from zeroseg_ros.core.segmenter import Segmenter, pack_outputs, unpack_outputs

# Queries only, no threshold: these tests check how queries compete (test_one_target.py checks the defaults).
BASE = SegmenterConfig(templates="none", short_side=96, background_words=(), probability_threshold=0.0)


@pytest.fixture(scope="module")
def shared_segmenter():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Segmenter(ModelConfig(random_init=True, device="cpu", precision="fp32"), BASE)


@pytest.fixture
def segmenter(shared_segmenter):
    shared_segmenter.set_queries("cat, dog, car")  # first: a test may have left more labels than BASE allows
    shared_segmenter.update_config(**dataclasses.asdict(BASE))
    return shared_segmenter


def _image(height=120, width=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_result_shapes_dtypes_and_consistent_statistics(segmenter):
    result = segmenter.segment(_image())
    assert result.labels == ("cat", "dog", "car")
    assert result.label_map.shape == (120, 160) and result.label_map.dtype == np.uint8
    assert result.confidence.shape == (120, 160) and result.confidence.dtype == np.float32
    assert result.label_map.max() <= 3
    assert ((result.confidence > 0) & (result.confidence <= 1)).all()
    for label in (1, 2, 3):
        pixels = result.label_map == label
        assert result.areas[label - 1] == pixels.sum()
        expected = result.confidence[pixels].mean() if pixels.any() else 0.0
        assert result.scores[label - 1] == pytest.approx(expected, rel=1e-4)
    assert {"preprocess", "encode_image", "similarity", "postprocess", "total"} <= set(result.timings_ms)


def test_bgr_input_equals_rgb_of_swapped_channels(segmenter):
    image = _image()
    rgb = segmenter.segment(image, channel_order="rgb")
    bgr = segmenter.segment(image[:, :, ::-1].copy(), channel_order="bgr")
    np.testing.assert_array_equal(rgb.label_map, bgr.label_map)


def test_grey_image_is_accepted(segmenter):
    assert segmenter.segment(_image()[:, :, 0]).label_map.shape == (120, 160)


def test_synonyms_score_as_the_best_phrase(segmenter):
    image = _image(seed=1)
    separate = segmenter.segment(image)  # cat, dog, car
    segmenter.set_queries("cat|dog, car")
    merged = segmenter.segment(image)
    np.testing.assert_array_equal(merged.label_map, np.where(separate.label_map == 3, 2, 1))
    np.testing.assert_allclose(merged.confidence, separate.confidence, rtol=1e-5)


def test_probability_threshold_turns_uncertain_pixels_into_background(segmenter):
    image = _image(seed=2)
    plain = segmenter.segment(image)
    threshold = float(np.median(plain.confidence))
    segmenter.update_config(probability_threshold=threshold)
    thresholded = segmenter.segment(image)
    below = plain.confidence < threshold
    assert (thresholded.label_map[below] == 0).all()
    np.testing.assert_array_equal(thresholded.label_map[~below], plain.label_map[~below])


def test_background_words_map_to_label_zero(segmenter):
    image = _image(seed=3)
    segmenter.set_queries("cat, dog, car, wall")
    with_wall = segmenter.segment(image)
    segmenter.set_queries("cat, dog, car")
    segmenter.update_config(background_words=("wall",))
    background = segmenter.segment(image)
    np.testing.assert_array_equal(background.label_map, np.where(with_wall.label_map == 4, 0, with_wall.label_map))
    assert segmenter.labels == ("cat", "dog", "car")


def test_a_query_wins_over_a_background_word_of_the_same_name(segmenter):
    segmenter.update_config(background_words=("cat", "sky"))
    result = segmenter.segment(_image())
    assert result.labels == ("cat", "dog", "car")
    assert segmenter._state.embeddings.shape[0] == 4  # sky, cat, dog, car


def test_more_than_255_queries_give_uint16_labels(segmenter):
    segmenter.update_config(max_queries=300)
    segmenter.set_queries([f"thing {i}" for i in range(300)])
    result = segmenter.segment(_image(64, 64))
    assert result.label_map.dtype == np.uint16
    assert result.areas.shape == (300,) and result.areas.sum() == 64 * 64


@pytest.mark.parametrize("changes", [{"slide_crop": 64, "slide_stride": 32}, {"pamr": True}])
def test_sliding_window_and_pamr_keep_output_contract(segmenter, changes):
    segmenter.update_config(short_side=128, **changes)
    result = segmenter.segment(_image(100, 180))
    assert result.label_map.shape == (100, 180)
    assert result.areas.sum() == 100 * 180


def _blocks(height=100, width=150, seed=6):
    """Flat colour blocks with a little noise: edges for PAMR to follow, and a frame size that is no multiple of
    16, so that the model input (64 x 96 at short side 64) and the frame differ."""
    generator = np.random.default_rng(seed)
    colours = generator.integers(0, 256, (4, 6, 3))
    image = np.kron(colours, np.ones((25, 25, 1)))[:height, :width] + generator.normal(0, 8, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _pamr_probabilities(segmenter, image, resolution):
    """Each phrase's probability per frame pixel with PAMR, rebuilt here from the segmenter's patch logits: at
    ``input``, PAMR on the logits and normalised pixels at the model input's size, then bilinear to the frame;
    at ``frame``, as NACLIP v2's predict (sinahmr/NACLIP@0cac3a6 naclip.py): patch logits to the model input,
    then to the frame, PAMR there with the normalised input upsampled bilinearly to the frame as guide."""
    height, width = image.shape[:2]
    size = segmenter.model_input_size(height, width)
    with torch.inference_mode():
        pixels = segmenter._normalise(torch.from_numpy(image), size)
        logits = segmenter._patch_logits(pixels, segmenter._state.embeddings)
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        guide = pixels
        if resolution == "frame":
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            guide = F.interpolate(pixels.float(), size=(height, width), mode="bilinear", align_corners=False)
        refined = pamr(guide, logits, iterations=10, dilations=(8, 16))
        if resolution == "input":
            refined = F.interpolate(refined, size=(height, width), mode="bilinear", align_corners=False)
        return torch.softmax(refined[0].float() * segmenter.config.logit_scale, dim=0).numpy()


# At the frame's resolution the labels come from the frame-sized logits as they are, exactly, also where the
# candidate path would otherwise be taken (more than 8 phrases, exact_labels off).
@pytest.mark.parametrize(("resolution", "exact"), [("input", True), ("frame", True), ("frame", False)])
def test_pamr_at_each_resolution_equals_pamr_rebuilt_step_by_step(segmenter, resolution, exact):
    segmenter.set_queries("cat, dog, car, tree, road, sky, wall, person, bicycle, grass")
    segmenter.update_config(
        short_side=64, pamr=True, pamr_resolution=resolution, exact_labels=exact, heatmap_query="dog"
    )
    image = _blocks()
    assert segmenter.model_input_size(*image.shape[:2]) == (64, 96)
    result = segmenter.segment(image)
    probabilities = _pamr_probabilities(segmenter, image, resolution)
    ranked = np.sort(probabilities, axis=0)
    clear = ranked[-1] - ranked[-2] > 1e-4  # ties may go either way in float32
    np.testing.assert_array_equal(result.label_map[clear], probabilities.argmax(axis=0)[clear] + 1)
    np.testing.assert_allclose(result.confidence, probabilities.max(axis=0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(result.heatmap, probabilities[1], rtol=0, atol=1e-5)


def test_pamr_at_the_frame_resolution_differs_from_pamr_at_the_input_one(segmenter):
    segmenter.update_config(short_side=64, exact_labels=True)
    image = _blocks()
    unrefined = segmenter.segment(image).confidence
    segmenter.update_config(pamr=True)
    at_input = segmenter.segment(image).confidence
    segmenter.update_config(pamr_resolution="frame")
    at_frame = segmenter.segment(image).confidence
    # Relative to what PAMR changes at all, which depends on the random weights (over 6 seeds: 0.4 to 0.6 of it).
    refinement = np.abs(at_input - unrefined).max()
    assert np.abs(at_frame - at_input).max() > 0.1 * refinement > 0


def test_pamr_resolution_changes_nothing_without_pamr(segmenter):
    segmenter.update_config(short_side=64)
    image = _blocks()
    at_input = segmenter.segment(image)
    segmenter.update_config(pamr_resolution="frame")
    at_frame = segmenter.segment(image)
    np.testing.assert_array_equal(at_frame.label_map, at_input.label_map)
    np.testing.assert_array_equal(at_frame.confidence, at_input.confidence)


def test_pamr_resolution_must_be_input_or_frame():
    with pytest.raises(ConfigError, match=r"pamr_resolution must be one of \('input', 'frame'\), got 'image'"):
        SegmenterConfig(pamr_resolution="image")
    assert SegmenterConfig().pamr_resolution == "input"  # the node's and the segmenter's default


def test_sliding_window_with_one_crop_equals_single_pass(segmenter):
    """When the crop covers the whole resized image, sliding inference is one pass plus two resizes."""
    image = _image(64, 64, seed=5)
    segmenter.update_config(short_side=64, slide_crop=64, slide_stride=32)
    slide = segmenter.segment(image)
    segmenter.update_config(slide_crop=0)
    single = segmenter.segment(image)
    np.testing.assert_array_equal(slide.label_map, single.label_map)


@pytest.mark.parametrize("method", ["naclip", "sclip", "clearclip", "maskclip", "vanilla"])
def test_every_method_runs(segmenter, method):
    segmenter.update_config(method=method)
    assert segmenter.segment(_image(48, 64)).label_map.shape == (48, 64)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10, 3), dtype=np.float32), "uint8"),
        (np.zeros((10, 10, 4), dtype=np.uint8), "H x W x 3"),
        (np.zeros((0, 10, 3), dtype=np.uint8), "empty"),
        (np.zeros((10,), dtype=np.uint8), "H x W x 3"),
        ([[0, 1]], "numpy array"),
    ],
)
def test_bad_images_raise_invalid_image_error(segmenter, image, message):
    with pytest.raises(InvalidImageError, match=message):
        segmenter.segment(image)


def test_huge_images_are_refused_before_any_work(segmenter):
    segmenter.update_config(max_pixels=100 * 100)
    with pytest.raises(InvalidImageError, match="exceeds the limit"):
        segmenter.segment(np.zeros((101, 100, 3), dtype=np.uint8))


def test_a_frame_too_large_for_attention_is_refused_saying_what_to_set(segmenter):
    segmenter.update_config(short_side=0)  # 1080p at its own size: 8040 patches
    with pytest.raises(InvalidImageError, match="lower short_side"):
        segmenter.segment(np.zeros((1080, 1920, 3), dtype=np.uint8))
    segmenter.update_config(short_side=96)
    assert segmenter.segment(np.zeros((1080, 1920, 3), dtype=np.uint8)).label_map.shape == (1080, 1920)


def test_bad_channel_order_and_missing_queries(segmenter):
    with pytest.raises(InvalidImageError, match="channel_order"):
        segmenter.segment(_image(), channel_order="yuv")
    with pytest.raises(InvalidQueryError):
        segmenter.set_queries("  ")
    assert segmenter.labels == ("cat", "dog", "car")  # a rejected query list leaves the previous one in force


def test_max_queries_counts_labels_not_phrases(segmenter):
    segmenter.update_config(max_queries=3, background_words=("sky", "wall"))
    segmenter.set_queries("a1|a2|a3, b1|b2, c1")  # 3 labels, 8 phrases with the background words
    with pytest.raises(InvalidQueryError, match="4 queries exceed max_queries"):
        segmenter.set_queries("a1, b1, c1, d1")


def test_exact_labels_setting_agrees_with_the_candidate_labels(segmenter):
    segmenter.set_queries("cat, dog|puppy, car, tree, road, sky, wall, person, bicycle, grass")  # more than 8
    image = _image(seed=3)
    fast = segmenter.segment(image)
    segmenter.update_config(exact_labels=True)
    exact = segmenter.segment(image)
    assert (fast.label_map == exact.label_map).mean() >= 0.999
    same = fast.label_map == exact.label_map
    assert np.abs(fast.confidence - exact.confidence)[same].max() <= 1e-3
    np.testing.assert_array_equal(exact.areas, np.bincount(exact.label_map.ravel(), minlength=11)[1:])


def test_no_queries_yet_is_a_clear_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = Segmenter(ModelConfig(name="ViT-B-32", random_init=True, device="cpu"), BASE)
    with pytest.raises(InvalidQueryError, match="no queries set"):
        fresh.segment(_image())


@pytest.mark.parametrize(
    "changes",
    [
        {"method": "x"},
        {"probability_threshold": 2.0},
        {"short_side": 8},
        {"slide_crop": 64, "slide_stride": 0},
        {"templates": "many"},
        {"pamr_resolution": "Frame"},
        {"nonsense": 1},
    ],
)
def test_bad_settings_are_config_errors(segmenter, changes):
    with pytest.raises(ConfigError):
        segmenter.update_config(**changes)


class _FixedSizeEncoder:
    """An exported-engine stand-in: the PyTorch encoder behind the ImageEncoder protocol, counting calls."""

    def __init__(self, encoder, input_size):
        self.encoder, self.input_size, self.method, self.calls = encoder, input_size, encoder.method, 0
        self.cuda_graph_safe = True

    def __call__(self, pixels):
        self.calls += 1
        assert tuple(pixels.shape[-2:]) == self.input_size
        return self.encoder(pixels)


def test_an_image_encoder_engine_replaces_the_torch_encoder(segmenter):
    image = _image(96, 128, seed=6)
    reference = segmenter.segment(image)  # short_side 96 -> the model sees 96 x 128
    engine = _FixedSizeEncoder(segmenter._encoder, (96, 128))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_engine = Segmenter(
            ModelConfig(random_init=True, device="cpu", precision="fp32"), BASE, image_encoder=engine
        )
    with_engine._clip = segmenter._clip  # same weights for the text side
    with_engine._text = segmenter._text
    with_engine.set_queries("cat, dog, car")
    result = with_engine.segment(image)
    assert engine.calls == 1
    np.testing.assert_array_equal(result.label_map, reference.label_map)
    assert with_engine.segment(_image(50, 70)).label_map.shape == (50, 70)  # any frame: resized to the engine's input
    with pytest.raises(ConfigError, match="computes method"):
        with_engine.update_config(method="sclip")
    with pytest.raises(ConfigError, match="sliding crops"):
        with_engine.update_config(slide_crop=64, slide_stride=32)


@pytest.mark.parametrize("channel_order", ["rgb", "bgr"])
def test_device_overlay_equals_the_numpy_blend(segmenter, channel_order):
    from zeroseg_ros.core.overlay import blend, palette

    image = _image(seed=7)
    result = segmenter.segment(image, channel_order=channel_order, overlay_alpha=0.4)
    colours = palette(3) if channel_order == "rgb" else palette(3)[:, ::-1]
    expected = blend(image, result.label_map, colours, 0.4)
    assert result.overlay.dtype == np.uint8
    assert np.abs(result.overlay.astype(int) - expected).max() <= 1  # rounding of float32 vs float64
    assert segmenter.segment(image).overlay is None


def test_outputs_packed_for_one_host_copy_unpack_to_the_same_arrays() -> None:
    generator = torch.Generator().manual_seed(0)
    outputs = [
        torch.randint(0, 255, (3, 5), generator=generator).to(torch.uint8),  # label map (odd byte count first)
        torch.rand((3, 5), generator=generator),  # confidence
        torch.rand((4,), generator=generator),  # areas
        torch.randint(-(2**31), 2**31 - 1, (2, 3), generator=generator, dtype=torch.int32),  # a wide label map
        torch.randint(0, 255, (3, 5, 3), generator=generator).to(torch.uint8),  # overlay
    ]
    packed, fields = pack_outputs(outputs)
    assert packed.dtype == torch.uint8 and packed.numel() == sum(t.numel() * t.element_size() for t in outputs)
    assert all(f.offset % torch.empty((), dtype=f.dtype).element_size() == 0 for f in fields)  # aligned views
    for original, unpacked in zip(outputs, unpack_outputs(packed, fields), strict=True):
        assert unpacked.dtype == original.numpy().dtype
        np.testing.assert_array_equal(unpacked, original.numpy())


def test_bf16_on_the_cpu_stays_close_to_fp32():
    def build(precision: str) -> Segmenter:
        torch.manual_seed(0)  # the same random weights in both
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = Segmenter(ModelConfig(name="ViT-S-16", random_init=True, device="cpu", precision=precision), BASE)
        seg.set_queries("cat, dog, car, tree")
        return seg

    image = _image()
    fp32, bf16 = build("fp32").segment(image), build("bf16").segment(image)
    assert bf16.confidence.dtype == np.float32 and bf16.label_map.shape == fp32.label_map.shape
    assert np.abs(bf16.confidence - fp32.confidence).mean() < 0.02
    assert (bf16.label_map == fp32.label_map).mean() > 0.9


def test_backend_names_how_frames_run(segmenter):
    from zeroseg_ros.core.onednn import onednn_available

    expected = "PyTorch fp32 + oneDNN" if segmenter.uses_onednn else "PyTorch fp32"
    assert segmenter.backend == expected and (not segmenter.uses_onednn or onednn_available())
    assert f"oneDNN {'on' if segmenter.uses_onednn else 'off'} (" in segmenter.choices  # chosen at start-up
    assert not segmenter.records_graphs  # CUDA graphs only on CUDA

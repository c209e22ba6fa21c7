"""The CUDA path: graph replay equals eager, fp16 stays close to fp32, out-of-memory is a clear error.

Skipped without a CUDA device (CI); `scripts/gpu_check.sh` runs them on a GPU machine (`pytest -m gpu`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.errors import InferenceResourceError
from zeroseg_ros.core.segmenter import GRAPHS_KEPT, Segmenter
from zeroseg_ros.tools.bench.measure import synthetic_frame

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

QUERIES = "person, car, tree|bush, sky"
CONFIG = SegmenterConfig(method="naclip", short_side=224, templates="short")


def segmenter(precision: str = "fp32", cuda_graphs: bool = True, **kwargs: object) -> Segmenter:
    torch.manual_seed(0)  # every segmenter here gets the same random weights
    model = ModelConfig(name="ViT-B-16", random_init=True, device="cuda", precision=precision)
    result = Segmenter(model, CONFIG, cuda_graphs=cuda_graphs, **kwargs)
    result.set_queries(QUERIES)
    return result


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return synthetic_frame(480, 640)


@pytest.fixture(scope="module")
def eager_fp32(frame: np.ndarray):
    return segmenter(cuda_graphs=False).segment(frame)


@pytest.mark.parametrize("method", ["naclip", "scclip", "sclip", "maskclip"])
def test_cuda_graph_replay_equals_eager(frame: np.ndarray, method: str) -> None:
    graphed, eager = segmenter(), segmenter(cuda_graphs=False)
    for s in (graphed, eager):
        s.update_config(method=method)
    expected = eager.segment(frame)
    for _ in range(3):  # the first call records, the next ones replay
        result = graphed.segment(frame)
        np.testing.assert_allclose(result.confidence, expected.confidence, atol=1e-5)
        np.testing.assert_array_equal(result.label_map, expected.label_map)
        np.testing.assert_array_equal(result.areas, expected.areas)
    # A new frame of the same size replays the same graph on new pixels.
    other = synthetic_frame(480, 640, seed=1)
    np.testing.assert_array_equal(graphed.segment(other).label_map, eager.segment(other).label_map)


def test_one_recorded_graph_serves_rgb_and_bgr_frames_with_the_overlay(frame: np.ndarray) -> None:
    graphed, eager = segmenter(), segmenter(cuda_graphs=False)
    graphed.warmup([frame.shape[:2]], overlay_alpha=0.5)
    bgr = np.ascontiguousarray(frame[:, :, ::-1])
    for image, order in ((frame, "rgb"), (bgr, "bgr"), (frame, "rgb")):
        result = graphed.segment(image, order, overlay_alpha=0.5)
        expected = eager.segment(image, order, overlay_alpha=0.5)
        np.testing.assert_array_equal(result.label_map, expected.label_map)
        np.testing.assert_array_equal(result.overlay, expected.overlay)
    np.testing.assert_array_equal(graphed.segment(bgr, "bgr", 0.5).overlay[:, :, ::-1], result.overlay)


def test_a_new_overlay_opacity_replays_the_same_graph(frame: np.ndarray) -> None:
    graphed, eager = segmenter(), segmenter(cuda_graphs=False)
    graphed.warmup([frame.shape[:2]], overlay_alpha=0.5)
    for alpha in (0.2, 0.9):
        result = graphed.segment(frame, overlay_alpha=alpha)
        np.testing.assert_array_equal(result.overlay, eager.segment(frame, overlay_alpha=alpha).overlay)
    assert len(graphed._graphs) == 1


def test_171_queries_on_a_full_hd_frame_replay_the_candidate_labels_within_memory() -> None:
    graphed, eager = segmenter(), segmenter(cuda_graphs=False)
    for seg in (graphed, eager):
        seg.set_queries("@coco-stuff")
    eager.update_config(exact_labels=True)
    image = synthetic_frame(1080, 1920)
    device = graphed.device
    torch.cuda.synchronize(device)
    loaded = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = graphed.segment(image)  # records, then replays
    assert torch.cuda.max_memory_allocated(device) - loaded <= 1.5 * 2**30
    result = graphed.segment(image)
    expected = eager.segment(image)
    same = result.label_map == expected.label_map
    assert same.mean() >= 0.999
    assert np.abs(result.confidence - expected.confidence)[same].max() <= 1e-3


def test_recorded_graphs_are_bounded_least_recently_used_first(frame: np.ndarray) -> None:
    graphed, eager = segmenter(), segmenter(cuda_graphs=False)
    for index in range(GRAPHS_KEPT + 2):  # one more size than kept, then the first size again
        graphed.segment(synthetic_frame(64 + 16 * index, 96))
        assert len(graphed._graphs) == min(index + 1, GRAPHS_KEPT)
    assert (1, 64, 96, False) not in graphed._graphs
    small = synthetic_frame(64, 96)
    np.testing.assert_array_equal(graphed.segment(small).label_map, eager.segment(small).label_map)
    assert (1, 64, 96, False) in graphed._graphs and len(graphed._graphs) == GRAPHS_KEPT
    assert (1, 64 + 2 * 16, 96, False) not in graphed._graphs  # the least recently used one made room


def test_a_recorded_batch_equals_each_frame_alone() -> None:
    graphed, eager = segmenter(), segmenter(cuda_graphs=False)
    images = [synthetic_frame(480, 640, seed=seed) for seed in range(3)]
    for _ in range(2):  # the first call records, the second replays
        results = graphed.segment_batch(images, overlay_alpha=0.5)
    assert (3, 480, 640, True) in graphed._graphs
    for result, image in zip(results, images, strict=True):
        expected = eager.segment(image, overlay_alpha=0.5)
        # cuDNN and cuBLAS may pick other kernels for another batch size (TF32 convolutions by default): a pixel
        # whose two best phrases tie to rounding may flip; the CPU test (test_segment_batch.py) asks identity.
        same = result.label_map == expected.label_map
        assert same.mean() >= 0.999
        np.testing.assert_allclose(result.confidence[same], expected.confidence[same], atol=1e-3)


def test_temporal_smoothing_replays_one_average_per_stream() -> None:
    graphed, eager = segmenter(), segmenter(cuda_graphs=False)
    for seg in (graphed, eager):
        seg.update_config(temporal_smoothing=0.8)
    for step in range(3):
        images = [synthetic_frame(240, 320, seed=10 * step + camera) for camera in range(2)]
        results = graphed.segment_batch(images, streams=["front", "left"])
        expected = eager.segment_batch(images, streams=["front", "left"])
        for result, alone in zip(results, expected, strict=True):
            assert (result.label_map == alone.label_map).mean() >= 0.999
            np.testing.assert_allclose(result.confidence, alone.confidence, atol=1e-3)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_is_close_to_fp32(frame: np.ndarray, eager_fp32, precision: str) -> None:
    result = segmenter(precision).segment(frame)
    assert np.abs(result.confidence - eager_fp32.confidence).mean() < 0.02
    assert (result.label_map == eager_fp32.label_map).mean() > 0.9


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_scclip_in_half_precision_is_close_to_fp32(frame: np.ndarray, precision: str) -> None:
    full, half = segmenter(), segmenter(precision)
    for each in (full, half):
        each.update_config(method="scclip")
    expected, result = full.segment(frame), half.segment(frame)
    assert np.abs(result.confidence - expected.confidence).mean() < 0.02
    assert (result.label_map == expected.label_map).mean() > 0.9


def test_cpu_and_cuda_agree(frame: np.ndarray, eager_fp32) -> None:
    torch.manual_seed(0)
    cpu = Segmenter(ModelConfig(name="ViT-B-16", random_init=True, device="cpu", precision="fp32"), CONFIG)
    cpu.set_queries(QUERIES)
    result = cpu.segment(frame)
    np.testing.assert_allclose(result.confidence, eager_fp32.confidence, atol=1e-3)
    assert (result.label_map == eager_fp32.label_map).mean() > 0.99


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_out_of_memory_is_an_inference_resource_error(cuda_graphs: bool) -> None:
    seg = segmenter(cuda_graphs=cuda_graphs)
    seg.update_config(short_side=768)  # 48 x 85 patches at 1080p: within MAX_PATCH_TOKENS
    device = seg.device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    # Allow 8 MiB above what is allocated now: far less than a 768-short-side frame needs.
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated(device) + 2**23) / total, device)
    try:
        with pytest.raises(InferenceResourceError, match="out of memory"):
            seg.segment(synthetic_frame(1080, 1920))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    # The segmenter recovers: the same frame at a small size works afterwards.
    seg.update_config(short_side=224)
    assert seg.segment(synthetic_frame(1080, 1920)).label_map.shape == (1080, 1920)


def test_onnx_runtime_encoder_on_cuda(frame: np.ndarray, eager_fp32, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA execution provider")
    from zeroseg_ros.engines.runners import cached_onnx_encoder

    torch.manual_seed(0)
    model = ModelConfig(name="ViT-B-16", random_init=True, device="cuda")
    encoder = cached_onnx_encoder(model, "naclip", (224, 304), tmp_path)  # 640x480 at short side 224
    assert encoder.providers[0] != "CPUExecutionProvider"
    # ONNX Runtime runs on streams of its own: it cannot be captured in a CUDA graph.
    seg = segmenter(cuda_graphs=False, image_encoder=encoder)
    result = seg.segment(frame)
    np.testing.assert_allclose(result.confidence, eager_fp32.confidence, atol=1e-3)
    assert (result.label_map == eager_fp32.label_map).mean() > 0.99


def test_recording_a_cuda_graph_reports_its_runs(frame: np.ndarray) -> None:
    works: list[tuple[str, int, int]] = []

    def factory(description: str, unit: str):
        return lambda done, total: works.append((description, done, total))

    segmenter(progress=factory).segment(frame)
    wanted = "recording a CUDA graph for 640 x 480"
    recording = [(done, total) for what, done, total in works if what.startswith(wanted)]
    assert recording == [(1, 3), (2, 3), (3, 3)]

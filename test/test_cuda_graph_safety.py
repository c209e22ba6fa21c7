"""What the CUDA-graph path records can be recorded: checked on the CPU, op by op.

On CUDA the segmenter records everything from the uploaded frames to the packed results as one graph per batch
size and frame size. A graph replays fixed kernels on fixed memory, so the recorded part must not wait for the device
(``.item()``, ``bool(tensor)``), produce shapes that depend on the data (``nonzero``, boolean-mask indexing,
``unique``) or build tensors from host data per frame (``torch.tensor(...)``): capture fails, or worse,
replays a stale value. Those ops look the same on the CPU, so every op of a frame is traced here with a
dispatch mode, for each method and the options that change the pipeline. The GPU itself is exercised by
``test_gpu.py`` (graph replay equals eager) where a GPU is present.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from zeroseg_ros.core.config import METHODS, ModelConfig, SegmenterConfig
from zeroseg_ros.core.preprocess import channel_index
from zeroseg_ros.core.segmenter import Segmenter, _StageTimer

# Host synchronisation, data-dependent shapes, or a host tensor made per frame.
NOT_RECORDABLE = {
    "aten::_local_scalar_dense",
    "aten::item",
    "aten::nonzero",
    "aten::nonzero_static",
    "aten::masked_select",
    "aten::masked_scatter",
    "aten::_unique",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::lift_fresh",
    "aten::repeat_interleave",
}


class OpTrace(TorchDispatchMode):
    """Names of the aten ops run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func._schema.name)
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Without oneDNN: the encoder then runs the code it runs on CUDA.
        model = ModelConfig(name="ViT-S-16", random_init=True, device="cpu", precision="fp32")
        return Segmenter(model, SegmenterConfig(templates="none"), onednn=False)


# Synonyms: the best-phrase-per-class path too. Few phrases take the exact labelling, more the candidates'.
FEW_PHRASES = "person|pedestrian, car, tree"
MANY_PHRASES = "person|pedestrian, car, tree, road, sky, wall, floor, door, window, grass"


def traced_frame(segmenter: Segmenter, queries: str = FEW_PHRASES, **config: object) -> list[str]:
    """The ops of the part a graph records (``Segmenter._infer``: uploaded frames to packed results), for a batch
    of two frames (one rgb, one bgr) after a first batch, which fills the per-size caches as the graph's warm-up
    does; with temporal smoothing, the past averages are given as a replay copies them in."""
    segmenter.update_config(short_side=64, **config)
    segmenter.set_queries(queries)
    images = [np.random.default_rng(seed).integers(0, 256, (48, 80, 3), dtype=np.uint8) for seed in (0, 1)]
    segmenter.segment_batch(images, ["rgb", "bgr"], overlay_alpha=0.5, streams=["front", "left"])
    frames = torch.from_numpy(np.stack(images))
    channels = torch.stack([channel_index(bgr, segmenter.device) for bgr in (False, True)])
    untimed = _StageTimer(segmenter.device, False)
    state = segmenter._state
    history = None
    if segmenter.config.temporal_smoothing > 0:
        shape = segmenter._logits_shape((48, 80), state)
        history = segmenter._temporal.past(["front", "left"], (48, 80), shape, 0.5, segmenter.device)
    # In inference mode, as Segmenter.segment_batch runs it.
    with torch.inference_mode(), OpTrace() as trace:
        segmenter._infer(frames, channels, state, untimed, torch.full((), 0.5), history)
    return trace.ops


@pytest.mark.parametrize("method", METHODS)
def test_each_method_records_without_host_synchronisation(segmenter: Segmenter, method: str) -> None:
    ops = traced_frame(segmenter, method=method, background_words=("sky",))
    assert "aten::scatter_reduce" in {op.removesuffix("_") for op in ops}  # the trace did see the whole frame
    assert not NOT_RECORDABLE & set(ops)


@pytest.mark.parametrize("exact", [False, True])
def test_labelling_many_phrases_records_without_host_synchronisation(segmenter: Segmenter, exact: bool) -> None:
    ops = {op.removesuffix("_") for op in traced_frame(segmenter, MANY_PHRASES, exact_labels=exact)}
    assert ("aten::scatter_reduce" if exact else "aten::topk") in ops  # the labelling path asked for ran
    assert not NOT_RECORDABLE & ops


@pytest.mark.parametrize("options", [{"pamr": True}, {"slide_crop": 32, "slide_stride": 16}])
def test_refinement_and_sliding_windows_record_without_host_synchronisation(
    segmenter: Segmenter, options: dict[str, object]
) -> None:
    ops = traced_frame(segmenter, method="naclip", background_words=(), **options)
    assert not NOT_RECORDABLE & set(ops)


def test_scclip_on_batched_sliding_windows_records_without_host_synchronisation(segmenter: Segmenter) -> None:
    """The windows go through the encoder as one batch; each finds its outliers as a top-k of fixed size."""
    ops = traced_frame(segmenter, method="scclip", background_words=(), slide_crop=32, slide_stride=16)
    assert "aten::avg_pool2d" in ops  # outliers were found and filled
    assert not NOT_RECORDABLE & set(ops)


def test_pamr_at_the_frame_resolution_records_without_host_synchronisation(segmenter: Segmenter) -> None:
    ops = traced_frame(
        segmenter,
        MANY_PHRASES,
        method="naclip",
        background_words=(),
        pamr=True,
        pamr_resolution="frame",
        exact_labels=False,
        heatmap_query="car",
    )
    labelling = {op.removesuffix("_") for op in ops}
    # frame-sized logits are labelled as they are: the exact path, not the candidates'
    assert "aten::scatter_reduce" in labelling and "aten::topk" not in labelling
    assert not NOT_RECORDABLE & set(ops)
    segmenter.update_config(pamr=False, pamr_resolution="input", heatmap_query="")


def test_temporal_smoothing_and_the_heatmap_record_without_host_synchronisation(segmenter: Segmenter) -> None:
    ops = traced_frame(segmenter, method="naclip", background_words=(), temporal_smoothing=0.5, heatmap_query="car")
    assert {"aten::log", "aten::clamp_min"} <= set(ops)  # the moving average ran in the traced part
    assert not NOT_RECORDABLE & set(ops)
    segmenter.update_config(temporal_smoothing=0.0, heatmap_query="")


def test_the_trace_catches_a_host_synchronisation() -> None:
    with OpTrace() as trace:
        value = torch.arange(4.0)
        _ = value[value > 1].sum().item()
    assert {"aten::nonzero", "aten::_local_scalar_dense"} & set(trace.ops)

"""Exported encoders stand in for the PyTorch one in the Segmenter and give the same segmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.engines.runners import OnnxImageEncoder, cached_onnx_encoder, load_image_encoder

MODEL = ModelConfig(name="ViT-S-32", random_init=True, device="cpu", precision="fp32")
CONFIG = SegmenterConfig(method="naclip", short_side=96, templates="none")


@pytest.fixture(scope="module")
def onnx_encoder(tmp_path_factory: pytest.TempPathFactory) -> OnnxImageEncoder:
    torch.manual_seed(0)  # the same seed as the segmenter below: the same random weights
    return cached_onnx_encoder(MODEL, "naclip", (96, 128), tmp_path_factory.mktemp("cache"))


def test_onnx_encoder_declares_what_it_computes(onnx_encoder: OnnxImageEncoder) -> None:
    assert onnx_encoder.input_size == (96, 128)
    assert onnx_encoder.method == "naclip"
    assert onnx_encoder.providers[-1] == "CPUExecutionProvider"
    features = onnx_encoder(torch.randn(1, 3, 96, 128))
    assert features.shape == (1, 384, 3, 4) and features.dtype == torch.float32
    torch.testing.assert_close(features.norm(dim=1), torch.ones(1, 3, 4), atol=1e-4, rtol=0)


def test_segmenter_with_onnx_encoder_equals_pytorch(onnx_encoder: OnnxImageEncoder) -> None:
    torch.manual_seed(0)
    ours = Segmenter(MODEL, CONFIG)
    torch.manual_seed(0)
    exported = Segmenter(MODEL, CONFIG, image_encoder=onnx_encoder)
    for segmenter in (ours, exported):
        segmenter.set_queries("cat, dog, car")
    # A 4:3 frame at short side 96 is the engine's 96 x 128 input, so both see the same pixels.
    frame = np.random.default_rng(0).integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    expected, result = ours.segment(frame), exported.segment(frame)
    np.testing.assert_allclose(result.confidence, expected.confidence, atol=1e-4)
    assert (result.label_map == expected.label_map).mean() > 0.999


def test_segmenter_refuses_a_method_the_engine_does_not_compute(onnx_encoder: OnnxImageEncoder) -> None:
    with pytest.raises(ConfigError, match="naclip"):
        Segmenter(MODEL, CONFIG.replace(method="sclip"), image_encoder=onnx_encoder)


def test_wrong_input_size_is_a_clear_error(onnx_encoder: OnnxImageEncoder) -> None:
    with pytest.raises(ConfigError, match="96, 128"):
        onnx_encoder(torch.randn(1, 3, 64, 64))


def test_load_image_encoder_by_suffix(onnx_encoder: OnnxImageEncoder, tmp_path: Path) -> None:
    assert isinstance(load_image_encoder(onnx_encoder.path, "cpu"), OnnxImageEncoder)
    with pytest.raises(ConfigError, match="unknown image encoder file"):
        load_image_encoder(tmp_path / "encoder.pt", "cpu")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="tensorrt"):
            load_image_encoder(tmp_path / "encoder.engine", "cpu")
    with pytest.raises(ConfigError, match="does not exist"):
        load_image_encoder(tmp_path / "missing.onnx", "cpu")


def test_onnx_without_metadata_is_refused(onnx_encoder: OnnxImageEncoder, tmp_path: Path) -> None:
    import onnx

    graph = onnx.load(str(onnx_encoder.path))
    del graph.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(graph, str(bare))
    with pytest.raises(ConfigError, match="export-onnx"):
        OnnxImageEncoder(bare, torch.device("cpu"))
    assert json.loads(onnx_encoder.path.with_suffix(".json").read_text())["zeroseg.method"] == "naclip"

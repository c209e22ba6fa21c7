"""`zeroseg export-onnx`: the ONNX graph computes the PyTorch dense features and says what it was built for."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx
import pytest
import torch

from zeroseg_ros.core.config import ModelConfig
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.preprocess import target_size
from zeroseg_ros.engines.export import EncoderMetadata, export_encoder, load_encoder
from zeroseg_ros.engines.runners import compare_with_torch
from zeroseg_ros.tools import export_onnx

MODEL = ModelConfig(name="ViT-B-16", random_init=True, device="cpu")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    torch.manual_seed(0)
    encoder, weights = load_encoder(MODEL, "naclip")
    path = tmp_path_factory.mktemp("onnx") / "encoder.onnx"
    export_encoder(encoder, path, 160, 224, MODEL.name, weights)
    return encoder, path


def test_onnx_runtime_matches_pytorch(exported: tuple[object, Path]) -> None:
    encoder, path = exported
    assert compare_with_torch(encoder, path) < 1e-4


def test_metadata_in_graph_and_sidecar(exported: tuple[object, Path]) -> None:
    _, path = exported
    graph = onnx.load(str(path), load_external_data=False)
    assert graph.opset_import[0].version >= 17
    props = {p.key: p.value for p in graph.metadata_props}
    metadata = EncoderMetadata.from_props(props)
    assert (metadata.method, metadata.height, metadata.width, metadata.model) == ("naclip", 160, 224, "ViT-B-16")
    assert EncoderMetadata.from_props(json.loads(path.with_suffix(".json").read_text())) == metadata
    (output,) = graph.graph.output
    assert [d.dim_value for d in output.type.tensor_type.shape.dim] == [1, 512, 10, 14]


def test_scclip_exports_with_its_outliers_as_a_top_k(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder, weights = load_encoder(ModelConfig(name="ViT-S-32", random_init=True, device="cpu"), "scclip")
    path = tmp_path / "scclip.onnx"
    export_encoder(encoder, path, 224, 320, "ViT-S-32", weights)  # 70 patches: 30 neighbours, 4 outliers
    assert "TopK" in {node.op_type for node in onnx.load(str(path)).graph.node}
    assert compare_with_torch(encoder, path) < 1e-4


def test_size_must_be_a_multiple_of_the_patch() -> None:
    encoder, weights = load_encoder(ModelConfig(name="ViT-S-32", random_init=True, device="cpu"), "maskclip")
    with pytest.raises(ConfigError, match="multiples of the patch"):
        export_encoder(encoder, Path("unused.onnx"), 100, 224, "ViT-S-32", weights)


def test_command_line_exports_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    export_onnx.register(parser.add_subparsers())
    out = tmp_path / "small.onnx"
    size = ["--height", "64", "--width", "96"]
    model = ["--model", "ViT-S-32", "--random-weights", "--device", "cpu"]
    args = parser.parse_args(["export-onnx", "--out", str(out), *size, "--method", "clearclip", *model])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    difference = float(printed.rsplit(":", 1)[1])
    assert difference < 1e-4
    assert EncoderMetadata.from_props(json.loads(out.with_suffix(".json").read_text())).method == "clearclip"


def test_command_line_sizes_the_input_from_the_camera_frame(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    export_onnx.register(parser.add_subparsers())
    model = ["--model", "ViT-S-32", "--random-weights", "--device", "cpu", "--no-check"]
    out = tmp_path / "frame.onnx"
    args = parser.parse_args(["export-onnx", "--out", str(out), "--frame", "640x480", "--short-side", "64", *model])
    assert args.func(args) == 0
    metadata = EncoderMetadata.from_props(json.loads(out.with_suffix(".json").read_text()))
    # What the segmenter feeds the model for a 640x480 frame at short side 64 with 32-pixel patches.
    assert (metadata.height, metadata.width) == target_size(480, 640, 64, 32) == (64, 96)
    for bad in (["--frame", "640x480", "--height", "64"], ["--height", "64"], ["--frame", "640x480,320x240"]):
        args = parser.parse_args(["export-onnx", "--out", str(out), *bad, *model])
        with pytest.raises(ConfigError):
            args.func(args)

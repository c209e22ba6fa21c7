"""The dense image encoder as an ONNX graph for one fixed input size (`zeroseg export-onnx` is its command).

The graph takes normalised pixels ``pixels (1, 3, H, W)`` and returns unit patch embeddings
``features (1, D, H / p, W / p)``, exactly what ``DenseCLIPEncoder`` returns, so ONNX Runtime or a TensorRT
engine built from it (``trtexec --onnx=...``, see docs/jetson.md) can stand in for the PyTorch encoder through
``Segmenter(image_encoder=...)``. The method, input size and model are stored as ONNX metadata and in a JSON
file beside the graph (``encoder.json`` for ``encoder.onnx``), which the TensorRT loader reads because an
engine file carries no metadata of its own.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from zeroseg_ros.core.config import METHODS, ModelConfig, SegmenterConfig
from zeroseg_ros.core.dense import DenseCLIPEncoder
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.model import load_clip

INPUT_NAME = "pixels"
OUTPUT_NAME = "features"
OPSET = 17


@dataclass(frozen=True)
class EncoderMetadata:
    """What an exported encoder computes; stored in the ONNX graph and in the JSON sidecar."""

    method: str
    height: int
    width: int
    model: str
    weights: str
    neighbourhood_std: float

    def to_props(self) -> dict[str, str]:
        return {f"zeroseg.{key}": str(value) for key, value in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> EncoderMetadata:
        values = {key.removeprefix("zeroseg."): value for key, value in props.items() if key.startswith("zeroseg.")}
        missing = {"method", "height", "width"} - set(values)
        if missing:
            raise ConfigError(f"encoder metadata lacks {sorted(missing)}; export it with `zeroseg export-onnx`")
        return cls(
            method=values["method"],
            height=int(values["height"]),
            width=int(values["width"]),
            model=values.get("model", "unknown"),
            weights=values.get("weights", "unknown"),
            neighbourhood_std=float(values.get("neighbourhood_std", SegmenterConfig().neighbourhood_std)),
        )


def sidecar_path(path: Path) -> Path:
    """``encoder.json`` beside ``encoder.onnx`` / ``encoder.engine``."""
    return Path(path).with_suffix(".json")


def read_sidecar(path: Path) -> EncoderMetadata:
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise ConfigError(
            f"{sidecar} not found: it says which method and input size the engine {path} was built for; "
            "copy it from `zeroseg export-onnx` next to the engine, with the same name"
        )
    return EncoderMetadata.from_props(json.loads(sidecar.read_text()))


def load_encoder(
    model_config: ModelConfig, method: str, neighbourhood_std: float = SegmenterConfig().neighbourhood_std
) -> tuple[DenseCLIPEncoder, str]:
    """The fp32 CPU dense encoder of ``model_config`` and where its weights came from.

    The graph is traced in fp32; TensorRT and ONNX Runtime pick fp16 kernels themselves (``trtexec --fp16``).
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
    clip = load_clip(dataclasses.replace(model_config, device="cpu", precision="fp32"))
    return DenseCLIPEncoder(clip.model.visual, method, neighbourhood_std).eval(), clip.weights


def export_encoder(
    encoder: DenseCLIPEncoder, out: Path, height: int, width: int, model_name: str, weights: str
) -> EncoderMetadata:
    """Export ``encoder`` for ``height x width`` inputs to ``out``, with its metadata and JSON sidecar."""
    import onnx

    patch = encoder.patch_size
    if height <= 0 or width <= 0 or height % patch[0] or width % patch[1]:
        raise ConfigError(
            f"height and width must be positive multiples of the patch size {patch}, got {height} x {width}"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # nn.MultiheadAttention's fused fast path has no ONNX symbolic; the plain path computes the same.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            torch.onnx.export(
                encoder,
                (torch.zeros(1, 3, height, width),),
                str(out),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=OPSET,
                dynamo=False,  # the TorchScript exporter handles open_clip's blocks without onnxscript
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    metadata = EncoderMetadata(
        method=encoder.method,
        height=height,
        width=width,
        model=model_name,
        weights=weights,
        neighbourhood_std=encoder.neighbourhood_std,
    )
    graph = onnx.load(str(out))
    for key, value in metadata.to_props().items():
        prop = graph.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(graph, str(out))
    sidecar_path(out).write_text(json.dumps(metadata.to_props(), indent=2))
    return metadata

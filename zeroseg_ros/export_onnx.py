"""``zeroseg export-onnx``: the dense image encoder as an ONNX graph for one fixed input size.

The graph takes normalised pixels ``pixels (1, 3, H, W)`` and returns unit patch embeddings
``features (1, D, H / p, W / p)``, exactly what ``DenseCLIPEncoder`` returns, so ONNX Runtime or a TensorRT
engine built from it (``trtexec --onnx=...``, see docs/jetson.md) can stand in for the PyTorch encoder through
``Segmenter(image_encoder=...)``. The method, input size and model are stored as ONNX metadata and in a JSON
file beside the graph (``encoder.json`` for ``encoder.onnx``), which the TensorRT loader reads because an
engine file carries no metadata of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from zeroseg_ros.cli import add_model_arguments, model_config_from_args
from zeroseg_ros.config import METHODS, ModelConfig, SegmenterConfig, parse_frame_sizes
from zeroseg_ros.dense import DenseCLIPEncoder
from zeroseg_ros.errors import ConfigError
from zeroseg_ros.model import load_clip
from zeroseg_ros.preprocess import target_size

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


def compare_with_torch(encoder: DenseCLIPEncoder, path: Path, seed: int = 0) -> float:
    """Max absolute difference between ONNX Runtime (CPU) and ``encoder`` on one random input."""
    from zeroseg_ros.engines import OnnxImageEncoder

    engine = OnnxImageEncoder(path, torch.device("cpu"))
    pixels = torch.randn(1, 3, *engine.input_size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = encoder(pixels)
    return float(np.abs(engine(pixels).numpy() - expected.numpy()).max())


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help="export the dense image encoder to ONNX for one input size",
        description="Writes OUT (.onnx) and OUT's .json sidecar, then checks ONNX Runtime against PyTorch.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output .onnx file")
    size = parser.add_argument_group("input size: the camera's frame and short side, or the model input itself")
    size.add_argument("--frame", default=None, help="camera frame WxH, e.g. 640x480 (the node sizes it as below)")
    size.add_argument("--short-side", type=int, default=SegmenterConfig().short_side, help="with --frame (%(default)s)")
    size.add_argument("--height", type=int, default=None, help="model input height (multiple of the patch)")
    size.add_argument("--width", type=int, default=None, help="model input width (multiple of the patch)")
    parser.add_argument("--method", choices=METHODS, default=SegmenterConfig().method)
    parser.add_argument("--neighbourhood-std", type=float, default=SegmenterConfig().neighbourhood_std)
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    add_model_arguments(parser)
    parser.set_defaults(func=_run)


def input_size(args: argparse.Namespace, patch: int) -> tuple[int, int]:
    """The model input ``(height, width)``: the one the segmenter gives ``--frame`` at ``--short-side``, or
    ``--height`` and ``--width`` as given."""
    if args.frame and (args.height or args.width):
        raise ConfigError("give --frame (with --short-side) or --height and --width, not both")
    if args.frame:
        sizes = parse_frame_sizes(args.frame)
        if len(sizes) != 1:
            raise ConfigError(f"--frame takes one size, got {args.frame!r}")
        return target_size(*sizes[0], args.short_side, patch)
    if not (args.height and args.width):
        raise ConfigError("give --frame WxH (with --short-side) or both --height and --width")
    return args.height, args.width


def _run(args: argparse.Namespace) -> int:
    model_config = model_config_from_args(args)
    encoder, weights = load_encoder(model_config, args.method, args.neighbourhood_std)
    height, width = input_size(args, max(encoder.patch_size))
    metadata = export_encoder(encoder, args.out, height, width, model_config.name, weights)
    print(f"wrote {args.out} ({metadata.method}, {metadata.height} x {metadata.width}, {metadata.model})")
    if not args.no_check:
        print(f"max abs difference ONNX Runtime vs PyTorch: {compare_with_torch(encoder, args.out):.3g}")
    return 0

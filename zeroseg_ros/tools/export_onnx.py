"""``zeroseg export-onnx``: the dense image encoder as an ONNX graph for one fixed input size
(``zeroseg_ros.engines.export``), then checked against PyTorch with ONNX Runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from zeroseg_ros.core.config import METHODS, SegmenterConfig, parse_frame_sizes
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.preprocess import target_size
from zeroseg_ros.engines.export import export_encoder, load_encoder
from zeroseg_ros.engines.runners import compare_with_torch
from zeroseg_ros.tools.cli_args import add_model_arguments, model_config_from_args


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

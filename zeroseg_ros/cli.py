"""``zeroseg``: the command line of zeroseg_ros.

``zeroseg segment IMAGE|DIR|VIDEO --queries "cat, sofa" --out DIR`` segments files with the same core the ROS
node uses; the other subcommands (``node``, ``demo-camera``, ``run``, ``eval``, ``bench``, ``export-onnx``) live
in their own modules and register here. The model and segmentation options are defined once below and shared
by every subcommand that builds a ``Segmenter``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from zeroseg_ros.config import METHODS, PRECISIONS, TEMPLATE_SETS, ModelConfig, SegmenterConfig
from zeroseg_ros.errors import ZerosegError

LOGGER = logging.getLogger("zeroseg")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}

# subcommand -> module defining register(subparsers)
SUBCOMMAND_MODULES = {
    "node": "zeroseg_ros.node",
    "demo-camera": "zeroseg_ros.demo_camera",
    "run": "zeroseg_ros.run_demo",
    "eval": "zeroseg_ros.evaluation.cli",
    "bench": "zeroseg_ros.bench",
    "export-onnx": "zeroseg_ros.export_onnx",
}


# ---------------------------------------------------------------------------- shared options
def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose the CLIP model: the fields of ``ModelConfig``."""
    defaults = ModelConfig()
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=defaults.name, help="open_clip model name (default %(default)s)")
    group.add_argument("--pretrained", default=defaults.pretrained, help="open_clip pretrained tag (%(default)s)")
    group.add_argument("--checkpoint", default=None, help="local checkpoint file, for machines without internet")
    group.add_argument("--cache-dir", default=None, help="where downloaded weights are kept")
    group.add_argument(
        "--random-weights", action="store_true", help="random weights: a smoke test whose masks mean nothing"
    )
    group.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N (%(default)s)")
    group.add_argument("--precision", default=defaults.precision, choices=PRECISIONS)


def add_segmenter_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that change how the segmentation is computed: the fields of ``SegmenterConfig``.

    Every default is ``None`` so that a caller can tell an explicit option from a preset's value.
    """
    group = parser.add_argument_group("segmentation")
    group.add_argument("--method", choices=METHODS, default=None, help="last-block method (default naclip)")
    group.add_argument("--templates", choices=TEMPLATE_SETS, default=None, help="prompt templates (imagenet80)")
    group.add_argument("--background", default=None, help="comma-separated background words (label 0)")
    group.add_argument("--threshold", type=float, default=None, help="probability below which a pixel is background")
    group.add_argument("--logit-scale", type=float, default=None, help="softmax temperature (default 40)")
    group.add_argument("--short-side", type=int, default=None, help="resize short side to this (0 keeps; 448)")
    group.add_argument("--slide-crop", type=int, default=None, help="sliding-window crop (0: one pass)")
    group.add_argument("--slide-stride", type=int, default=None, help="sliding-window stride")
    group.add_argument("--pamr", action=argparse.BooleanOptionalAction, default=None, help="PAMR refinement")


def register_ros_passthrough(
    subparsers: argparse._SubParsersAction,
    name: str,
    help_text: str,
    executable: str,
    main: Callable[[list[str]], int],
    example: str,
) -> None:
    """A subcommand that hands everything after its name to a ROS entry point (``--ros-args -p ... -r ...``)."""
    parser = subparsers.add_parser(
        name, help=help_text, description=f"Everything after '{name}' goes to ROS, e.g. zeroseg {name} {example}"
    )
    parser.add_argument("ros_arguments", nargs=argparse.REMAINDER, help="--ros-args ... (parameters, remaps)")
    parser.set_defaults(func=lambda args: main([executable, *args.ros_arguments]))


def model_config_from_args(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(
        name=args.model,
        pretrained=args.pretrained,
        checkpoint=args.checkpoint,
        cache_dir=args.cache_dir,
        random_init=args.random_weights,
        device=args.device,
        precision=args.precision,
    )


def segmenter_config_from_args(args: argparse.Namespace, base: SegmenterConfig | None = None) -> SegmenterConfig:
    """``base`` (defaults or a preset) with every option given on the command line applied over it."""
    changes: dict[str, object] = {
        "method": args.method,
        "templates": args.templates,
        "probability_threshold": args.threshold,
        "logit_scale": args.logit_scale,
        "short_side": args.short_side,
        "slide_crop": args.slide_crop,
        "slide_stride": args.slide_stride,
        "pamr": args.pamr,
    }
    if args.background is not None:
        changes["background_words"] = tuple(w.strip() for w in args.background.split(",") if w.strip())
    return (base or SegmenterConfig()).replace(**{k: v for k, v in changes.items() if v is not None})


# ---------------------------------------------------------------------------- segment
def _register_segment(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment images, folders of images or videos",
        description="Writes <name>_mask.png (label ids), <name>_overlay.png and <name>.json per frame.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="image files, folders of images or video files")
    parser.add_argument("--queries", "-q", required=True, help='labels, e.g. "person|pedestrian, traffic cone"')
    parser.add_argument("--out", "-o", type=Path, required=True, help="output folder")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (%(default)s)")
    parser.add_argument("--every", type=int, default=1, help="segment every N-th video frame (%(default)s)")
    add_model_arguments(parser)
    add_segmenter_arguments(parser)
    parser.set_defaults(func=_run_segment)


def _frames(inputs: Sequence[Path], every: int) -> Iterator[tuple[str, np.ndarray]]:
    """(name, BGR frame) of every image and every ``every``-th video frame, in order."""
    for path in inputs:
        if path.is_dir():
            for child in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                yield from _frames([child], every)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(path))
            if not capture.isOpened():
                raise ZerosegError(f"cannot open video {path}")
            index = 0
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if index % every == 0:
                    yield f"{path.stem}_{index:06d}", frame
                index += 1
            capture.release()
        else:
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                raise ZerosegError(f"cannot read image {path} (missing, or not an image format OpenCV reads)")
            yield path.stem, frame


def _count_frames(inputs: Sequence[Path], every: int) -> int:
    total = 0
    for path in inputs:
        if path.is_dir():
            total += sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            frames = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
            total += (frames + every - 1) // every
        else:
            total += 1
    return total


def _run_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from zeroseg_ros.overlay import draw_overlay
    from zeroseg_ros.segmenter import Segmenter

    if args.every < 1:
        raise ZerosegError(f"--every must be at least 1, got {args.every}")
    missing = [str(p) for p in args.inputs if not p.exists()]
    if missing:
        raise ZerosegError(f"input not found: {', '.join(missing)}")
    segmenter = Segmenter(model_config_from_args(args), segmenter_config_from_args(args))
    segmenter.set_queries(args.queries)
    args.out.mkdir(parents=True, exist_ok=True)
    total = _count_frames(args.inputs, args.every)
    for name, frame in tqdm(_frames(args.inputs, args.every), total=total, unit="frame", disable=total <= 1):
        result = segmenter.segment(frame, channel_order="bgr")
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        overlay = draw_overlay(rgb, result.label_map, result.labels, alpha=args.alpha)
        cv2.imwrite(str(args.out / f"{name}_mask.png"), result.label_map)
        cv2.imwrite(str(args.out / f"{name}_overlay.png"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        summary = {
            "frame": name,
            "width": frame.shape[1],
            "height": frame.shape[0],
            "weights": segmenter.weights,
            "method": segmenter.config.method,
            "labels": [
                {"id": i + 1, "label": label, "mean_score": float(score), "area": int(area)}
                for i, (label, score, area) in enumerate(zip(result.labels, result.scores, result.areas, strict=True))
            ],
            "background_area": int((result.label_map == 0).sum()),
            "timings_ms": result.timings_ms,
        }
        (args.out / f"{name}.json").write_text(json.dumps(summary, indent=2))
    LOGGER.info("wrote %d frame(s) to %s", total, args.out)
    return 0


# ---------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zeroseg", description="Zero-shot segmentation by text with CLIP.")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _register_segment(subparsers)
    for module_name in SUBCOMMAND_MODULES.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # A subcommand whose optional dependency (rclpy, onnx, ...) is absent is listed but says why.
            if error.name == module_name:
                raise
            _register_unavailable(subparsers, module_name, error)
            continue
        module.register(subparsers)
    return parser


def _register_unavailable(subparsers: argparse._SubParsersAction, module_name: str, error: Exception) -> None:
    name = next(k for k, v in SUBCOMMAND_MODULES.items() if v == module_name)
    parser = subparsers.add_parser(name, help=f"(unavailable: {error})", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def unavailable(_: argparse.Namespace) -> int:
        raise ZerosegError(f"'zeroseg {name}' needs a package that is not installed: {error}")

    parser.set_defaults(func=unavailable)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except ZerosegError as error:
        print(f"zeroseg: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``zeroseg segment IMAGE|DIR|VIDEO --queries "cat, sofa" --out DIR``: segments files with the same core the
ROS node uses, and writes a label mask, an overlay and a JSON summary per frame."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from zeroseg_ros.core.errors import ZerosegError
from zeroseg_ros.tools.cli_args import (
    add_model_arguments,
    add_segmenter_arguments,
    model_config_from_args,
    segmenter_config_from_args,
)
from zeroseg_ros.tools.console import ProgressBar

LOGGER = logging.getLogger("zeroseg")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


def register(subparsers: argparse._SubParsersAction) -> None:
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

    from zeroseg_ros.core.overlay import draw_overlay
    from zeroseg_ros.core.segmenter import Segmenter

    if args.every < 1:
        raise ZerosegError(f"--every must be at least 1, got {args.every}")
    missing = [str(p) for p in args.inputs if not p.exists()]
    if missing:
        raise ZerosegError(f"input not found: {', '.join(missing)}")
    segmenter = Segmenter(model_config_from_args(args), segmenter_config_from_args(args), progress=ProgressBar)
    segmenter.set_queries(args.queries)
    args.out.mkdir(parents=True, exist_ok=True)
    total = _count_frames(args.inputs, args.every)
    for name, frame in tqdm(_frames(args.inputs, args.every), total=total, unit="frame", disable=total <= 1):
        result = segmenter.segment(frame, channel_order="bgr")
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        overlay = draw_overlay(rgb, result.label_map, result.labels, result.areas, alpha=args.alpha)
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

"""``zeroseg label BAG... --queries "pallet, person" --out DIR [--ray [ADDRESS]]``: labels recorded rosbag2 bags
(MCAP or sqlite3) and writes one MCAP bag per input with the node's outputs beside the input's topics."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from zeroseg_ros.core.config import split_words
from zeroseg_ros.core.errors import ZerosegError
from zeroseg_ros.tools.cli_args import (
    add_model_arguments,
    add_segmenter_arguments,
    model_config_from_args,
    segmenter_config_from_args,
)
from zeroseg_ros.tools.console import ProgressBar

LOGGER = logging.getLogger("zeroseg")
FRAMES_PER_RANGE = 64  # a Ray task's share of a bag: long enough to batch, short enough to spread a bag
EXIT_INTERRUPTED = 130


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "label",
        help="label recorded rosbag2 bags (MCAP, sqlite3), locally or on a Ray cluster",
        description="Writes DIR/<bag name>/, an MCAP bag with the input's topics and, per camera namespace NS, "
        "the node's outputs under NS/zeroseg/ (docs/labelling.md).",
    )
    parser.add_argument("bags", nargs="+", type=Path, help="rosbag2 bag folders (or single .mcap / .db3 files)")
    parser.add_argument("--queries", "-q", required=True, help='labels, e.g. "pallet, person|pedestrian"')
    parser.add_argument("--out", "-o", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--image-topics", default="", help="comma-separated image topics (default: every Image/CompressedImage)"
    )
    parser.add_argument("--no-copy", action="store_true", help="write only the outputs, not the input's topics")
    parser.add_argument("--confidence", action="store_true", help="also write NS/zeroseg/confidence (32FC1)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (%(default)s)")
    parser.add_argument("--no-legend", action="store_true", help="no label legend on the overlay")
    parser.add_argument("--min-object-pixels", type=int, default=100, help="smallest object (%(default)s pixels)")
    depth = parser.add_argument_group("depth (points and 3-D objects)")
    depth.add_argument(
        "--depth-topic",
        action="append",
        default=[],
        metavar="[IMAGE_TOPIC=]DEPTH_TOPIC",
        help="a camera's registered depth images (16UC1 mm or 32FC1 m); repeat for several cameras; without "
        "IMAGE_TOPIC= for a bag's only camera (default: found beside each image topic, see docs/labelling.md)",
    )
    depth.add_argument("--no-depth", action="store_true", help="no points or 3-D objects, even where depth is")
    depth.add_argument(
        "--depth-tolerance",
        type=float,
        default=0.02,
        help="most seconds between a frame's stamp and its depth image's (%(default)s)",
    )
    depth.add_argument(
        "--points-stride", type=int, default=2, help="every n-th depth pixel becomes a point (%(default)s)"
    )
    parser.add_argument(
        "--temporal-smoothing",
        type=float,
        default=0.0,
        metavar="WEIGHT",
        help="the node's temporal_smoothing: weight in [0, 1) of each camera's past frames (%(default)s: off); "
        "on Ray a bag is then one range",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="frames per model batch (%(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace another job's bags in --out")
    cluster = parser.add_argument_group("Ray")
    cluster.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: 'auto' joins the running cluster, ADDRESS a given one, nothing starts a local one",
    )
    cluster.add_argument("--workers", type=int, default=1, help="worker actors, one model each (%(default)s)")
    cluster.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker (%(default)s)")
    cluster.add_argument(
        "--cpus-per-worker", type=float, default=None, help="CPUs per worker (default: the cluster's, shared out)"
    )
    cluster.add_argument(
        "--frames-per-range", type=int, default=FRAMES_PER_RANGE, help="frames per Ray task (%(default)s)"
    )
    add_model_arguments(parser)
    add_segmenter_arguments(parser)
    parser.set_defaults(func=_run_label)


def _depth_topics(values: list[str]) -> tuple[tuple[str, str], ...] | None:
    """``--depth-topic`` values as (image topic, depth topic) pairs ("" for the only camera); None when none."""
    if not values:
        return None
    pairs = []
    for value in values:
        image_topic, _, depth_topic = value.rpartition("=")
        if not depth_topic.startswith("/") or (image_topic and not image_topic.startswith("/")):
            raise ZerosegError(f"--depth-topic {value!r}: give [IMAGE_TOPIC=]DEPTH_TOPIC with absolute topic names")
        pairs.append((image_topic, depth_topic))
    images = [image for image, _ in pairs]
    if len(set(images)) != len(images):
        raise ZerosegError("--depth-topic names a camera twice")
    return tuple(pairs)


def _run_label(args: argparse.Namespace) -> int:
    try:
        import rosbags  # noqa: F401
    except ModuleNotFoundError as error:
        raise ZerosegError("'zeroseg label' needs rosbags: pip install -r requirements/label.txt") from error
    from zeroseg_ros.tools.label.job import label_locally, prepare
    from zeroseg_ros.tools.label.labeller import Labeller, LabelSettings
    from zeroseg_ros.tools.label.outputs import OutputSettings

    if args.batch_size < 1 or args.frames_per_range < 1 or args.points_stride < 1:
        raise ZerosegError("--batch-size, --frames-per-range and --points-stride must be at least 1")
    if not 0.0 <= args.depth_tolerance <= 1.0:
        raise ZerosegError(f"--depth-tolerance must be between 0 and 1 s, got {args.depth_tolerance}")
    if not 0.0 <= args.temporal_smoothing < 1.0:
        raise ZerosegError(f"--temporal-smoothing must be in [0, 1), got {args.temporal_smoothing}")
    if args.no_depth and args.depth_topic:
        raise ZerosegError("--no-depth and --depth-topic contradict each other: give one")
    settings = LabelSettings(
        queries=args.queries,
        model=model_config_from_args(args),
        segmenter=segmenter_config_from_args(args).replace(temporal_smoothing=args.temporal_smoothing),
        outputs=OutputSettings(
            confidence=args.confidence,
            overlay_alpha=args.alpha,
            overlay_legend=not args.no_legend,
            min_object_pixels=args.min_object_pixels,
            depth_tolerance=args.depth_tolerance,
            points_stride=args.points_stride,
        ),
        depth_topics=() if args.no_depth else _depth_topics(args.depth_topic),
        image_topics=split_words(args.image_topics),
        copy=not args.no_copy,
        batch_size=args.batch_size,
    )
    manifest, plans, summary = prepare(args.bags, args.out, settings, args.overwrite, args.frames_per_range)
    bar = tqdm(total=sum(plan.frames for plan in plans), unit="frame", dynamic_ncols=True, disable=not plans)
    try:
        if plans and args.ray is not None:
            from zeroseg_ros.tools.label.ray_job import connect, label_on_ray

            seconds = connect(args.ray or None)
            LOGGER.info("Ray cluster ready in %.1f s", seconds)
            label_on_ray(
                plans, manifest, settings, summary, bar.update, args.workers, args.gpus_per_worker, args.cpus_per_worker
            )
        elif plans:
            labeller = Labeller(settings, progress=ProgressBar)
            label_locally(plans, manifest, settings, summary, bar.update, labeller)
    except KeyboardInterrupt:
        bar.close()
        print(
            f"zeroseg label: interrupted; {len(summary.finished)} bags finished, the unfinished one removed "
            f"(run again with the same --out to go on)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        if bar is not None:
            bar.close()
    for line in summary.lines():
        print(line, file=sys.stderr if summary.failed else sys.stdout)
    return 1 if summary.failed else 0

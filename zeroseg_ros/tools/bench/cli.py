"""``zeroseg bench`` (and ``python -m zeroseg_ros.tools.bench``): its options, and what it prints and writes.

What is measured and how: ``measure.py``; the table: ``report.py``; the plot: ``plot.py``; the end-to-end ROS
node measurement (``--ros``): ``ros_e2e.py``; the outputs beyond the mask (``--spatial``): ``spatial.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from zeroseg_ros.core.config import METHODS, PRECISIONS, SegmenterConfig, parse_frame_sizes
from zeroseg_ros.core.errors import ConfigError, ZerosegError
from zeroseg_ros.tools.bench import measure
from zeroseg_ros.tools.bench.measure import DEFAULT_QUERIES, BenchOptions, run_benchmark
from zeroseg_ros.tools.bench.plot import plot_latency_vs_size
from zeroseg_ros.tools.bench.report import format_row, format_table
from zeroseg_ros.tools.cli_args import (
    add_model_arguments,
    add_segmenter_arguments,
    model_config_from_args,
    segmenter_config_from_args,
)
from zeroseg_ros.tools.console import configure_logging

DEFAULT_SIZES = "640x480,1280x720"


def _split(text: str, allowed: Sequence[str] | None, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"--{what} is empty")
    if allowed is not None:
        unknown = [item for item in items if item not in allowed]
        if unknown:
            raise ConfigError(f"unknown {what}: {unknown}; choose from {list(allowed)}")
    return items


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="per-stage latency, fps and memory, against the naive baseline",
        description=measure.__doc__.split("\n\n")[1] if measure.__doc__ else None,
    )
    add_arguments(parser)
    parser.set_defaults(func=_run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="frame sizes WxH, comma separated (%(default)s)")
    parser.add_argument(
        "--methods", default=None, help=f"methods, comma separated (default: --method or {SegmenterConfig().method})"
    )
    parser.add_argument("--devices", default=None, help="devices, comma separated (default: --device)")
    parser.add_argument("--precisions", default=None, help="precisions, comma separated (default: --precision)")
    parser.add_argument("--queries", "-q", default=DEFAULT_QUERIES, help="labels (%(default)s)")
    parser.add_argument(
        "--query-counts",
        default=None,
        help="repeat each setting with the first N labels of --queries, comma separated, e.g. 1,8,171 with "
        "-q @coco-stuff (default: all of them once)",
    )
    parser.add_argument("--iterations", type=int, default=20, help="timed frames per setting (%(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames first (%(default)s)")
    parser.add_argument("--naive-iterations", type=int, default=5, help="timed naive frames (%(default)s)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument(
        "--engine",
        default=None,
        help="exported image encoder (.onnx, .engine) to run instead (--ros: the node's image_encoder_engine)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--no-onednn", action="store_true", help="CPU: PyTorch's own fp32 products, never oneDNN's (to compare)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--plot", type=Path, default=None, help="write a latency-vs-size PNG here")
    parser.add_argument("--ros", action="store_true", help="end-to-end ROS node measurement (bench_ros.py)")
    parser.add_argument(
        "--spatial",
        action="store_true",
        help="cost of objects, markers, points, heat map and smoothing, and flicker (spatial.py; first size)",
    )
    parser.add_argument("--rate", type=float, default=30.0, help="--ros: publish rate in Hz (%(default)s)")
    parser.add_argument("--duration", type=float, default=20.0, help="--ros: seconds of publishing (%(default)s)")
    parser.add_argument("--reliable", action="store_true", help="--ros: reliable image QoS (default best effort)")
    parser.add_argument(
        "--batches",
        default=None,
        help="batch sizes, e.g. 1,2,4,8: frames/s and latency of batched frames of several cameras (batches.py; "
        "first size)",
    )
    parser.add_argument(
        "--cameras",
        type=int,
        default=0,
        help="--ros: cameras of one node (cam0/image, ...), each published at --rate; 0: the node's own topics",
    )
    parser.add_argument("--max-batch", type=int, default=None, help="--ros: the node's max_batch (its default)")
    parser.add_argument(
        "--fastdds-profile",
        default=None,
        help="--ros: Fast DDS profile file of the node and the publisher (default config/fastdds_large_frames.xml; "
        "'none': Fast DDS's defaults, which lose best-effort frames over 512 KiB)",
    )
    add_model_arguments(parser)
    add_segmenter_arguments(parser)


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    if args.iterations < 1 or args.warmup < 0 or args.naive_iterations < 1:
        raise ConfigError("--iterations and --naive-iterations must be >= 1, --warmup >= 0")
    sizes = parse_frame_sizes(args.sizes)
    if not sizes:
        raise ConfigError("--sizes is empty")
    query_counts = None
    if args.query_counts is not None:
        try:
            query_counts = [int(count) for count in _split(args.query_counts, None, "query-counts")]
        except ValueError as error:
            raise ConfigError(f"--query-counts must be whole numbers, got {args.query_counts!r}") from error
    return BenchOptions(
        sizes=sizes,
        methods=_split(args.methods or args.method or SegmenterConfig().method, METHODS, "methods"),
        devices=_split(args.devices or args.device, None, "devices"),
        precisions=_split(args.precisions or args.precision, PRECISIONS, "precisions"),
        queries=args.queries,
        iterations=args.iterations,
        warmup=args.warmup,
        naive=not args.no_naive,
        naive_iterations=args.naive_iterations,
        engine=args.engine,
        onednn=False if args.no_onednn else None,
        query_counts=query_counts,
    )


def _run(args: argparse.Namespace) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.ros:
        from zeroseg_ros.tools.bench.ros_e2e import run_ros_benchmark

        if args.cameras < 0 or (args.max_batch is not None and args.max_batch < 1):
            raise ConfigError("--cameras must be >= 0 and --max-batch >= 1")
        report = run_ros_benchmark(args)
        print(json.dumps(report, indent=2))
    elif args.batches:
        from zeroseg_ros.tools.bench.batches import format_batches, run_batch_benchmark

        options = options_from_args(args)
        try:
            batch_sizes = [int(batch) for batch in _split(args.batches, None, "batches")]
        except ValueError as error:
            raise ConfigError(f"--batches must be whole numbers, got {args.batches!r}") from error
        if min(batch_sizes) < 1:
            raise ConfigError(f"--batches must be >= 1, got {args.batches!r}")
        report = run_batch_benchmark(
            model_config_from_args(args),
            segmenter_config_from_args(args),
            batch_sizes,
            options.sizes[0],
            options.iterations,
            options.warmup,
            options.queries,
        )
        print(format_batches(report))
    elif args.spatial:
        from zeroseg_ros.tools.bench.spatial import format_spatial, run_spatial_benchmark

        report = run_spatial_benchmark(
            model_config_from_args(args), segmenter_config_from_args(args), options_from_args(args)
        )
        print(format_spatial(report))
    else:
        options = options_from_args(args)
        report = run_benchmark(
            model_config_from_args(args),
            segmenter_config_from_args(args),
            options,
            on_row=lambda row: print(format_row(row), file=sys.stderr, flush=True),
        )
        print(format_table(report))
        if args.plot:
            plot_latency_vs_size(report, args.plot)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zeroseg_ros.tools.bench``: the same as ``zeroseg bench``."""
    parser = argparse.ArgumentParser(prog="python -m zeroseg_ros.tools.bench", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(verbose=False)
    try:
        return _run(args)
    except ZerosegError as error:
        print(f"zeroseg bench: error: {error}", file=sys.stderr)
        return 2

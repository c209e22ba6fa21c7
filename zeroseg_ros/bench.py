"""``zeroseg bench``: per-stage latency, throughput and memory of the pipeline, next to the naive baseline.

For every requested device, precision, method and frame size it runs the ``Segmenter`` twice on a synthetic
frame (warm-up iterations excluded):
  - profiled (``profile=True``, no CUDA graph): per-stage p50/p95, with a device synchronisation between
    stages, so the stages add up but overlap is lost;
  - unprofiled (``profile=False``, CUDA graphs on CUDA): the true latency and frames per second.
Overlay drawing and the conversion to sensor_msgs/Image (when the ROS message packages are importable) are
timed on the result. The naive baseline (``naive.py``) runs on the same frames, device and model input size,
and the speed-up is its p50 latency over ours. ``--ros`` runs the end-to-end node measurement instead
(``bench_ros.py``).

Stage names are the core's: ``preprocess`` = upload + resize + normalise; ``encode_image`` = dense image
encoder + patch-text cosine similarity; ``similarity`` = upsampling to the frame + softmax (+ best synonym);
``postprocess`` = argmax, threshold, per-label statistics and the one copy to the host.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from zeroseg_ros.cli import (
    add_model_arguments,
    add_segmenter_arguments,
    model_config_from_args,
    segmenter_config_from_args,
)
from zeroseg_ros.config import METHODS, PRECISIONS, ModelConfig, SegmenterConfig, parse_frame_sizes
from zeroseg_ros.errors import ConfigError, ZerosegError
from zeroseg_ros.model import resolve_device
from zeroseg_ros.overlay import draw_overlay

DEFAULT_SIZES = "640x480,1280x720"
DEFAULT_QUERIES = "person, car, bicycle, traffic cone, road, building, tree, sky"
CORE_STAGES = ("preprocess", "encode_image", "similarity", "postprocess")


# ---------------------------------------------------------------------------- measurement helpers
def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50 and p95 of a list of milliseconds (linear interpolation, as numpy does)."""
    if not samples_ms:
        raise ValueError("no samples")
    values = np.asarray(samples_ms, dtype=np.float64)
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}


def synthetic_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGB uint8 frame of smooth colour blobs (a plain noise frame is unlike a camera's)."""
    coarse = np.random.default_rng(seed).integers(0, 256, size=(max(height // 64, 2), max(width // 64, 2), 3))
    return cv2.resize(coarse.astype(np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)


class PeakRss:
    """Largest resident set size seen at the samples taken (psutil when installed, else the process peak)."""

    def __init__(self) -> None:
        try:
            import psutil

            self._process: Any = psutil.Process()
        except ImportError:
            self._process = None
        self.peak_mb = 0.0
        self.sample()

    def sample(self) -> None:
        if self._process is not None:
            rss = self._process.memory_info().rss / 2**20
        else:
            import resource

            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        self.peak_mb = max(self.peak_mb, rss)


MessageConverter = Callable[[np.ndarray, np.ndarray], None]


def message_converter() -> tuple[MessageConverter | None, str]:
    """A function that builds the node's output messages (mask mono8 + overlay rgb8), or why there is none."""
    try:
        from sensor_msgs.msg import Image

        from zeroseg_ros.image_codec import array_to_image
    except ImportError as error:
        return None, f"ROS message conversion not timed: {error}"

    def convert(label_map: np.ndarray, overlay: np.ndarray) -> None:
        array_to_image(label_map, "mono8", Image)
        array_to_image(overlay, "rgb8", Image)

    return convert, ""


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


# ---------------------------------------------------------------------------- runs
@dataclasses.dataclass
class BenchOptions:
    sizes: list[tuple[int, int]]
    methods: list[str]
    devices: list[str]
    precisions: list[str]
    queries: str = DEFAULT_QUERIES
    iterations: int = 20
    warmup: int = 3
    naive: bool = True
    naive_iterations: int = 5
    engine: str | None = None
    onednn: bool = True


def _timed_loop(
    run: Callable[[], Any], iterations: int, warmup: int, rss: PeakRss
) -> tuple[list[float], list[Any], float]:
    """Latencies (ms) and results of ``iterations`` calls after ``warmup`` untimed ones, and the wall time (s)."""
    for _ in range(warmup):
        run()
    latencies, results = [], []
    start = time.perf_counter()
    for _ in range(iterations):
        begin = time.perf_counter()
        results.append(run())
        latencies.append((time.perf_counter() - begin) * 1000.0)
        rss.sample()
    return latencies, results, time.perf_counter() - start


def bench_segmenter_setting(
    profiled: Any, fast: Any, frame: np.ndarray, options: BenchOptions, convert: MessageConverter | None
) -> dict[str, Any]:
    """One (device, precision, method, size) row: profiled stages, true throughput, overlay, memory.

    ``profiled`` and ``fast`` may be one segmenter (on the CPU, where stage timing costs nothing).
    """
    device = profiled.device
    rss = PeakRss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    profiled.profile = True
    _, results, _ = _timed_loop(lambda: profiled.segment(frame), options.iterations, options.warmup, rss)
    stages = {stage: percentiles([r.timings_ms[stage] for r in results]) for stage in CORE_STAGES}
    stages["core_total"] = percentiles([r.timings_ms["total"] for r in results])

    last = results[-1]
    overlay_ms, convert_ms = [], []
    for _ in range(options.iterations):
        begin = time.perf_counter()
        overlay = draw_overlay(frame, last.label_map, last.labels)
        overlay_ms.append((time.perf_counter() - begin) * 1000.0)
        if convert is not None:
            begin = time.perf_counter()
            convert(last.label_map, overlay)
            convert_ms.append((time.perf_counter() - begin) * 1000.0)
    stages["overlay"] = percentiles(overlay_ms)
    if convert_ms:
        stages["ros_message"] = percentiles(convert_ms)

    fast.profile = False
    latencies, _, wall = _timed_loop(lambda: fast.segment(frame), options.iterations, options.warmup, rss)
    row: dict[str, Any] = {
        "stages_ms": stages,
        "latency_ms": percentiles(latencies),
        "fps": options.iterations / wall,
        "host_rss_peak_mb": rss.peak_mb,
    }
    if device.type == "cuda":
        row["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def model_input_size(model_name: str, config: SegmenterConfig, engine: Any, height: int, width: int) -> tuple[int, int]:
    """The (height, width) the encoder sees for a ``height x width`` frame."""
    import open_clip

    from zeroseg_ros.preprocess import target_size

    if engine is not None and not config.slide_crop:
        return tuple(engine.input_size)  # type: ignore[return-value]
    patch = open_clip.get_model_config(model_name)["vision_cfg"]["patch_size"]
    return target_size(height, width, config.short_side, patch)


def bench_naive_setting(
    model_config: ModelConfig, config: SegmenterConfig, frame: np.ndarray, options: BenchOptions
) -> dict[str, Any]:
    from zeroseg_ros.naive import NaivePipeline

    rss = PeakRss()
    naive = NaivePipeline(model_config, config.replace(method="maskclip"), options.queries)
    latencies, results, wall = _timed_loop(
        lambda: naive.segment(frame), options.naive_iterations, min(options.warmup, 1), rss
    )
    stages = {stage: percentiles([r.timings_ms[stage] for r in results]) for stage in results[0].timings_ms}
    return {
        "stages_ms": stages,
        "latency_ms": percentiles(latencies),
        # Without the per-frame text encoding: the comparison for a pipeline that would cache text too.
        "latency_without_text_ms": percentiles([r.timings_ms["total"] - r.timings_ms["encode_text"] for r in results]),
        "fps": options.naive_iterations / wall,
        "host_rss_peak_mb": rss.peak_mb,
    }


def run_benchmark(model_config: ModelConfig, base: SegmenterConfig, options: BenchOptions) -> dict[str, Any]:
    """All settings; returns the JSON-ready report."""
    from zeroseg_ros.segmenter import Segmenter

    convert, convert_note = message_converter()
    report: dict[str, Any] = {
        "machine": machine_info(),
        "queries": options.queries,
        "templates": base.templates,
        "short_side": base.short_side,
        "model": model_config.name,
        "weights": "random" if model_config.random_init else model_config.checkpoint or model_config.pretrained,
        "iterations": options.iterations,
        "warmup": options.warmup,
        "rows": [],
        "naive": [],
        "notes": [convert_note] if convert_note else [],
    }
    for device_spec in options.devices:
        device = resolve_device(device_spec)
        engine = None
        if options.engine:
            from zeroseg_ros.engines import load_image_encoder

            engine = load_image_encoder(options.engine, device)
        # An engine computes one method: the segmenter must be built for it.
        device_base = base if engine is None else base.replace(method=engine.method)
        for precision in options.precisions:
            config = dataclasses.replace(model_config, device=str(device), precision=precision)
            # The profiled run records no CUDA graph (stage syncs cannot sit in one); on the CPU one serves both.
            profiled = Segmenter(config, device_base, cuda_graphs=False, image_encoder=engine, onednn=options.onednn)
            segmenters = [profiled]
            if device.type == "cuda":
                # ONNX Runtime runs on streams of its own and cannot be recorded in a CUDA graph; TensorRT can.
                graphs = engine is None or bool(getattr(engine, "cuda_graph_safe", False))
                segmenters.append(Segmenter(config, device_base, cuda_graphs=graphs, image_encoder=engine))
            fast = segmenters[-1]
            for segmenter in segmenters:
                segmenter.set_queries(options.queries)
            for method in [engine.method] if engine is not None else options.methods:
                for segmenter in segmenters:
                    segmenter.update_config(method=method)
                for height, width in options.sizes:
                    row = bench_segmenter_setting(profiled, fast, synthetic_frame(height, width), options, convert)
                    row.update(
                        device=str(device),
                        precision=precision,
                        method=method,
                        size=[width, height],
                        model_input=list(model_input_size(config.name, profiled.config, engine, height, width)),
                        onednn=profiled.uses_onednn,
                    )
                    if engine is not None:
                        row["engine"] = f"{options.engine} ({type(engine).__name__})"
                    report["rows"].append(row)
                    print(format_row(row), file=sys.stderr, flush=True)
            del profiled, fast, segmenters
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if options.naive:
        for device_spec in options.devices:
            config = dataclasses.replace(model_config, device=device_spec, precision="fp32")
            for height, width in options.sizes:
                naive = bench_naive_setting(config, base, synthetic_frame(height, width), options)
                naive.update(device=str(resolve_device(device_spec)), size=[width, height])
                report["naive"].append(naive)
        add_speedups(report)
    return report


def add_speedups(report: dict[str, Any]) -> None:
    """Each row's ``speedup_vs_naive``: the naive p50 latency on its device and size over the row's p50; and
    ``speedup_vs_naive_without_text``, the same without the naive per-frame text encoding."""
    naive = {(entry["device"], tuple(entry["size"])): entry for entry in report["naive"]}
    for row in report["rows"]:
        reference = naive.get((row["device"], tuple(row["size"])))
        if reference is not None:
            ours = row["latency_ms"]["p50"]
            row["naive_p50_ms"] = reference["latency_ms"]["p50"]
            row["speedup_vs_naive"] = reference["latency_ms"]["p50"] / ours
            row["speedup_vs_naive_without_text"] = reference["latency_without_text_ms"]["p50"] / ours


# ---------------------------------------------------------------------------- output
TABLE_COLUMNS = (*CORE_STAGES, "overlay", "ros_message")


def format_row(row: dict[str, Any]) -> str:
    width, height = row["size"]
    return (
        f"{row['device']:<7} {row['precision']:<5} {row['method']:<9} {width}x{height:<5} "
        f"-> {row['model_input'][1]}x{row['model_input'][0]}: p50 {row['latency_ms']['p50']:.1f} ms, "
        f"{row['fps']:.1f} fps"
    )


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width text table: stage p50/p95, latency, fps, memory, speed-up."""
    header = ["device", "prec", "method", "frame", "input"]
    header += [f"{stage} p50/p95" for stage in TABLE_COLUMNS]
    header += ["latency p50/p95", "fps", "rss MB", "gpu MB", "x naive (no text)"]
    lines = []
    for row in report["rows"]:
        stages = row["stages_ms"]
        cells = [
            row["device"],
            row["precision"],
            row["method"] + (" +engine" if "engine" in row else " +onednn" if row.get("onednn") else ""),
            "{}x{}".format(*row["size"]),
            f"{row['model_input'][1]}x{row['model_input'][0]}",
        ]
        cells += [f"{stages[s]['p50']:.1f}/{stages[s]['p95']:.1f}" if s in stages else "n/a" for s in TABLE_COLUMNS]
        cells += [
            f"{row['latency_ms']['p50']:.1f}/{row['latency_ms']['p95']:.1f}",
            f"{row['fps']:.1f}",
            f"{row['host_rss_peak_mb']:.0f}",
            f"{row['gpu_peak_mb']:.0f}" if "gpu_peak_mb" in row else "-",
            f"{row['speedup_vs_naive']:.1f} ({row['speedup_vs_naive_without_text']:.1f})"
            if "speedup_vs_naive" in row
            else "-",
        ]
        lines.append(cells)
    for entry in report["naive"]:
        stages = entry["stages_ms"]
        cells = [entry["device"], "fp32", "naive", "{}x{}".format(*entry["size"]), "same"]
        cells += [
            f"{stages['preprocess']['p50']:.1f}/{stages['preprocess']['p95']:.1f}",
            "{:.1f}/{:.1f} (+text {:.1f})".format(
                stages["encode_image"]["p50"], stages["encode_image"]["p95"], stages["encode_text"]["p50"]
            ),
            f"{stages['similarity']['p50']:.1f}/{stages['similarity']['p95']:.1f}",
            f"{stages['postprocess']['p50']:.1f}/{stages['postprocess']['p95']:.1f}",
            "-",
            "-",
            f"{entry['latency_ms']['p50']:.1f}/{entry['latency_ms']['p95']:.1f}",
            f"{entry['fps']:.2f}",
            f"{entry['host_rss_peak_mb']:.0f}",
            "-",
            "1.0",
        ]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) for cells in lines]
    out += [f"note: {note}" for note in report["notes"]]
    return "\n".join(out)


def plot_latency_vs_size(report: dict[str, Any], path: Path) -> None:
    """Latency p50 against input pixels per setting, and the naive baseline, as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[tuple[float, float]]] = {}
    for row in report["rows"]:
        engine = " ONNX Runtime" if "engine" in row else ""
        label = f"ours {row['method']} {row['device']} {row['precision']}{engine}"
        series.setdefault(label, []).append((row["size"][0] * row["size"][1] / 1e6, row["latency_ms"]["p50"]))
    for entry in report["naive"]:
        megapixels = entry["size"][0] * entry["size"][1] / 1e6
        series.setdefault(f"naive maskclip {entry['device']} fp32", []).append((megapixels, entry["latency_ms"]["p50"]))
        series.setdefault(f"naive maskclip {entry['device']} fp32, text not re-encoded", []).append(
            (megapixels, entry["latency_without_text_ms"]["p50"])
        )
    for label, points in series.items():
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axes.set_xlabel("frame size (megapixels)")
    axes.set_ylabel("latency p50 (ms)")
    axes.set_yscale("log")
    axes.set_title(f"{report['model']}, short side {report['short_side']}, {report['machine']['cpu']}", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ---------------------------------------------------------------------------- command line
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
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    add_arguments(parser)
    parser.set_defaults(func=_run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="frame sizes WxH, comma separated (%(default)s)")
    parser.add_argument("--methods", default=None, help="methods, comma separated (default: --method or naclip)")
    parser.add_argument("--devices", default=None, help="devices, comma separated (default: --device)")
    parser.add_argument("--precisions", default=None, help="precisions, comma separated (default: --precision)")
    parser.add_argument("--queries", "-q", default=DEFAULT_QUERIES, help="labels (%(default)s)")
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
        "--no-onednn", action="store_true", help="CPU: PyTorch's own fp32 products instead of oneDNN's (to compare)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--plot", type=Path, default=None, help="write a latency-vs-size PNG here")
    parser.add_argument("--ros", action="store_true", help="end-to-end ROS node measurement (bench_ros.py)")
    parser.add_argument("--rate", type=float, default=30.0, help="--ros: publish rate in Hz (%(default)s)")
    parser.add_argument("--duration", type=float, default=20.0, help="--ros: seconds of publishing (%(default)s)")
    parser.add_argument("--reliable", action="store_true", help="--ros: reliable image QoS (default best effort)")
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
        onednn=not args.no_onednn,
    )


def _run(args: argparse.Namespace) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.ros:
        from zeroseg_ros.bench_ros import run_ros_benchmark

        report = run_ros_benchmark(args)
        print(json.dumps(report, indent=2))
    else:
        options = options_from_args(args)
        report = run_benchmark(model_config_from_args(args), segmenter_config_from_args(args), options)
        print(format_table(report))
        if args.plot:
            plot_latency_vs_size(report, args.plot)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zeroseg_ros.bench``: the same as ``zeroseg bench``."""
    parser = argparse.ArgumentParser(prog="python -m zeroseg_ros.bench", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except ZerosegError as error:
        print(f"zeroseg bench: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``zeroseg bench``: per-stage latency, throughput and memory of the pipeline, next to the naive baseline.

For every requested device, precision, method, query count and frame size it runs the ``Segmenter`` twice on a synthetic
frame (warm-up iterations excluded):
  - profiled (``profile=True``, no CUDA graph): per-stage p50/p95, with a device synchronisation between
    stages, so the stages add up but overlap is lost;
  - unprofiled (``profile=False``, CUDA graphs on CUDA): the true latency and frames per second.
Overlay drawing and the conversion to sensor_msgs/Image (when the ROS message packages are importable) are
timed on the result. The naive baseline (``naive.py``) runs on the same frames, device and model input size,
and the speed-up is its p50 latency over ours. ``--ros`` runs the end-to-end node measurement instead
(``ros_e2e.py``).

Stage names are the core's: ``preprocess`` = upload + resize + normalise; ``encode_image`` = dense image
encoder + patch-text cosine similarity; ``similarity`` = labels and confidence at the frame's size
(``core/labels.py``); ``postprocess`` = threshold, per-label statistics and the one copy to the host.
``--query-counts 1,8,171`` repeats every setting with the first N labels of ``--queries`` (e.g. ``@coco-stuff``).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.core.model import resolve_device
from zeroseg_ros.core.overlay import draw_overlay
from zeroseg_ros.core.queries import parse_queries
from zeroseg_ros.tools.console import ProgressBar

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

        from zeroseg_ros.ros.image_codec import array_to_image
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
    onednn: bool | None = None  # None: the Segmenter times both ways and chooses
    query_counts: list[int] | None = None  # None: all the labels of ``queries``


def query_subsets(queries: str, counts: Sequence[int] | None) -> list[tuple[int, list[str]]]:
    """``(N, the first N labels of queries)`` for each count (all labels when ``counts`` is None), each label
    with its synonyms as ``Segmenter.set_queries`` takes them."""
    parsed = parse_queries(queries)
    labels = ["|".join(query.synonyms) for query in parsed]
    if counts is None:
        return [(len(labels), labels)]
    too_many = [count for count in counts if not 1 <= count <= len(labels)]
    if too_many:
        raise ConfigError(f"query counts {too_many} are not within the 1..{len(labels)} labels of the queries")
    return [(count, labels[:count]) for count in counts]


def _timed_loop(
    run: Callable[[], Any], iterations: int, warmup: int, rss: PeakRss
) -> tuple[list[float], list[Any], float]:
    """Latencies (ms) and results of ``iterations`` calls after ``warmup`` untimed ones, and the wall time (s)."""
    progress = ProgressBar("warming up", "frame")
    for done in range(1, warmup + 1):
        run()
        progress(done, warmup)
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
        overlay = draw_overlay(frame, last.label_map, last.labels, last.areas)
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


def bench_naive_setting(
    model_config: ModelConfig, config: SegmenterConfig, frame: np.ndarray, options: BenchOptions
) -> dict[str, Any]:
    from zeroseg_ros.tools.bench.naive import NaivePipeline

    rss = PeakRss()
    # The naive baseline scores the queries only: our rows pay for the background words, it does not.
    naive = NaivePipeline(model_config, config.replace(method="maskclip", background_words=()), options.queries)
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


def run_benchmark(
    model_config: ModelConfig,
    base: SegmenterConfig,
    options: BenchOptions,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """All settings; returns the JSON-ready report. ``on_row`` sees each row as soon as it is measured."""
    from zeroseg_ros.core.segmenter import Segmenter

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
            from zeroseg_ros.engines.runners import load_image_encoder

            engine = load_image_encoder(options.engine, device)
        # An engine computes one method: the segmenter must be built for it.
        device_base = base if engine is None else base.replace(method=engine.method)
        for precision in options.precisions:
            config = dataclasses.replace(model_config, device=str(device), precision=precision)
            # The profiled run records no CUDA graph (stage syncs cannot sit in one); on the CPU one serves both.
            profiled = Segmenter(
                config,
                device_base,
                cuda_graphs=False,
                image_encoder=engine,
                onednn=options.onednn,
                progress=ProgressBar,
            )
            segmenters = [profiled]
            if device.type == "cuda":
                # ONNX Runtime runs on streams of its own and cannot be recorded in a CUDA graph; TensorRT can.
                graphs = engine is None or bool(getattr(engine, "cuda_graph_safe", False))
                segmenters.append(
                    Segmenter(config, device_base, cuda_graphs=graphs, image_encoder=engine, progress=ProgressBar)
                )
            fast = segmenters[-1]
            for method in [engine.method] if engine is not None else options.methods:
                for segmenter in segmenters:
                    segmenter.update_config(method=method)
                for count, queries in query_subsets(options.queries, options.query_counts):
                    for segmenter in segmenters:
                        segmenter.set_queries(queries)
                    for height, width in options.sizes:
                        frame = synthetic_frame(height, width)
                        row = bench_segmenter_setting(profiled, fast, frame, options, convert)
                        row.update(
                            device=str(device),
                            precision=profiled.precision,  # what auto resolved to
                            method=method,
                            queries=count,
                            size=[width, height],
                            model_input=list(profiled.model_input_size(height, width)),
                            onednn=profiled.uses_onednn,
                        )
                        if engine is not None:
                            row["engine"] = f"{options.engine} ({type(engine).__name__})"
                        report["rows"].append(row)
                        if on_row is not None:
                            on_row(row)
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

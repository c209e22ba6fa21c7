"""``zeroseg bench --spatial``: what the outputs beyond the mask cost per frame, and how much temporal
smoothing steadies the labels.

On the first ``--sizes`` frame size, with the first method, precision and device:
  - the frame time: ``Segmenter.segment`` p50/p95 as the node runs it (no overlay), then again with
    ``heatmap_query`` set and with ``temporal_smoothing`` 0.5 (their cost is the difference);
  - each stage of ``ros/spatial.py`` on that frame's mask, without depth (objects in 2-D, their message, the
    markers) and with a synthetic 16UC1 depth image at the frame's resolution (a wall at 2 m, a box at 1.5 m,
    a tenth of it without depth): depth to metres, labelled points, the PointCloud2, objects in 3-D, their
    message, the markers. The same again on a busy synthetic mask (``BUSY_LABELS`` labels in many regions),
    because the mask of a random-weight network may be one label everywhere. Publishing (serialisation) is
    not included;
  - flicker: the fraction of pixels whose label changes between consecutive frames of a still scene with
    Gaussian sensor noise, for several ``temporal_smoothing`` weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.geometry import Intrinsics, depth_in_metres, labelled_points
from zeroseg_ros.core.objects import find_objects
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.core.temporal import flicker
from zeroseg_ros.tools.bench.measure import BenchOptions, machine_info, percentiles, synthetic_frame
from zeroseg_ros.tools.console import ProgressBar

BUSY_LABELS = 8
MIN_OBJECT_PIXELS = 100  # the node's default
POINTS_STRIDE = 2  # the node's default
NOISE_SIGMA = 8.0  # grey levels of sensor noise in the flicker frames
FLICKER_FRAMES = 12
SMOOTHING_WEIGHTS = (0.0, 0.5, 0.8)


def _time(run: Callable[[], Any], iterations: int, warmup: int) -> dict[str, float]:
    """Wall-clock p50/p95 and the p50 of the process's CPU time (all its threads), in ms. On a shared,
    busy machine the wall clock mostly measures the others; CPU time much less so."""
    for _ in range(warmup):
        run()
    wall, cpu = [], []
    for _ in range(iterations):
        begin, begin_cpu = time.perf_counter(), time.process_time()
        run()
        cpu.append((time.process_time() - begin_cpu) * 1000.0)
        wall.append((time.perf_counter() - begin) * 1000.0)
    return {**percentiles(wall), "cpu_p50": float(np.median(cpu))}


def synthetic_depth(height: int, width: int) -> tuple[np.ndarray, Intrinsics]:
    """16UC1 millimetres of a wall at 2 m with a box at 1.5 m, the top tenth without depth; and the pinhole
    intrinsics of a 60-degree-wide camera."""
    depth = np.full((height, width), 2000, dtype=np.uint16)
    depth[height // 4 : height * 3 // 4, width // 3 : width * 2 // 3] = 1500
    depth[: height // 10] = 0
    focal = width / (2 * np.tan(np.radians(30)))
    k = [focal, 0.0, (width - 1) / 2, 0.0, focal, (height - 1) / 2, 0.0, 0.0, 1.0]
    return depth, Intrinsics.from_k(k, width, height)


def busy_mask(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A label map of ``BUSY_LABELS`` labels in 60 overlapping rectangles on background, with speckle, and a
    random confidence."""
    rng = np.random.default_rng(seed)
    label_map = np.zeros((height, width), dtype=np.uint8)
    for _ in range(60):
        top, left = rng.integers(0, height - 20), rng.integers(0, width - 20)
        bottom, right = top + rng.integers(10, height // 3), left + rng.integers(10, width // 3)
        label_map[top:bottom, left:right] = rng.integers(1, BUSY_LABELS + 1)
    speckle = rng.random((height, width)) < 0.01
    label_map[speckle] = rng.integers(0, BUSY_LABELS + 1, int(speckle.sum()))
    return label_map, rng.random((height, width), dtype=np.float32)


def _spatial_stages(
    label_map: np.ndarray, confidence: np.ndarray, labels: tuple[str, ...], options: BenchOptions
) -> dict[str, Any]:
    height, width = label_map.shape
    raw, colour = synthetic_depth(height, width)
    depth_m = depth_in_metres(raw, "16UC1")
    intrinsics = colour.scaled(width, height)
    run = options.iterations, options.warmup
    regions_2d = find_objects(label_map, confidence, MIN_OBJECT_PIXELS)
    regions_3d = find_objects(label_map, confidence, MIN_OBJECT_PIXELS, depth_m, intrinsics, POINTS_STRIDE)
    points = labelled_points(label_map, confidence, depth_m, intrinsics, POINTS_STRIDE)
    stages: dict[str, dict[str, float]] = {
        "objects_2d": _time(lambda: find_objects(label_map, confidence, MIN_OBJECT_PIXELS), *run),
        "depth_to_metres": _time(lambda: depth_in_metres(raw, "16UC1"), *run),
        "points": _time(lambda: labelled_points(label_map, confidence, depth_m, intrinsics, POINTS_STRIDE), *run),
        "objects_3d": _time(
            lambda: find_objects(label_map, confidence, MIN_OBJECT_PIXELS, depth_m, intrinsics, POINTS_STRIDE), *run
        ),
    }
    notes = []
    try:
        from std_msgs.msg import Header

        from zeroseg_ros.ros.spatial import marker_array, objects_message, point_cloud
    except ImportError as error:
        notes.append(f"messages not built (ROS 2 message packages not importable: {error})")
    else:
        header = Header(frame_id="camera")
        stages["objects_msg_2d"] = _time(lambda: objects_message(header, regions_2d, labels, False), *run)
        stages["markers_msg_2d"] = _time(lambda: marker_array(header, regions_2d, labels), *run)
        stages["points_msg"] = _time(lambda: point_cloud(header, points), *run)
        stages["objects_msg_3d"] = _time(lambda: objects_message(header, regions_3d, labels, True), *run)
        stages["markers_msg_3d"] = _time(lambda: marker_array(header, regions_3d, labels), *run)
    without_depth = ("objects_2d", "objects_msg_2d", "markers_msg_2d")
    with_depth = ("depth_to_metres", "points", "points_msg", "objects_3d", "objects_msg_3d", "markers_msg_3d")
    return {
        "objects": len(regions_3d),
        "points": len(points.labels),
        "stages_ms": stages,
        **{
            f"{name}_{figure}_ms": sum(stages[s][figure] for s in names if s in stages)
            for name, names in (("without_depth", without_depth), ("with_depth", with_depth))
            for figure in ("p50", "cpu_p50")
        },
        "notes": notes,
    }


def run_spatial_benchmark(model_config: ModelConfig, base: SegmenterConfig, options: BenchOptions) -> dict[str, Any]:
    """See the module docstring; returns the JSON-ready report."""
    height, width = options.sizes[0]
    config = base.replace(method=options.methods[0])
    model = ModelConfig(**{**model_config.__dict__, "device": options.devices[0], "precision": options.precisions[0]})
    segmenter = Segmenter(model, config, onednn=options.onednn, profile=False, progress=ProgressBar)
    segmenter.set_queries(options.queries)
    labels = segmenter.labels
    frame = synthetic_frame(height, width)
    run = options.iterations, options.warmup
    frame_ms = {"plain": _time(lambda: segmenter.segment(frame), *run)}
    segmenter.update_config(heatmap_query=labels[0])
    frame_ms["heatmap"] = _time(lambda: segmenter.segment(frame), *run)
    segmenter.update_config(heatmap_query="", temporal_smoothing=0.5)
    frame_ms["temporal_smoothing_0.5"] = _time(lambda: segmenter.segment(frame), *run)
    segmenter.update_config(temporal_smoothing=0.0)
    result = segmenter.segment(frame)

    masks = {
        "segmenter": _spatial_stages(result.label_map, result.confidence, labels, options),
        "busy": _spatial_stages(
            *busy_mask(height, width), tuple(f"label {i}" for i in range(1, BUSY_LABELS + 1)), options
        ),
    }
    for entry in masks.values():
        for name in ("without_depth", "with_depth"):
            for figure in ("p50", "cpu_p50"):
                share = entry[f"{name}_{figure}_ms"] / frame_ms["plain"][figure]
                entry[f"{name}_{figure}_percent_of_frame"] = 100.0 * share

    rng = np.random.default_rng(0)
    noisy = [
        np.clip(frame + rng.normal(0.0, NOISE_SIGMA, frame.shape), 0, 255).astype(np.uint8)
        for _ in range(FLICKER_FRAMES)
    ]
    flickers = {}
    for weight in SMOOTHING_WEIGHTS:
        segmenter.update_config(temporal_smoothing=weight)
        flickers[str(weight)] = flicker([segmenter.segment(image).label_map for image in noisy])
    return {
        "machine": machine_info(),
        "model": model.name,
        "weights": "random" if model.random_init else model.checkpoint or model.pretrained,
        "method": config.method,
        "short_side": config.short_side,
        "queries": options.queries,
        "size": [width, height],
        "device": str(segmenter.device),
        "backend": segmenter.backend,
        "iterations": options.iterations,
        "frame_ms": frame_ms,
        "masks": masks,
        "flicker": {"noise_sigma": NOISE_SIGMA, "frames": FLICKER_FRAMES, "by_temporal_smoothing": flickers},
    }


def format_spatial(report: dict[str, Any]) -> str:
    """The report as Markdown tables: wall-clock p50 / p95 and CPU p50, in ms."""
    width, height = report["size"]
    lines = [
        f"{report['model']} ({report['weights']} weights), {report['method']}, short side {report['short_side']}, "
        f"{width}x{height}, {report['backend']} on {report['device']}, {report['iterations']} frames per figure",
        "",
        "| frame (segment) | wall p50 ms | wall p95 ms | CPU p50 ms |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {name} | {v['p50']:.1f} | {v['p95']:.1f} | {v['cpu_p50']:.1f} |" for name, v in report["frame_ms"].items()
    ]
    masks = report["masks"].values()
    lines += [
        "",
        "| stage (wall p50 / p95; CPU p50) | " + " | ".join(f"{name} mask" for name in report["masks"]) + " |",
    ]
    lines.append("| --- |" + " --- |" * len(masks))
    for stage in next(iter(masks))["stages_ms"]:
        figures = [m["stages_ms"][stage] for m in masks]
        cells = [f"{f['p50']:.2f} / {f['p95']:.2f}; {f['cpu_p50']:.2f}" for f in figures]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    for key, name in (("without_depth", "without depth"), ("with_depth", "with depth")):
        cells = [
            f"wall {m[f'{key}_p50_ms']:.2f} ms = {m[f'{key}_p50_percent_of_frame']:.1f} %; "
            f"**CPU {m[f'{key}_cpu_p50_ms']:.2f} ms = {m[f'{key}_cpu_p50_percent_of_frame']:.1f} %**"
            for m in masks
        ]
        lines.append(f"| total {name} (share of the frame) | " + " | ".join(cells) + " |")
    lines.append("| objects, points | " + " | ".join(f"{m['objects']}, {m['points']}" for m in masks) + " |")
    flicker_figures = report["flicker"]
    lines += [
        "",
        f"Flicker ({flicker_figures['frames']} frames, noise sigma {flicker_figures['noise_sigma']:g}): "
        + ", ".join(f"smoothing {w}: {100 * f:.2f} %" for w, f in flicker_figures["by_temporal_smoothing"].items()),
    ]
    return "\n".join(lines)

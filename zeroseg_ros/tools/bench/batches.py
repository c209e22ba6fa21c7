"""``zeroseg bench --batches 1,2,4,8``: what batching the frames of several cameras buys, in one process.

For each batch size B it segments B synthetic frames of the first ``--sizes`` size (each camera its own picture
and stream) with ``Segmenter.segment_batch``, ``--warmup`` untimed passes first (on CUDA they record the batch's
graph), then ``--iterations`` timed passes: frames per second (B frames per pass), the pass's latency p50/p95
(what each camera's frame waits for its result) and the speed-up in frames per second over single frames.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.core.segmenter import Segmenter
from zeroseg_ros.tools.bench.measure import DEFAULT_QUERIES, percentiles, synthetic_frame
from zeroseg_ros.tools.console import ProgressBar


def run_batch_benchmark(
    model: ModelConfig,
    config: SegmenterConfig,
    batch_sizes: Sequence[int],
    size: tuple[int, int],
    iterations: int,
    warmup: int,
    queries: str = DEFAULT_QUERIES,
) -> dict[str, Any]:
    """One row per batch size (see the module docstring); ``size`` is (height, width)."""
    segmenter = Segmenter(model, config, progress=ProgressBar)
    segmenter.set_queries(queries)
    height, width = size
    rows = []
    for batch in batch_sizes:
        frames = [synthetic_frame(height, width, seed=camera) for camera in range(batch)]
        streams = [f"cam{camera}" for camera in range(batch)]
        for _ in range(warmup):
            segmenter.segment_batch(frames, streams=streams)
        latencies_ms = []
        started = time.perf_counter()
        for _ in range(iterations):
            begun = time.perf_counter()
            segmenter.segment_batch(frames, streams=streams)
            latencies_ms.append((time.perf_counter() - begun) * 1000.0)
        elapsed = time.perf_counter() - started
        rows.append(
            {"batch": batch, "frames_per_s": batch * iterations / elapsed, "latency_ms": percentiles(latencies_ms)}
        )
    single = next((row["frames_per_s"] for row in rows if row["batch"] == 1), None)
    for row in rows:
        row["speedup_vs_single"] = row["frames_per_s"] / single if single else None
    return {
        "frame": [width, height],
        "device": str(segmenter.device),
        "backend": segmenter.backend,
        "method": segmenter.config.method,
        "short_side": segmenter.config.short_side,
        "iterations": iterations,
        "rows": rows,
    }


def format_batches(report: dict[str, Any]) -> str:
    width, height = report["frame"]
    lines = [
        f"batches of {width}x{height} frames, {report['method']}, short side {report['short_side']}, "
        f"{report['backend']} on {report['device']}",
        "batch  frames/s  x single  latency p50 ms  p95 ms",
    ]
    for row in report["rows"]:
        speedup = row["speedup_vs_single"]
        lines.append(
            f"{row['batch']:>5}  {row['frames_per_s']:>8.1f}  {speedup if speedup is not None else float('nan'):>8.2f}"
            f"  {row['latency_ms']['p50']:>14.1f}  {row['latency_ms']['p95']:>6.1f}"
        )
    return "\n".join(lines)

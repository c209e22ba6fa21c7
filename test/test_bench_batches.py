"""`zeroseg bench --batches`: frames of several cameras timed as batches (tools/bench/batches.py), on a tiny
random-weight model: one row per batch size, frames per second counted per frame, the speed-up over batch 1."""

from __future__ import annotations

import warnings

import pytest

from zeroseg_ros.core.config import ModelConfig, SegmenterConfig
from zeroseg_ros.tools.bench.batches import format_batches, run_batch_benchmark


def test_batch_benchmark_reports_each_batch_size() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = run_batch_benchmark(
            ModelConfig(name="ViT-S-16", random_init=True, device="cpu", precision="fp32"),
            SegmenterConfig(templates="none", short_side=32),
            batch_sizes=[1, 3],
            size=(48, 64),
            iterations=2,
            warmup=1,
            queries="cat, dog",
        )
    assert report["frame"] == [64, 48]
    assert [row["batch"] for row in report["rows"]] == [1, 3]
    single, triple = report["rows"]
    assert single["speedup_vs_single"] == pytest.approx(1.0)
    assert triple["speedup_vs_single"] == pytest.approx(triple["frames_per_s"] / single["frames_per_s"])
    # Three frames a pass: frames/s is three passes' worth of the pass rate.
    assert triple["frames_per_s"] == pytest.approx(3 * 1000.0 / triple["latency_ms"]["p50"], rel=1.0)
    assert "batch  frames/s" in format_batches(report)

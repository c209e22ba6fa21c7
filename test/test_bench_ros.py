"""`zeroseg bench --ros`: a brief end-to-end run through a real node reports latency, rate and drops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("sensor_msgs")

from zeroseg_ros.tools.bench import cli as bench_cli


@pytest.mark.ros
@pytest.mark.timeout(240)
def test_ros_benchmark_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROSEG_BENCH_LOGS", str(tmp_path))
    report_path = tmp_path / "ros.json"
    argv = ["--ros", "--random-weights", "--model", "ViT-S-32", "--device", "cpu", "--short-side", "64"]
    argv += ["--templates", "none", "--queries", "cat, dog", "--rate", "5", "--duration", "3", "--reliable"]
    assert bench_cli.main([*argv, "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["frame"] == [640, 480]
    assert report["frames_published"] >= 10
    # Reliable QoS: every frame reaches the node and gives a mask, or is counted as replaced by a newer one
    # (on a loaded CPU the node can be slower than 5 Hz); the priming frames are not counted.
    assert report["frames_lost_in_transport"] == 0
    assert report["masks_received"] + report["frames_dropped"] == report["frames_published"]
    assert report["frames_lost"] == report["frames_dropped"]
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] < 5000
    assert 0 < report["output_rate_hz"] <= 5.0 * 1.3
    assert report["method"] == "scclip" and report["device"] == "cpu"


@pytest.mark.ros
@pytest.mark.timeout(240)
def test_ros_benchmark_with_two_cameras_reports_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROSEG_BENCH_LOGS", str(tmp_path))
    report_path = tmp_path / "ros.json"
    argv = ["--ros", "--random-weights", "--model", "ViT-S-32", "--device", "cpu", "--short-side", "64"]
    argv += ["--templates", "none", "--queries", "cat, dog", "--rate", "5", "--duration", "3", "--reliable"]
    assert bench_cli.main([*argv, "--cameras", "2", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["cameras"] == 2 and report["frames_published"] >= 20
    cameras = report["per_camera"]
    assert set(cameras) == {"cam0", "cam1"}
    assert sum(camera["masks_received"] for camera in cameras.values()) == report["masks_received"]
    for camera in cameras.values():
        # Reliable QoS: every frame of the camera reaches the node (and one priming frame); a node slower than
        # 5 Hz on a busy machine replaces some of them, counted on the camera's own status.
        assert camera["frames_received_by_node"] >= report["frames_published"] // 2
        assert camera["masks_received"] >= 1 and camera["frames_dropped"] >= 0
        assert camera["share"] == pytest.approx(0.5, abs=0.2)
    assert report["node_rss_mib"] > 100 and report["node_peak_rss_mib"] >= report["node_rss_mib"]

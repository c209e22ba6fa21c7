"""The demo camera's frames and the main job `zeroseg run`: the whole chain with random weights writes overlay
and mask PNGs, and without weights it stops with the missing-weights message."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from zeroseg_ros.ros.demo_camera import DEMO_QUERIES, demo_frame

ROOT = Path(__file__).resolve().parents[1]


def test_demo_frames_are_deterministic_and_move() -> None:
    first, again, later = demo_frame(3, 120, 160), demo_frame(3, 120, 160), demo_frame(30, 120, 160)
    assert first.shape == (120, 160, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - later.astype(int)).sum() > 0


def test_demo_frames_show_the_demo_queries() -> None:
    frame = demo_frame(0)
    colours = {"red ball": (210, 30, 30), "blue box": (30, 60, 200), "yellow triangle": (235, 210, 40)}
    for name, colour in colours.items():
        assert name in DEMO_QUERIES
        assert (np.abs(frame.astype(int) - colour).sum(axis=2) < 10).sum() > 500, name
    assert frame[0, 0, 2] > frame[0, 0, 1] > frame[0, 0, 0]  # blue sky on top
    assert frame[-1].mean(axis=0)[1] > frame[-1].mean(axis=0)[0]  # green grass below


def run_main_job(tmp_path: Path, *arguments: str, timeout: float) -> subprocess.CompletedProcess[str]:
    # The project's parameters file, made cheap for a CPU test: a small network on small inputs.
    config = yaml.safe_load((ROOT / "config" / "zeroseg.yaml").read_text())
    config["/**/zeroseg"]["ros__parameters"].update({"short_side": 64, "templates": "none", "method": "clearclip"})
    config["/**/zeroseg_demo_camera"]["ros__parameters"].update({"width": 160, "height": 120})
    params_file = tmp_path / "zeroseg.yaml"
    params_file.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "zeroseg_ros.tools.cli", "run", "--params-file", str(params_file), *arguments]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


@pytest.mark.ros
@pytest.mark.timeout(200)
def test_main_job_with_random_weights_writes_overlays_and_masks(tmp_path: Path) -> None:
    pytest.importorskip("rclpy", reason="rclpy not installed: run scripts/setup.sh")
    import ros_helpers  # noqa: F401  (a DDS domain of its own, discovery on loopback)

    out = tmp_path / "out"
    result = run_main_job(
        tmp_path,
        "--random-weights",
        "--model",
        "ViT-S-16",
        "--device",
        "cpu",
        "--frames",
        "3",
        "--rate",
        "10",
        "--out",
        str(out),
        "--timeout",
        "150",
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("RANDOM WEIGHTS") >= 2, "the smoke test must say loudly that its masks mean nothing"
    # The node ran with the parameters file (method) and the command-line overrides (model).
    # precision auto (config/zeroseg.yaml): bf16 or fp32 as the CPU allows, named with its reason.
    assert re.search(
        r"model ViT-S-16 \(random initialisation\) on cpu \(PyTorch (fp32|bf16)[^)]*\), method clearclip; "
        r"precision (fp32|bf16) \(auto: ",
        output,
    )
    overlays = sorted(out.glob("overlay_*.png"))
    masks = sorted(out.glob("mask_*.png"))
    assert len(overlays) == 3 and len(masks) == 3
    for overlay_path, mask_path in zip(overlays, masks, strict=True):
        overlay = cv2.imread(str(overlay_path), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        assert overlay.shape == (120, 160, 3)
        assert mask.shape == (120, 160) and mask.dtype == np.uint8
        assert mask.max() <= len(DEMO_QUERIES.split(","))
    assert DEMO_QUERIES in (out / "labels.txt").read_text()


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_main_job_without_weights_stops_with_the_missing_weights_message(tmp_path: Path) -> None:
    pytest.importorskip("rclpy", reason="rclpy not installed: run scripts/setup.sh")
    import ros_helpers  # noqa: F401

    missing = tmp_path / "ViT-S-16.pt"
    result = run_main_job(
        tmp_path,
        "--model",
        "ViT-S-16",
        "--checkpoint",
        str(missing),
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "out"),
        timeout=100,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "No weights for CLIP model 'ViT-S-16'" in output and str(missing) in output
    assert "the zeroseg node stopped (exit code 2)" in output
    assert "Traceback" not in output
    assert not list((tmp_path / "out").glob("*.png"))

"""What `zeroseg` prints by default: its own messages and other libraries' warnings, each once; open_clip's INFO
lines only with --verbose."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest


def _segment(tmp_path, *extra: str) -> str:
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((48, 64, 3), dtype=np.uint8))
    command = [sys.executable, "-m", "zeroseg_ros.tools.cli", *extra, "segment", str(image), "-q", "cat, sofa"]
    command += ["--out", str(tmp_path / "out"), "--random-weights", "--model", "ViT-S-32", "--device", "cpu"]
    command += ["--templates", "none", "--short-side", "64"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.mark.timeout(180)
def test_default_output_is_our_messages_and_each_warning_once(tmp_path) -> None:
    output = _segment(tmp_path)
    assert output.count("RANDOM weights") == 1 and "No pretrained weights loaded" not in output, output
    assert "loading CLIP ViT-S-32" in output and "wrote 1 frame(s)" in output
    assert "Parsing model identifier" not in output and "creation process complete" not in output


@pytest.mark.timeout(180)
def test_verbose_shows_open_clip_s_own_lines(tmp_path) -> None:
    output = _segment(tmp_path, "--verbose")
    assert "Parsing model identifier" in output and "creation process complete" in output

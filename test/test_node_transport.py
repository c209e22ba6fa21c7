"""Camera frames larger than Fast DDS's default shared-memory segment (512 KiB), sent best effort from another
process as camera drivers do: with the shipped profile (config/fastdds_large_frames.xml) they reach the node;
without it they are lost in the middleware, and the node counts and explains the loss instead of staying
silent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ros_helpers import FAST_NODE_PARAMETERS, node_process, probe

from zeroseg_ros.ros.transport import fastdds_environment, uses_fastdds
from zeroseg_ros.tools.process_group import stop_process_group

pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(not uses_fastdds(os.environ), reason="the shared-memory segment is Fast DDS's"),
]

RATE_HZ, DURATION_S = 10.0, 2.0  # 640x480 rgb8 frames of 900 KiB


def publish_camera_frames(tmp_path: Path, profile: str | None, answers: str = "") -> int:
    """bench_ros's publisher process (640x480 rgb8, best effort) under ``profile``; the frames it sent. With
    ``answers`` (the node's mask topic) it first sends a priming frame until the node answers it: only then has the
    node's best-effort reader matched the publisher, which the publisher's own match does not show."""
    log_path = tmp_path / "publisher.log"
    with log_path.open("wb") as log:
        publisher = subprocess.Popen(
            [sys.executable, "-m", "zeroseg_ros.tools.bench.ros_e2e", "--publish", "/image", "--rate", str(RATE_HZ),
             "--duration", str(DURATION_S), "--answers", answers],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=fastdds_environment(os.environ, profile),
            start_new_session=True,
        )  # fmt: skip
        try:
            publisher.wait(timeout=60.0)
        finally:
            stop_process_group(publisher)
    words = log_path.read_text().split()
    assert publisher.returncode == 0 and words and words[-1].isdigit(), log_path.read_text()
    return int(words[-1])


@pytest.mark.timeout(180)
def test_large_best_effort_frames_reach_the_node_with_the_shipped_profile(tmp_path: Path) -> None:
    with node_process(tmp_path, {**FAST_NODE_PARAMETERS, "queries": "person, car"}) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        sent = publish_camera_frames(tmp_path, None, answers="/mask")
        test_probe.spin_until(lambda: bool(test_probe.received["mask"]), 15.0, "a mask")
        test_probe.wait_for_fresh_diagnostics()  # counts made after the last frame
        diagnostics = test_probe.diagnostics()
        assert int(diagnostics["frames_received"]) >= 0.8 * sent, diagnostics
        assert diagnostics["frames_lost_in_transport"] == "0"
        assert len(test_probe.received["mask"]) >= 1
        assert (test_probe.received["mask"][-1].height, test_probe.received["mask"][-1].width) == (480, 640)


@pytest.mark.timeout(180)
def test_frames_lost_in_transport_are_counted_and_explained(tmp_path: Path) -> None:
    with node_process(tmp_path, {**FAST_NODE_PARAMETERS, "queries": "person, car"}) as node, probe() as test_probe:
        test_probe.wait_for_node(node)
        sent = publish_camera_frames(tmp_path, "none")
        test_probe.spin_until(
            lambda: int(test_probe.diagnostics().get("frames_lost_in_transport", "0")) > 0, 10.0, "a lost-frame count"
        )
        diagnostics = test_probe.diagnostics()
        lost, received = int(diagnostics["frames_lost_in_transport"]), int(diagnostics["frames_received"])
        assert lost + received <= sent
        statuses = [s for a in test_probe.received["diagnostics"] for s in a.status if "frames lost" in s.message]
        assert statuses and statuses[0].level == b"\x01"  # WARN
        assert "lost in the middleware" in node.log() and "fastdds_large_frames.xml" in node.log()

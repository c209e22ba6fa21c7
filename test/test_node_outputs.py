"""Standard messages and bandwidth from a running node: vision_msgs/LabelInfo on label_info (through the test
build of vision_msgs), the colour mask, the compressed outputs; /diagnostics named after each node's full name,
with the hardware, going WARN then ERROR when the camera stops."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from legend_helpers import legend_order
from ros_helpers import (
    FAST_NODE_PARAMETERS,
    RELIABLE,
    TEST_INSTALL,
    interfaces_env,
    make_frame,
    node_process,
    probe,
    run_python,
    stamp_ns,
)

from zeroseg_ros.core.overlay import palette
from zeroseg_ros.ros.image_codec import image_to_array

pytestmark = pytest.mark.ros

# Another process with the test build of vision_msgs prints the latched LabelInfo as JSON.
LABEL_INFO_LISTENER = """
import json, sys, time
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from vision_msgs.msg import LabelInfo
rclpy.init()
node = rclpy.create_node("label_info_listener")
qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
received = []
node.create_subscription(LabelInfo, "label_info", received.append, qos)
deadline = time.monotonic() + 30
while not received and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
if not received:
    sys.exit("no LabelInfo received")
msg = received[-1]
print(json.dumps({"classes": [[c.class_id, c.class_name] for c in msg.class_map], "threshold": msg.threshold}))
node.destroy_node()
rclpy.try_shutdown()
"""


@pytest.mark.timeout(240)
def test_label_info_colour_mask_and_compressed_outputs(tmp_path: Path) -> None:
    from sensor_msgs.msg import CompressedImage

    assert (TEST_INSTALL / "share" / "vision_msgs").is_dir(), "run scripts/setup.sh (builds test/interfaces)"
    parameters = {
        **FAST_NODE_PARAMETERS,
        "queries": "cat, dog|puppy, tree",
        "probability_threshold": 0.25,
        "publish_mask_compressed": True,
        "publish_overlay_compressed": True,
    }
    env = interfaces_env()
    with node_process(tmp_path, parameters, env=env) as node, probe() as test_probe:
        for topic in ("mask/compressed", "overlay/compressed"):
            test_probe.node.create_subscription(
                CompressedImage, topic, lambda msg, topic=topic: test_probe.received[topic].append(msg), RELIABLE
            )
        test_probe.wait_for_node(node)
        result = run_python(LABEL_INFO_LISTENER, timeout=60.0, env=env)
        assert result.returncode == 0, result.stdout
        label_info = json.loads(result.stdout.strip().splitlines()[-1])
        assert label_info["classes"] == [[0, "background"], [1, "cat"], [2, "dog"], [3, "tree"]]
        assert label_info["threshold"] == pytest.approx(0.25)

        test_probe.spin_until(lambda: test_probe.node.count_publishers("mask/compressed") > 0, 10.0, "publishers")
        test_probe.spin_for(0.3)
        frame = test_probe.publish_frame(make_frame(48, 64, seed=3), "rgb8", stamp_ns=21, frame_id="cam")
        for topic in ("mask", "mask_color", "overlay", "mask/compressed", "overlay/compressed"):
            test_probe.spin_until(lambda topic=topic: test_probe.received[topic], 60.0, topic)
        mask = image_to_array(test_probe.received["mask"][-1])
        colour = test_probe.received["mask_color"][-1]
        assert colour.encoding == "rgb8" and (colour.header.frame_id, stamp_ns(colour.header)) == ("cam", 21)
        np.testing.assert_array_equal(image_to_array(colour), palette(3)[mask])

        png, jpeg = test_probe.received["mask/compressed"][-1], test_probe.received["overlay/compressed"][-1]
        assert (png.format, jpeg.format) == ("mono8; png compressed mono8", "rgb8; jpeg compressed bgr8")
        for msg in (png, jpeg):
            assert (msg.header.frame_id, stamp_ns(msg.header)) == (frame.header.frame_id, 21)
        decoded_mask = cv2.imdecode(np.frombuffer(png.data, np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(decoded_mask, mask)
        decoded_overlay = cv2.imdecode(np.frombuffer(jpeg.data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        overlay = image_to_array(test_probe.received["overlay"][-1]).astype(np.int16)
        assert decoded_overlay.shape == overlay.shape
        assert np.abs(decoded_overlay.astype(np.int16) - overlay).mean() < 12  # JPEG: close, not equal
        # The legend: swatches (a label's exact colour) of the labels in the mask, largest first, and no other.
        areas = np.bincount(mask.ravel(), minlength=4)[1:]
        by_area = [int(i) + 1 for i in np.argsort(-areas, kind="stable") if areas[i] > 0]
        shown = legend_order(overlay, palette(3), range(1, 4))
        assert shown and shown == by_area[: len(shown)]
        assert node.alive()


def statuses(test_probe) -> dict[str, object]:
    """The latest status of each zeroseg node seen on /diagnostics, by name."""
    latest = {}
    for array in test_probe.received["diagnostics"]:
        for status in array.status:
            if "zero-shot segmentation" in status.name:
                latest[status.name] = status
    return latest


@pytest.mark.timeout(300)
def test_two_instances_report_apart_and_a_stopped_camera_goes_warn_then_error(tmp_path: Path) -> None:
    from diagnostic_msgs.msg import DiagnosticStatus

    parameters = {**FAST_NODE_PARAMETERS, "queries": "cat, dog", "warmup_sizes": ""}
    front_name, rear_name = "/front/zeroseg: zero-shot segmentation", "/rear/zeroseg: zero-shot segmentation"
    with (
        node_process(tmp_path, parameters, name="front", ros_args=["-r", "__ns:=/front"]) as front,
        node_process(tmp_path, parameters, name="rear", ros_args=["-r", "__ns:=/rear"]) as rear,
        probe("/front") as test_probe,
    ):
        test_probe.wait_for_node(front)
        test_probe.spin_until(lambda: {front_name, rear_name} <= statuses(test_probe).keys(), 60.0, "both statuses")
        for status in statuses(test_probe).values():
            assert status.hardware_id.endswith("(cpu)") and len(status.hardware_id) > len(" (cpu)")

        for index in range(6):  # the camera runs: OK
            test_probe.publish_frame(make_frame(32, 32, seed=index), "rgb8", stamp_ns=index + 1)
            test_probe.spin_for(0.25)
        test_probe.spin_until(lambda: len(test_probe.received["mask"]) >= 3, 60.0, "masks")
        test_probe.spin_until(lambda: statuses(test_probe)[front_name].message == "segmenting", 10.0, "segmenting")
        assert statuses(test_probe)[front_name].level == DiagnosticStatus.OK

        # The camera stops: WARN after 3 periods of 0.5 s, ERROR after 10.
        test_probe.spin_until(lambda: statuses(test_probe)[front_name].level == DiagnosticStatus.WARN, 10.0, "WARN")
        assert statuses(test_probe)[front_name].message.startswith("no camera frame for")
        test_probe.spin_until(lambda: statuses(test_probe)[front_name].level == DiagnosticStatus.ERROR, 15.0, "ERROR")
        assert statuses(test_probe)[front_name].message == "no camera frame for 5 s"
        assert front.alive() and rear.alive()
